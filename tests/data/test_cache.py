from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmedclip.data.cache import CACHE_FILE, EmbeddingCache, embed_images
from fedmedclip.data.images import load_image
from fedmedclip.data.synth import SynthConfig, generate
from fedmedclip.model.backbone import Backbone, BackboneSpec, load_backbone


@pytest.fixture(scope="module")
def synth_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(sites=1, images_per_site=12, image_size=48, classes=("nevus", "melanoma")), root)
    return sorted(root.rglob("*.png"))


@pytest.fixture
def paths(synth_paths: list[Path], tmp_path: Path) -> list[Path]:
    """A private copy per test, so tests may edit files."""
    copies = []
    for index, source in enumerate(synth_paths):
        copies.append(tmp_path / "images" / f"{index:02d}_{source.name}")
        copies[-1].parent.mkdir(exist_ok=True)
        shutil.copy(source, copies[-1])
    return copies


def _direct(backbone: Backbone, paths: list[Path]) -> torch.Tensor:
    return backbone.encode_images(torch.stack([backbone.preprocess(load_image(p)) for p in paths]))


def test_cached_equals_uncached_and_is_in_input_order(
    tiny_backbone: Backbone, paths: list[Path], tmp_path: Path
) -> None:
    uncached = embed_images(tiny_backbone, paths, cache=None, batch_size=5)
    with EmbeddingCache(tmp_path / "cache") as cache:
        first = embed_images(tiny_backbone, paths, cache, batch_size=4)
        second = embed_images(tiny_backbone, paths, cache, batch_size=4)

    assert uncached.features.shape == (12, tiny_backbone.embed_dim) and uncached.features.dtype == torch.float32
    assert uncached.kept_indices == list(range(12)) and not uncached.failed
    assert torch.allclose(first.features, uncached.features, rtol=1e-5, atol=1e-6)
    assert torch.equal(second.features, first.features)  # float32 stored exactly
    # Rows follow the input order, whatever order or batching the pass used internally.
    assert torch.allclose(second.features, _direct(tiny_backbone, paths), rtol=1e-5, atol=1e-6)
    assert (first.computed, first.reused) == (12, 0)
    assert (second.computed, second.reused) == (0, 12)


def test_editing_one_file_recomputes_exactly_that_one(
    tiny_backbone: Backbone, paths: list[Path], tmp_path: Path
) -> None:
    with EmbeddingCache(tmp_path / "cache") as cache:
        before = embed_images(tiny_backbone, paths, cache)
        load_image(paths[3]).rotate(90).save(paths[3])
        after = embed_images(tiny_backbone, paths, cache)
        assert cache.count(tiny_backbone.cache_namespace) == 13

    assert (after.computed, after.reused) == (1, 11)
    changed = [i for i in range(12) if not torch.equal(before.features[i], after.features[i])]
    assert changed == [3]
    assert torch.allclose(after.features[3], _direct(tiny_backbone, [paths[3]])[0], rtol=1e-5, atol=1e-6)


def test_other_preprocessing_or_weights_do_not_reuse(
    tiny_backbone: Backbone, tiny_spec: BackboneSpec, paths: list[Path], tmp_path: Path
) -> None:
    with EmbeddingCache(tmp_path / "cache") as cache:
        embed_images(tiny_backbone, paths, cache)
        for other in (replace(tiny_spec, preprocess="paper"), replace(tiny_spec, seed=1)):
            backbone = load_backbone(other, device="cpu")
            assert backbone.cache_namespace != tiny_backbone.cache_namespace
            result = embed_images(backbone, paths, cache)
            assert (result.computed, result.reused) == (12, 0)
            assert torch.allclose(result.features, _direct(backbone, paths), rtol=1e-5, atol=1e-6)
        assert cache.count() == 36
        assert cache.namespaces()[tiny_backbone.cache_namespace] == 12


def test_broken_and_missing_files_are_reported_and_skipped(
    tiny_backbone: Backbone, paths: list[Path], tmp_path: Path
) -> None:
    paths[2].write_bytes(paths[2].read_bytes()[:100])  # truncated PNG
    (tmp_path / "notes.png").write_text("not an image")
    inputs = [*paths[:6], tmp_path / "notes.png", tmp_path / "deleted.png", *paths[6:]]

    with EmbeddingCache(tmp_path / "cache") as cache:
        result = embed_images(tiny_backbone, inputs, cache, batch_size=4)
        assert cache.count() == 11  # nothing cached for the failures

    reasons = {path.name: reason for path, reason in result.failed}
    assert list(reasons) == [paths[2].name, "notes.png", "deleted.png"]  # input order
    assert "not a recognised image format" in reasons["notes.png"]
    assert "unreadable" in reasons["deleted.png"]
    assert reasons[paths[2].name]
    good = [i for i in range(len(inputs)) if i not in (2, 6, 7)]
    assert result.kept_indices == good
    assert torch.allclose(result.features, _direct(tiny_backbone, [inputs[i] for i in good]), rtol=1e-5, atol=1e-6)


def test_cache_survives_reopening(tiny_backbone: Backbone, paths: list[Path], tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "cache") as cache:
        first = embed_images(tiny_backbone, paths, cache)
    assert (tmp_path / "cache" / CACHE_FILE).is_file()

    with EmbeddingCache(tmp_path / "cache") as reopened:
        assert reopened.count(tiny_backbone.cache_namespace) == 12
        assert reopened.size_bytes() > 12 * tiny_backbone.embed_dim * 4
        again = embed_images(tiny_backbone, paths, reopened)
    assert (again.computed, again.reused) == (0, 12)
    assert torch.equal(again.features, first.features)


def test_duplicate_files_are_encoded_once(tiny_backbone: Backbone, paths: list[Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy_of_0.png"
    shutil.copy(paths[0], copy)
    with EmbeddingCache(tmp_path / "cache") as cache:
        result = embed_images(tiny_backbone, [*paths, copy], cache)
        assert cache.count() == 12
    assert (result.computed, result.reused) == (12, 1)
    assert torch.equal(result.features[12], result.features[0])


def test_worker_processes_give_the_same_rows(tiny_backbone: Backbone, paths: list[Path]) -> None:
    paths[5].write_bytes(b"broken")
    seen: list[tuple[int, int]] = []
    serial = embed_images(tiny_backbone, paths, cache=None, batch_size=4)
    parallel = embed_images(tiny_backbone, paths, None, batch_size=4, num_workers=2, progress=lambda *p: seen.append(p))
    assert parallel.kept_indices == serial.kept_indices == [i for i in range(12) if i != 5]
    assert torch.allclose(parallel.features, serial.features, rtol=1e-5, atol=1e-6)
    assert [path for path, _ in parallel.failed] == [paths[5]]
    assert seen[-1] == (12, 12)


class _FirstRowOverflows:
    """A backbone whose fp16 encode overflows for the first image of every batch."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.cache_namespace, self.embed_dim, self.device = "overflowing", backbone.embed_dim, backbone.device
        self.preprocess = backbone.preprocess

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.backbone.encode_images(pixels).clone()
        features[0, 0] = float("inf")
        return features


def test_non_finite_embeddings_are_reported_not_cached(
    tiny_backbone: Backbone, paths: list[Path], tmp_path: Path
) -> None:
    with EmbeddingCache(tmp_path / "cache") as cache:
        result = embed_images(_FirstRowOverflows(tiny_backbone), paths, cache, batch_size=4)
        assert cache.count() == 9
    assert [path for path, _ in result.failed] == [paths[0], paths[4], paths[8]]
    assert all("non-finite" in reason for _, reason in result.failed)
    assert (result.computed, result.reused) == (9, 0)
    assert torch.isfinite(result.features).all()


def test_empty_input_gives_an_empty_matrix(tiny_backbone: Backbone) -> None:
    result = embed_images(tiny_backbone, [], cache=None)
    assert result.features.shape == (0, tiny_backbone.embed_dim)
    assert (result.computed, result.reused, result.failed) == (0, 0, [])


def test_store_roundtrip_and_refusals(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    vectors: dict[str, np.ndarray] = {"aa": np.arange(4, dtype=np.float32), "bb": np.ones(4, dtype=np.float64)}
    assert cache.put_many("ns", vectors) == 2
    got = cache.get_many("ns", ["bb", "aa", "zz"])
    assert set(got) == {"aa", "bb"}
    assert got["bb"].dtype == np.float32 and np.array_equal(got["aa"], vectors["aa"])
    assert cache.get_many("other", ["aa"]) == {}
    with pytest.raises(ValueError, match="non-finite"):
        cache.put_many("ns", {"cc": np.array([1.0, np.nan])})
    with pytest.raises(ValueError, match="vector"):
        cache.put_many("ns", [("dd", np.zeros((2, 2)))])
    assert cache.count("ns") == 2  # a refused batch stores nothing
    cache.close()
    with pytest.raises(RuntimeError, match="closed"):
        cache.count()
