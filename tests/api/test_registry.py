"""The registry's hot swap: verified new versions replace the old one; broken ones are refused and logged."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from fedmedclip.bundle import CURRENT_POINTER, HEAD_FILE, BackboneRecord, write_bundle
from inference_api.metrics import ApiMetrics
from inference_api.registry import ModelRegistry
from tests.bundle.factory import CLASSES, HEAD_HIDDEN, publish, train_site


@pytest.fixture
def registry(tmp_path, tiny_backbone):
    publish(tmp_path, "site-a", tiny_backbone, version="v1")
    registry = ModelRegistry(tmp_path, tiny_backbone, ApiMetrics())
    registry.scan()
    return registry


def _served(registry: ModelRegistry) -> str | None:
    state = registry.get("site-a")
    assert state is not None
    return state.loaded.bundle.version if state.loaded else None


def _point_at(registry: ModelRegistry, version: str) -> None:
    """What a careless writer might do: switch the pointer without verifying."""
    (registry.root / "site-a" / CURRENT_POINTER).write_text(version + "\n")


def test_a_new_current_version_is_swapped_in_and_old_holders_keep_working(registry, tiny_backbone):
    old = registry.get("site-a").loaded
    publish(registry.root, "site-a", tiny_backbone, version="v2", seed=1, fam_version=2)
    registry.scan()
    assert _served(registry) == "v2" and registry.get("site-a").loaded.bundle.fam_version == 2
    features = torch.randn(2, tiny_backbone.embed_dim)
    assert old.classifier.predict(features).probs.shape == (2, len(CLASSES))  # a request mid-swap finishes


def test_a_corrupt_new_version_is_refused_logged_once_and_the_old_keeps_serving(registry, tiny_backbone, caplog):
    publish(registry.root, "site-a", tiny_backbone, version="v2", make_current=False)
    head = registry.root / "site-a" / "v2" / HEAD_FILE
    head.write_bytes(head.read_bytes()[:-8] + b"\0" * 8)
    _point_at(registry, "v2")
    with caplog.at_level(logging.ERROR, logger="inference_api.registry"):
        registry.scan()
        registry.scan()
    assert _served(registry) == "v1"
    state = registry.get("site-a")
    assert state.pointer == "v2" and "head.safetensors sha256" in (state.error or "")
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "still serving version=v1" in refusals[0].getMessage()
    assert 'fedmedclip_api_bundle_loads_total{outcome="refused"} 1.0' in registry.metrics.render().decode()

    publish(registry.root, "site-a", tiny_backbone, version="v3")  # the agent's next good round
    registry.scan()
    assert _served(registry) == "v3" and registry.get("site-a").error is None


def test_a_bundle_for_another_backbone_is_refused(registry, tiny_backbone):
    result, prototypes = train_site(tiny_backbone)
    other = dataclasses.replace(BackboneRecord.of(tiny_backbone), weights_digest="f" * 64)
    write_bundle(
        registry.root,
        "site-a",
        backbone=other,
        classes=CLASSES,
        prompts=["a picture of a {class}"],
        text_prototypes=prototypes,
        fam_state=result.fam_state,
        fam_version=9,
        head_state=result.head_state,
        head_hidden=HEAD_HIDDEN,
        version="v-other",
    )
    registry.scan()
    assert _served(registry) == "v1" and "different backbone" in registry.get("site-a").error


@pytest.mark.parametrize("pointer", ["v-missing", "../../etc/passwd"])
def test_a_pointer_to_nothing_is_refused(registry, pointer):
    _point_at(registry, pointer)
    registry.scan()
    assert _served(registry) == "v1" and registry.get("site-a").error


def test_a_new_site_appears_on_the_next_scan(registry, tiny_backbone):
    publish(registry.root, "site-new", tiny_backbone)
    assert registry.get("site-new") is None
    registry.scan()
    assert registry.get("site-new").loaded is not None and registry.ready


def test_an_unexpected_failure_refuses_only_that_version(registry, tiny_backbone, monkeypatch):
    publish(registry.root, "site-b", tiny_backbone)
    publish(registry.root, "site-a", tiny_backbone, version="v2")

    def broken(bundle, device="cpu"):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr("fedmedclip.bundle.Bundle.classifier", broken)
    registry.scan()  # must not raise: site-b is refused too, and site-a keeps v1
    assert _served(registry) == "v1" and "out of memory" in registry.get("site-a").error
    assert registry.get("site-b").loaded is None
