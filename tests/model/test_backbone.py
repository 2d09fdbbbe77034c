import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fedmedclip.model.backbone import (
    TINY_MODEL,
    BackboneSpec,
    WeightsUnavailableError,
    load_backbone,
    resolve_weights,
)


def test_tiny_backbone_is_frozen_and_in_eval_mode(tiny_backbone):
    assert not tiny_backbone.model.training
    assert not any(p.requires_grad for p in tiny_backbone.model.parameters())
    assert tiny_backbone.embed_dim == 64
    image = Image.new("RGB", (100, 80), (200, 120, 90))
    features = tiny_backbone.encode_pil([image, image])
    assert features.shape == (2, 64) and features.dtype == torch.float32
    assert torch.allclose(features[0], features[1])


def test_prototypes_are_normalised_and_average_templates(tiny_backbone):
    templates = ("a picture of a {class}", "a dermoscopy image of a {class}")
    protos = tiny_backbone.class_prototypes(["nevus", "melanoma"], templates)
    assert protos.shape == (2, 64)
    assert torch.allclose(protos.norm(dim=1), torch.ones(2), atol=1e-5)
    single = tiny_backbone.encode_texts(["a picture of a nevus", "a dermoscopy image of a nevus"])
    expected = torch.nn.functional.normalize(single.mean(dim=0), dim=0)
    assert torch.allclose(protos[0], expected, atol=1e-5)


def test_weights_from_a_file_and_a_directory_give_the_same_model(tiny_backbone, tmp_path: Path):
    state = {k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}
    weights_dir = tmp_path / "clip"
    weights_dir.mkdir()
    save_file(state, str(weights_dir / "open_clip_model.safetensors"))
    from_file = load_backbone(BackboneSpec(TINY_MODEL, str(weights_dir / "open_clip_model.safetensors"), seed=9))
    from_dir = load_backbone(BackboneSpec(TINY_MODEL, str(weights_dir), seed=9))
    assert from_file.weights_digest == from_dir.weights_digest == tiny_backbone.weights_digest


def test_random_init_digest_depends_on_seed(tiny_backbone):
    other = load_backbone(BackboneSpec(TINY_MODEL, None, seed=1))
    assert other.weights_digest != tiny_backbone.weights_digest
    assert other.cache_namespace != tiny_backbone.cache_namespace


def test_offline_pretrained_tag_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"HF_HUB_OFFLINE.*local weights file"):
        resolve_weights(BackboneSpec("ViT-B-32", "openai"))
    assert time.monotonic() - start < 10


def test_unknown_tag_lists_known_tags():
    with pytest.raises(WeightsUnavailableError, match=r"known tags for ViT-B-32: .*openai"):
        resolve_weights(BackboneSpec("ViT-B-32", "no-such-tag"))


def test_missing_weights_file_is_reported(tmp_path: Path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_weights(BackboneSpec(TINY_MODEL, str(tmp_path / "missing.safetensors")))


def test_weights_for_another_architecture_are_refused(tmp_path: Path):
    save_file({"visual.conv1.weight": torch.zeros(3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        load_backbone(BackboneSpec(TINY_MODEL, str(tmp_path / "bad.safetensors")))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_backbone(BackboneSpec("ViT-Nope", None))


def test_paper_preprocess_uses_imagenet_normalisation(tiny_spec):
    paper = load_backbone(BackboneSpec(tiny_spec.model, None, preprocess="paper"))
    pixels = paper.preprocess(Image.new("RGB", (30, 50), (255, 255, 255)))
    assert pixels.shape == (3, 64, 64)
    assert float(pixels[0, 0, 0]) == pytest.approx((1 - 0.485) / 0.229, abs=1e-4)
