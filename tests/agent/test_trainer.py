"""Trainer glue: cache reuse and invalidation, one round → a valid masked update, backbone checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.data.imagefolder import scan_imagefolder
from fedmedclip.data.sites import SiteEmbeddings
from fedmedclip.federation.codec import decode_update
from fedmedclip.federation.run_config import BackboneRef
from fedmedclip.model.backbone import Backbone, BackboneSpec, load_backbone
from fedmedclip.model.fam import FAM_TENSOR_NAMES, build_fam, fam_state
from hospital_agent.trainer import (
    IncompatibleRunError,
    backbone_spec_for,
    check_backbone,
    compatible_head,
    embed_site,
    run_templates,
    train_round,
)
from tests.agent.conftest import tiny_run


def noise_images(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for name, tint in (("calm", 60), ("busy", 190)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = np.clip(rng.normal(tint, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def embed(backbone: Backbone, root: Path, cache: EmbeddingCache | None) -> SiteEmbeddings:
    return embed_site(backbone, scan_imagefolder(root), cache, site="s", split_seed=0, batch_size=8, num_workers=0)


def test_cache_reuse_and_invalidation(tmp_path: Path, tiny_backbone: Backbone) -> None:
    root = noise_images(tmp_path / "data")
    uncached = embed(tiny_backbone, root, None)
    with EmbeddingCache(tmp_path / "cache") as cache:
        first = embed(tiny_backbone, root, cache)
        second = embed(tiny_backbone, root, cache)
        assert (first.computed, second.computed) == (12, 0)
        assert torch.equal(first.features, second.features)
        assert torch.allclose(first.features, uncached.features, atol=1e-6)

        Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "calm" / "0.png")  # an edited file: new content
        edited = embed(tiny_backbone, root, cache)
        assert edited.computed == 1

        other = load_backbone(BackboneSpec(model="fedmedclip-tiny", weights=None, seed=1), device="cpu")
        assert other.cache_namespace != tiny_backbone.cache_namespace
        assert embed(other, root, cache).computed == 12  # other weights: all new
        assert embed(tiny_backbone, root, cache).computed == 0  # both kept


def test_a_round_gives_a_valid_masked_update(tmp_path: Path, tiny_backbone: Backbone) -> None:
    site = embed_site(
        tiny_backbone,
        scan_imagefolder(noise_images(tmp_path / "data", per_class=10)),
        None,
        site="s",
        split_seed=0,
        batch_size=8,
        num_workers=0,
    )
    config = tiny_run()
    prototypes = tiny_backbone.class_prototypes(site.classes, run_templates(config))
    global_fam = fam_state(build_fam(config.embed_dim, seed=config.fam_seed))
    outcome = train_round(
        site,
        prototypes,
        tiny_backbone.logit_scale,
        config,
        round_number=1,
        global_fam=global_fam,
        head=None,
        residual=None,
        seed=0,
        device=torch.device("cpu"),
    )
    update = decode_update(outcome.payload, outcome.sha256)
    assert set(update.tensors) == set(FAM_TENSOR_NAMES) and update.codec == config.codec
    assert outcome.num_samples == len(site.split.train)
    assert set(outcome.residual) == set(FAM_TENSOR_NAMES)
    assert set(outcome.report) >= {"train_loss", "val_ensemble_acc", "val_head_acc", "val_macro_f1"}
    assert all(isinstance(value, float) for value in outcome.report.values())
    assert compatible_head(outcome.head, site.classes, site.classes, 64, 128) is not None
    assert compatible_head(outcome.head, site.classes, ["x", "y"], 64, 128) is None  # another label space
    assert compatible_head(outcome.head, site.classes, site.classes, 64, 256) is None  # another hidden size


def test_backbone_checks(tiny_backbone: Backbone) -> None:
    config = tiny_run()
    assert backbone_spec_for(config, None) == BackboneSpec("fedmedclip-tiny", "random", "clip", 0)
    local = BackboneSpec("fedmedclip-tiny", "/opt/models/tiny.safetensors", "clip", 0)
    assert backbone_spec_for(config, local).weights == "/opt/models/tiny.safetensors"
    with pytest.raises(IncompatibleRunError, match=r"run uses backbone fedmedclip-tiny .* configured for ViT-B-32"):
        backbone_spec_for(config, BackboneSpec("ViT-B-32", "openai"))
    check_backbone(tiny_backbone, config)
    pinned = tiny_run(backbone=BackboneRef(model="fedmedclip-tiny", weights="random", weights_digest="0" * 64))
    with pytest.raises(IncompatibleRunError, match="pins backbone weights digest"):
        check_backbone(tiny_backbone, pinned)
    with pytest.raises(IncompatibleRunError, match="FAM width is 32"):
        check_backbone(tiny_backbone, tiny_run(embed_dim=32))


def test_the_published_bundle_carries_a_temperature_fitted_on_validation(
    tmp_path: Path, tiny_backbone: Backbone
) -> None:
    from fedmedclip.bundle import read_current
    from fedmedclip.model.ensemble import calibrate_probs
    from fedmedclip.model.personalised import PersonalisedClassifier
    from fedmedclip.training.calibration import MIN_SAMPLES
    from hospital_agent.publish import publish_bundle
    from hospital_agent.trainer import evaluate, evaluate_and_calibrate
    from tests.bundle.factory import CLASSES, HEAD_HIDDEN, train_site

    result, prototypes = train_site(tiny_backbone)
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(60, tiny_backbone.embed_dim, generator=generator)
    labels = torch.arange(60) % len(CLASSES)
    args = (CLASSES, prototypes, tiny_backbone.logit_scale, result.fam_state, result.head_state, HEAD_HIDDEN)
    metrics, calibration = evaluate_and_calibrate(features, labels, *args)
    assert calibration is not None and calibration.samples == 60 and calibration.nll_after <= calibration.nll_before
    assert metrics == evaluate(features, labels, *args) and "ensemble_acc" in metrics
    assert evaluate_and_calibrate(features[: MIN_SAMPLES - 1], labels[: MIN_SAMPLES - 1], *args)[1] is None

    from fedmedclip.bundle import BackboneRecord

    publish_bundle(
        tmp_path,
        "s",
        backbone=BackboneRecord.of(tiny_backbone),
        classes=CLASSES,
        prompts=("a photo of {class}",),
        prototypes=prototypes,
        fam=result.fam_state,
        fam_version=2,
        head=result.head_state,
        head_hidden=HEAD_HIDDEN,
        metrics={},
        keep=2,
        calibration=calibration,
    )
    served = read_current(tmp_path, "s")
    assert served.calibration == calibration
    raw = PersonalisedClassifier(
        CLASSES, result.fam_state, prototypes, tiny_backbone.logit_scale, result.head_state, HEAD_HIDDEN
    )
    expected = calibrate_probs(raw.predict(features).probs, calibration.temperature)
    assert torch.allclose(served.classifier().predict(features).probs, expected, atol=1e-6)
