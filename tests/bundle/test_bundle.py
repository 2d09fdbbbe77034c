"""The bundle format (docs/design.md §7): round trip, atomic `current`, digests, refusals."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from fedmedclip import bundle as bundles
from fedmedclip.bundle import (
    CURRENT_POINTER,
    FAM_FILE,
    HEAD_FILE,
    MANIFEST_FILE,
    PROTOTYPES_FILE,
    BundleError,
    check_compatible,
    current_version,
    list_sites,
    list_versions,
    prune_versions,
    read_bundle,
    read_current,
    set_current,
    write_bundle,
)
from fedmedclip.model.personalised import PersonalisedClassifier
from tests.bundle.factory import CLASSES, HEAD_HIDDEN, publish, train_site


def test_round_trip_keeps_every_tensor_and_predicts_like_the_trained_model(tmp_path, tiny_backbone):
    result, prototypes = train_site(tiny_backbone)
    written = write_bundle(
        tmp_path,
        "site-a",
        backbone=tiny_backbone,
        classes=CLASSES,
        prompts=["a picture of a {class}", "a dermoscopy image of a {class}"],
        text_prototypes=prototypes,
        fam_state=result.fam_state,
        fam_version=7,
        head_state=result.head_state,
        head_hidden=HEAD_HIDDEN,
        metrics={"val_acc": 0.5},
    )
    loaded = read_current(tmp_path, "site-a")
    assert loaded.version == written.version == current_version(tmp_path, "site-a")
    assert loaded.fam_version == 7 and loaded.classes == CLASSES and loaded.metrics == {"val_acc": 0.5}
    assert loaded.prompts == ("a picture of a {class}", "a dermoscopy image of a {class}")
    assert loaded.backbone.weights_digest == tiny_backbone.weights_digest
    assert all(torch.equal(loaded.fam_state[k], v) for k, v in result.fam_state.items())
    assert loaded.head_state is not None and set(loaded.head_state) == set(result.head_state)
    assert torch.equal(loaded.text_prototypes, prototypes)
    check_compatible(loaded, tiny_backbone)

    features = torch.randn(5, tiny_backbone.embed_dim)
    reference = PersonalisedClassifier(
        CLASSES, result.fam_state, prototypes, tiny_backbone.logit_scale, result.head_state, head_hidden=HEAD_HIDDEN
    ).predict(features)
    assert torch.allclose(loaded.classifier().predict(features).probs, reference.probs, atol=1e-6)


def test_layout_is_manifest_plus_safetensors_and_a_pointer_file(tmp_path, tiny_backbone):
    bundle = publish(tmp_path, "site-a", tiny_backbone, fam_version=3)
    folder = tmp_path / "site-a" / bundle.version
    assert sorted(os.listdir(folder)) == sorted([MANIFEST_FILE, FAM_FILE, HEAD_FILE, PROTOTYPES_FILE])
    assert (tmp_path / "site-a" / CURRENT_POINTER).read_text() == f"{bundle.version}\n"
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["site"] == "site-a" and manifest["fam"]["version"] == 3
    assert manifest["head"]["hidden"] == HEAD_HIDDEN
    assert {"model", "weights_digest", "preprocess"} <= set(manifest["backbone"])
    for name in (FAM_FILE, HEAD_FILE, PROTOTYPES_FILE):  # safetensors: 8-byte header length, then a JSON header
        head = (folder / name).read_bytes()
        assert head[8:9] == b"{"
    assert not [p for p in (tmp_path / "site-a").iterdir() if p.name.startswith(".")]  # no staging left


def test_current_moves_forward_rolls_back_and_versions_are_immutable(tmp_path, tiny_backbone):
    first = publish(tmp_path, "site-a", tiny_backbone, version="v0001", fam_version=1)
    second = publish(tmp_path, "site-a", tiny_backbone, version="v0002", fam_version=2, seed=1)
    staged = publish(tmp_path, "site-a", tiny_backbone, version="v0003", fam_version=3, make_current=False)
    assert list_versions(tmp_path, "site-a") == ["v0001", "v0002", "v0003"]
    assert current_version(tmp_path, "site-a") == second.version
    assert set_current(tmp_path, "site-a", first.version).version == "v0001"
    assert read_current(tmp_path, "site-a").fam_version == 1
    with pytest.raises(BundleError, match="immutable"):
        publish(tmp_path, "site-a", tiny_backbone, version=staged.version)
    assert list_sites(tmp_path) == ["site-a"]


def test_default_versions_sort_by_time(tmp_path, tiny_backbone):
    a = publish(tmp_path, "site-a", tiny_backbone, fam_version=9)
    b = publish(tmp_path, "site-a", tiny_backbone, fam_version=10)
    assert a.version.endswith("-fam9") and b.version.endswith("-fam10")
    assert list_versions(tmp_path, "site-a") == [a.version, b.version]


def test_a_site_without_head_is_zero_shot(tmp_path, tiny_backbone):
    bundle = publish(tmp_path, "unseen", tiny_backbone, with_head=False)
    assert not (tmp_path / "unseen" / bundle.version / HEAD_FILE).exists()
    loaded = read_current(tmp_path, "unseen")
    out = loaded.classifier().predict(torch.randn(2, tiny_backbone.embed_dim))
    assert not loaded.has_head and out.head is None and torch.equal(out.probs, out.zero_shot)


@pytest.mark.parametrize("name", [FAM_FILE, HEAD_FILE, PROTOTYPES_FILE])
def test_a_changed_byte_in_any_tensor_file_is_refused(tmp_path, tiny_backbone, name):
    bundle = publish(tmp_path, "site-a", tiny_backbone)
    path = tmp_path / "site-a" / bundle.version / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name} sha256 .* does not match"):
        read_current(tmp_path, "site-a")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / HEAD_FILE).unlink(), "head.safetensors is missing"),
        (lambda folder: (folder / MANIFEST_FILE).write_text("{not json"), "not valid JSON"),
        (lambda folder: _edit_manifest(folder, format_version=99), "format_version 99 is not supported"),
        (lambda folder: _edit_manifest(folder, classes=["only-one"]), "at least 2 distinct"),
        (lambda folder: _edit_manifest(folder, fam="seven"), "manifest.json is malformed: fam"),
        (lambda folder: _edit_manifest(folder, prompts=["no placeholder"]), "placeholder"),
    ],
    ids=["missing-file", "bad-json", "newer-format", "bad-classes", "bad-schema", "bad-prompt"],
)
def test_broken_bundles_are_refused_with_a_reason(tmp_path, tiny_backbone, damage, message):
    bundle = publish(tmp_path, "site-a", tiny_backbone)
    damage(tmp_path / "site-a" / bundle.version)
    with pytest.raises(BundleError, match=message):
        read_bundle(tmp_path / "site-a" / bundle.version)


def test_a_bundle_copied_into_another_sites_folder_is_refused(tmp_path, tiny_backbone):
    bundle = publish(tmp_path, "site-a", tiny_backbone)
    (tmp_path / "site-b").mkdir()
    os.rename(tmp_path / "site-a" / bundle.version, tmp_path / "site-b" / bundle.version)
    with pytest.raises(BundleError, match="manifest names site 'site-a'"):
        read_bundle(tmp_path / "site-b" / bundle.version)


def test_a_garbage_pointer_or_missing_bundle_is_a_clear_error(tmp_path, tiny_backbone):
    with pytest.raises(BundleError, match="no bundle has been published"):
        read_current(tmp_path, "site-a")
    (tmp_path / "site-a").mkdir()
    (tmp_path / "site-a" / CURRENT_POINTER).write_text("../../etc\n")
    with pytest.raises(BundleError, match="does not name a version"):
        read_current(tmp_path, "site-a")


def test_a_bundle_for_another_backbone_is_incompatible(tmp_path, tiny_backbone):
    bundle = publish(tmp_path, "site-a", tiny_backbone)
    other = dataclasses.replace(tiny_backbone, weights_digest="0" * 64)  # e.g. other weights under the same name
    with pytest.raises(BundleError, match="different backbone: weights digest"):
        check_compatible(bundle, other)


def test_write_refuses_bad_input_before_touching_the_disk(tmp_path, tiny_backbone):
    result, prototypes = train_site(tiny_backbone)
    good: dict[str, Any] = {
        "backbone": tiny_backbone,
        "classes": CLASSES,
        "prompts": ["a picture of a {class}"],
        "text_prototypes": prototypes,
        "fam_state": result.fam_state,
        "fam_version": 1,
        "head_state": result.head_state,
        "head_hidden": HEAD_HIDDEN,
    }
    nan_fam = {**result.fam_state, "m1.bias": torch.full_like(result.fam_state["m1.bias"], float("nan"))}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"fam_state": nan_fam}, "non-finite"),
        ({"text_prototypes": prototypes[:2]}, "prototypes have shape"),
        ({"head_hidden": HEAD_HIDDEN * 2}, "head does not fit"),
        ({"classes": ["a", "a", "b"]}, "distinct"),
        ({"version": "../escape"}, "invalid version name"),
        ({"metrics": {"loss": float("inf")}}, "finite"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            write_bundle(tmp_path, "site-a", **{**good, **change})
    with pytest.raises(ValueError, match="invalid site name"):
        write_bundle(tmp_path, "current", **good)
    assert not (tmp_path / "site-a").exists() or not list((tmp_path / "site-a").iterdir())


def test_a_failed_write_leaves_no_version_and_keeps_current(tmp_path, tiny_backbone, monkeypatch):
    first = publish(tmp_path, "site-a", tiny_backbone)
    real_write = bundles._write_file

    def failing(path: Path, data: bytes) -> str:
        if path.name == HEAD_FILE:
            raise OSError(28, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(bundles, "_write_file", failing)
    with pytest.raises(OSError, match="No space"):
        publish(tmp_path, "site-a", tiny_backbone, version="v-failed")
    assert list_versions(tmp_path, "site-a") == [first.version]
    assert current_version(tmp_path, "site-a") == first.version
    assert not [p for p in (tmp_path / "site-a").iterdir() if p.name.startswith(".")]


def test_prune_keeps_the_newest_and_the_current(tmp_path, tiny_backbone):
    for index in range(4):
        publish(tmp_path, "site-a", tiny_backbone, version=f"v{index}")
    set_current(tmp_path, "site-a", "v0")
    assert prune_versions(tmp_path, "site-a", keep=2) == ["v1"]
    assert list_versions(tmp_path, "site-a") == ["v0", "v2", "v3"]


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_the_manifest_records_the_privacy_of_the_fam_and_head_and_old_manifests_still_read(tmp_path, tiny_backbone):
    from fedmedclip.privacy.ledger import NO_GUARANTEE, PrivacyGuarantee, describe

    private = publish(tmp_path, "site-a", tiny_backbone, fam_privacy=PrivacyGuarantee(2.5, 1e-5))
    manifest = json.loads((tmp_path / "site-a" / private.version / MANIFEST_FILE).read_text())
    assert manifest["fam"]["privacy"] == {"epsilon": 2.5, "delta": 1e-5, "unit": "record"}
    assert manifest["head"]["privacy"] is None  # the head trains without noise and never leaves the site
    loaded = read_current(tmp_path, "site-a")
    assert loaded.fam_privacy == PrivacyGuarantee(2.5, 1e-5) and loaded.head_privacy is None
    assert describe(loaded.fam_privacy) == "trained with differential privacy, ε = 2.50, δ = 1.0e-05"
    # A manifest from before the ledger (no "privacy" keys) reads as "no formal guarantee".
    plain = publish(tmp_path, "site-b", tiny_backbone)
    path = tmp_path / "site-b" / plain.version / MANIFEST_FILE
    old = json.loads(path.read_text())
    del old["fam"]["privacy"], old["head"]["privacy"]
    path.write_text(json.dumps(old))
    assert describe(read_current(tmp_path, "site-b").fam_privacy) == NO_GUARANTEE
    old["fam"]["privacy"] = {"epsilon": -1.0, "delta": 1e-5}
    path.write_text(json.dumps(old))
    with pytest.raises(BundleError, match="invalid privacy record"):
        read_current(tmp_path, "site-b")


def test_calibration_round_trips_and_the_classifier_returns_calibrated_probabilities(tmp_path, tiny_backbone):
    from fedmedclip.model.ensemble import calibrate_probs
    from fedmedclip.training.calibration import Calibration

    fitted = Calibration(temperature=2.5, samples=40, ece_before=0.2, ece_after=0.05, nll_before=1.2, nll_after=0.9)
    plain = publish(tmp_path, "site-a", tiny_backbone, version="v1")
    calibrated = publish(tmp_path, "site-a", tiny_backbone, version="v2", calibration=fitted)
    manifest = json.loads((tmp_path / "site-a" / "v2" / MANIFEST_FILE).read_text())
    assert manifest["calibration"]["temperature"] == 2.5 and manifest["calibration"]["ece_before"] == 0.2
    assert read_bundle(tmp_path / "site-a" / "v2").calibration == fitted
    assert plain.calibration is None and plain.temperature == 1.0
    features = torch.randn(5, tiny_backbone.embed_dim)
    raw = plain.classifier().predict(features).probs
    served = calibrated.classifier().predict(features).probs
    assert torch.allclose(served, calibrate_probs(raw, 2.5), atol=1e-6)
    assert torch.equal(served.argmax(-1), raw.argmax(-1))


def test_a_bundle_written_before_calibration_existed_still_loads(tmp_path, tiny_backbone):
    publish(tmp_path, "site-a", tiny_backbone, version="v1")
    path = tmp_path / "site-a" / "v1" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    del manifest["calibration"]
    path.write_text(json.dumps(manifest))
    loaded = read_bundle(tmp_path / "site-a" / "v1")
    assert loaded.calibration is None and loaded.temperature == 1.0


@pytest.mark.parametrize("temperature", [-1.0, 0.0, float("nan"), float("inf"), 1e-40, 1e6])
def test_a_manifest_with_a_bad_temperature_is_refused(tmp_path, tiny_backbone, temperature):
    from fedmedclip.training.calibration import Calibration

    fitted = Calibration(temperature=2.0, samples=40, ece_before=0.2, ece_after=0.05, nll_before=1.2, nll_after=0.9)
    publish(tmp_path, "site-a", tiny_backbone, version="v1", calibration=fitted)
    path = tmp_path / "site-a" / "v1" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    # 1e-40 is positive, yet log p / T overflows float32: every served probability would be NaN (a 500).
    manifest["calibration"]["temperature"] = temperature
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="calibration is invalid"):
        read_bundle(tmp_path / "site-a" / "v1")
