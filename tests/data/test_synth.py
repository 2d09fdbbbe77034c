from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedmedclip.data.imagefolder import scan_imagefolder
from fedmedclip.data.synth import HOLDOUT_SITE, MANIFEST, SynthConfig, generate, read_summary

SMALL: dict[str, Any] = {"sites": 2, "images_per_site": 24, "image_size": 48}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _mean_colour(folder: Path, centre: bool = False) -> np.ndarray:
    """Mean RGB over the images under a folder; ``centre``: only the middle quarter, where the lesion is."""
    pixels = [np.asarray(Image.open(p), dtype=float) for p in sorted(folder.rglob("*.png"))]
    if centre:
        pixels = [
            p[p.shape[0] * 3 // 8 : p.shape[0] * 5 // 8, p.shape[1] * 3 // 8 : p.shape[1] * 5 // 8] for p in pixels
        ]
    return np.mean([p.mean(axis=(0, 1)) for p in pixels], axis=0)


def test_writes_the_imagefolder_layout_and_manifest(tmp_path: Path) -> None:
    config = SynthConfig(**SMALL, seed=1)
    seen: list[tuple[int, int]] = []
    summary = generate(config, tmp_path / "synth", progress=lambda done, total: seen.append((done, total)))

    assert list(summary.counts) == ["site-1", "site-2"]
    for site, counts in summary.counts.items():
        found = scan_imagefolder(tmp_path / "synth" / site)
        assert found.classes == sorted(config.classes)
        assert found.class_counts() == {name: counts[name] for name in found.classes}
        assert sum(counts.values()) == 24 and min(counts.values()) >= 2
        assert not found.skipped
    first = tmp_path / "synth" / "site-1" / "nevus" / "nevus_0000.png"
    with Image.open(first) as image:
        assert image.size == (48, 48) and image.mode == "RGB"
    assert seen[-1] == (48, 48) and len(seen) == 48

    manifest = json.loads((tmp_path / "synth" / MANIFEST).read_text())
    assert manifest["complete"] is True
    assert manifest["sites"] == summary.counts
    assert manifest["config"]["classes"] == list(config.classes)
    again = read_summary(tmp_path / "synth")
    assert again.counts == summary.counts and again.config == config
    assert list(again.counts["site-1"]) == list(config.classes)  # label order survives the round trip


def test_same_config_gives_byte_identical_files(tmp_path: Path) -> None:
    generate(SynthConfig(**SMALL), tmp_path / "a")
    generate(SynthConfig(**SMALL), tmp_path / "b")
    generate(SynthConfig(**SMALL, seed=5), tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert (tmp_path / "a" / MANIFEST).read_bytes() == (tmp_path / "b" / MANIFEST).read_bytes()
    shared = set(a) & set(c)
    assert shared and all(a[name] != c[name] for name in shared)


def test_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "patients.csv").write_text("id\n1\n")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(SynthConfig(**SMALL), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["patients.csv"]


def test_regenerates_over_its_own_output(tmp_path: Path) -> None:
    generate(SynthConfig(**{**SMALL, "sites": 3}), tmp_path)
    summary = generate(SynthConfig(**SMALL), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site-1", "site-2", MANIFEST]
    assert len(_files(tmp_path)) == summary.total_images == 48


def test_unfinished_generation_is_not_read_as_a_dataset(tmp_path: Path) -> None:
    generate(SynthConfig(**SMALL), tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ValueError, match="unfinished"):
        read_summary(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sites": 0}, "sites"),
        ({"classes": ("only",)}, "at least 2 classes"),
        ({"classes": ("a", "a")}, "repeat"),
        ({"classes": ("a", "b/c")}, "folder name"),
        ({"images_per_site": 7}, "2 per class"),
        ({"image_size": 8}, "image_size"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"label_skew": -1.0}, "label_skew"),
        ({"label_skew": math.nan}, "label_skew"),
        ({"site_shift": -0.1}, "site_shift"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_configs_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthConfig(**change)


def test_label_skew_extremes(tmp_path: Path) -> None:
    balanced = generate(SynthConfig(**SMALL, label_skew=math.inf), tmp_path / "flat")
    assert all(set(counts.values()) == {6} for counts in balanced.counts.values())
    skewed = generate(SynthConfig(**SMALL, label_skew=0.0), tmp_path / "skew")
    for counts in skewed.counts.values():  # one class takes all it can, the others keep the minimum of 2
        assert sorted(counts.values()) == [2, 2, 2, 18]
    assert read_summary(tmp_path / "flat").config.label_skew == math.inf


def test_holdout_site_is_balanced_and_differently_shifted(tmp_path: Path) -> None:
    config = SynthConfig(**SMALL, holdout_site=True, label_skew=0.3)
    summary = generate(config, tmp_path)
    assert list(summary.counts) == ["site-1", "site-2", HOLDOUT_SITE]
    assert summary.training_sites == ["site-1", "site-2"]
    assert set(summary.counts[HOLDOUT_SITE].values()) == {6}


def test_difficulty_pulls_classes_together(tmp_path: Path) -> None:
    # No site shift, balanced classes: lesion colours differ between classes only through their looks.
    def class_spread(difficulty: float) -> float:
        config = SynthConfig(sites=1, images_per_site=48, image_size=32, label_skew=math.inf, site_shift=0.0,
                             difficulty=difficulty)  # fmt: skip
        out = tmp_path / f"d{difficulty}"
        generate(config, out)
        means = np.array([_mean_colour(out / "site-1" / name, centre=True) for name in config.classes])
        return float(np.linalg.norm(means - means.mean(axis=0), axis=1).mean())

    easy, hard = class_spread(0.0), class_spread(1.0)
    assert easy > 3 * hard


def test_site_shift_makes_sites_look_different(tmp_path: Path) -> None:
    def site_gap(shift: float) -> float:
        config = SynthConfig(sites=3, images_per_site=16, image_size=32, label_skew=math.inf, site_shift=shift)
        generate(config, tmp_path / f"s{shift}")
        means = [_mean_colour(tmp_path / f"s{shift}" / site) for site in config.site_names]
        return float(np.ptp(np.array(means), axis=0).max())

    assert site_gap(1.0) > 3 * site_gap(0.0)


def test_unknown_class_names_get_distinct_looks(tmp_path: Path) -> None:
    config = SynthConfig(sites=1, classes=("alpha", "beta", "gamma"), images_per_site=30, image_size=32,
                         label_skew=math.inf, site_shift=0.0, difficulty=0.0)  # fmt: skip
    generate(config, tmp_path)
    means = [_mean_colour(tmp_path / "site-1" / name) for name in config.classes]
    gaps = [np.abs(means[i] - means[j]).max() for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 5
