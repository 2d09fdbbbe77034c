"""Fixtures for the inference API: real bundles from a real local round, keys, and an in-process app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedmedclip.model.backbone import Backbone, BackboneSpec
from fedmedclip.training.calibration import Calibration
from inference_api.app import create_app
from inference_api.keys import hash_key
from inference_api.settings import ApiKeyConfig, ApiSettings
from tests.bundle.factory import publish

SITE_B_CLASSES = ("normal", "pneumonia")
SITE_B_CALIBRATION = Calibration(
    temperature=1.7, samples=40, ece_before=0.21, ece_after=0.06, nll_before=0.9, nll_after=0.6
)
KEYS = {"a": "fmc_test-key-site-a", "b": "fmc_test-key-site-b", "all": "fmc_test-key-all-sites"}
MAX_IMAGES = 4
MAX_BYTES = 1024 * 1024


def key_configs() -> list[ApiKeyConfig]:
    return [
        ApiKeyConfig(name="clinic-a", sha256=hash_key(KEYS["a"]), sites=["site-a"]),
        ApiKeyConfig(name="clinic-b", sha256=hash_key(KEYS["b"]), sites=["site-b"]),
        ApiKeyConfig(name="it-admin", sha256=hash_key(KEYS["all"]), sites=["*"]),
    ]


def populate(root: Path, backbone: Backbone) -> None:
    """site-a (3 classes, uncalibrated), site-b (2 classes, another head, calibrated), site-empty (a folder,
    no bundle yet)."""
    publish(root, "site-a", backbone, version="v0001", fam_version=4)
    publish(
        root,
        "site-b",
        backbone,
        version="v0001",
        classes=SITE_B_CLASSES,
        seed=1,
        fam_version=4,
        calibration=SITE_B_CALIBRATION,
    )
    (root / "site-empty").mkdir()


def make_settings(root: Path, spec: BackboneSpec, **overrides: object) -> ApiSettings:
    values: dict[str, object] = {
        "bundle_root": root,
        "model": spec.model,
        "weights": "random",
        "seed": spec.seed,
        "device": "cpu",
        "api_keys": key_configs(),
        "max_images": MAX_IMAGES,
        "max_request_bytes": MAX_BYTES,
        "reload_interval_s": 3600,  # tests that need a rescan call registry.scan() themselves
    }
    values.update(overrides)
    return ApiSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Backbone) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    populate(root, tiny_backbone)
    return root


@pytest.fixture(scope="session")
def api_settings(bundle_root: Path, tiny_spec: BackboneSpec) -> ApiSettings:
    return make_settings(bundle_root, tiny_spec)


@pytest.fixture(scope="session")
def client(api_settings: ApiSettings, tiny_backbone: Backbone) -> Iterator[TestClient]:
    """One app for the read-only tests; bundles are never modified under it."""
    with TestClient(create_app(api_settings, backbone=tiny_backbone)) as test_client:
        yield test_client


def auth(key: str = "a") -> dict[str, str]:
    return {"X-API-Key": KEYS[key]}


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]
