"""The embedding pipeline (data.embed_pipeline) gives the embeddings of the default embedding pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedmedclip.data.cache import EmbeddingCache, embed_images
from fedmedclip.data.embed_pipeline import EmbedPipeline, plan_preprocess
from fedmedclip.data.synth import SynthConfig, generate
from fedmedclip.experiment.perf.formats import dicom_bytes
from fedmedclip.model.backbone import Backbone


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """PNG, JPEG (small and large), DICOM and one corrupt file, interleaved."""
    root = tmp_path_factory.mktemp("mixed")
    generate(SynthConfig(sites=1, images_per_site=8, image_size=64, classes=("nevus", "melanoma")), root / "s")
    sources = sorted((root / "s").rglob("*.png"))
    out: list[Path] = []
    for index, source in enumerate(sources):
        image = Image.open(source).convert("RGB")
        kind = index % 4
        if kind == 0:
            path = root / f"{index}.png"
            image.save(path)
        elif kind == 1:
            path = root / f"{index}.jpg"
            image.save(path, quality=90)
        elif kind == 2:
            path = root / f"{index}.jpeg"
            image.resize((300, 220)).save(path, quality=85)
        else:
            path = root / f"{index}.dcm"
            path.write_bytes(dicom_bytes(np.asarray(image)))
        out.append(path)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out.insert(3, root / "broken.jpg")
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_cpu_route_gives_exactly_the_default_embeddings(
    tiny_backbone: Backbone, mixed: list[Path], workers: int
) -> None:
    expected = embed_images(tiny_backbone, mixed, cache=None, batch_size=3)
    with EmbedPipeline(tiny_backbone, num_workers=workers) as pipeline:
        assert not pipeline.device_jpeg  # no GPU: every format goes to the CPU decoders
        got = embed_images(tiny_backbone, mixed, cache=None, batch_size=3, decoder=pipeline)
        again = embed_images(tiny_backbone, mixed[::-1], cache=None, batch_size=4, decoder=pipeline)  # reused
    assert got.kept_indices == expected.kept_indices == [i for i in range(len(mixed)) if i != 3]
    assert torch.equal(got.features, expected.features)
    assert [(p, r) for p, r in got.failed] == [(p, r) for p, r in expected.failed] and len(got.failed) == 1
    # Other batches, so other kernel blockings in the encoder: equal to float rounding.
    torch.testing.assert_close(again.features, expected.features.flip(0), atol=1e-5, rtol=1e-5)


def test_pipeline_fills_the_cache_like_the_default_pass(
    tiny_backbone: Backbone, mixed: list[Path], tmp_path: Path
) -> None:
    with EmbeddingCache(tmp_path / "c") as cache, EmbedPipeline(tiny_backbone, num_workers=1) as pipeline:
        first = embed_images(tiny_backbone, mixed, cache, batch_size=4, decoder=pipeline)
        second = embed_images(tiny_backbone, mixed, cache, batch_size=4)
    assert first.computed == len(mixed) - 1 and second.computed == 0
    assert torch.equal(first.features, second.features)


def test_a_changed_file_is_reported_not_embedded(tiny_backbone: Backbone, mixed: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "moving.png"
    Image.open(mixed[0]).save(path)
    with EmbedPipeline(tiny_backbone, num_workers=0) as pipeline:
        batches = list(pipeline([(path, "0" * 64)], 4))
    assert batches[0].pixels is None and "changed" in batches[0].failures["0" * 64]


def test_exif_rotated_jpeg_skips_the_device_route(tiny_backbone: Backbone, mixed: list[Path], tmp_path: Path) -> None:
    """The CUDA JPEG decoder ignores EXIF orientation, so rotated photos go to the CPU workers."""
    rotated = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.open(mixed[0]).convert("RGB").resize((80, 48)).save(rotated, exif=exif.tobytes())
    expected = embed_images(tiny_backbone, [rotated], cache=None)
    with EmbedPipeline(tiny_backbone, num_workers=0, device_jpeg=True) as pipeline:
        got = embed_images(tiny_backbone, [rotated], cache=None, decoder=pipeline)
    assert torch.equal(got.features, expected.features)


def test_device_jpeg_route_is_close_to_pillow(tiny_backbone: Backbone, mixed: list[Path]) -> None:
    """decode_jpeg + tensor resize (what the GPU runs), here on the CPU: close to Pillow's pixels."""
    assert plan_preprocess(tiny_backbone.transform).device_jpeg_ok
    jpegs = [p for p in mixed if p.suffix in (".jpg", ".jpeg") and p.name != "broken.jpg"]
    expected = embed_images(tiny_backbone, jpegs, cache=None, batch_size=8)
    with EmbedPipeline(tiny_backbone, num_workers=0, device_jpeg=True) as pipeline:
        assert pipeline.device_jpeg
        got = embed_images(tiny_backbone, [*jpegs, mixed[0]], cache=None, batch_size=8, decoder=pipeline)
        pixels = next(iter(pipeline([(jpegs[1], _sha(jpegs[1]))], 8))).pixels
    reference = tiny_backbone.preprocess(Image.open(jpegs[1]).convert("RGB"))
    assert pixels is not None and pixels.shape[1:] == reference.shape
    # One grey level is 1/255/std ≈ 0.015 after normalisation; the resize kernels differ by about that.
    assert (pixels[0] - reference).abs().mean() < 0.02
    cosine = torch.nn.functional.cosine_similarity(got.features[: len(jpegs)], expected.features)
    assert cosine.min() > 0.99, cosine
    assert got.kept_indices == list(range(len(jpegs) + 1))  # the PNG went to the CPU route


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_route_matches_cpu_route(tiny_spec, mixed: list[Path]) -> None:  # type: ignore[no-untyped-def]
    from fedmedclip.model.backbone import load_backbone

    gpu = load_backbone(tiny_spec, device="cuda")
    cpu_side = embed_images(gpu, mixed, cache=None, batch_size=4)  # default DataLoader, CUDA encoder
    with EmbedPipeline(gpu, num_workers=2) as pipeline:
        assert pipeline.device_jpeg
        got = embed_images(gpu, mixed, cache=None, batch_size=4, decoder=pipeline)
    assert got.kept_indices == cpu_side.kept_indices
    cosine = torch.nn.functional.cosine_similarity(got.features, cpu_side.features)
    assert cosine.min() > 0.99, cosine


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
