from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fedmedclip.data.imagefolder import DatasetError, ImageRecord, LabeledImages
from fedmedclip.experiment.config import parse_config
from fedmedclip.experiment.data import load_labeled_sites, subsample
from fedmedclip.experiment.reporter import SilentReporter


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)


def _load(data: dict, tmp_path: Path):
    return load_labeled_sites(parse_config({"name": "t", "data": data}), tmp_path, SilentReporter())


def test_imagefolder_sites_share_the_union_of_classes(tmp_path):
    root = tmp_path / "sites"
    for site, classes in {"a": ["benign", "malignant"], "b": ["benign"], "held": ["malignant", "other"]}.items():
        for name in classes:
            _image(root / site / name / "x.png")
    loaded = _load({"kind": "imagefolder", "root": str(root), "holdout_site": "held"}, tmp_path)
    assert list(loaded.sites) == ["a", "b"] and loaded.holdout_name == "held"
    assert loaded.sites["b"].classes == ["benign", "malignant", "other"]
    assert loaded.holdout is not None and loaded.holdout.labels == [1, 2]
    with pytest.raises(DatasetError, match="held-out site 'nope' is not in"):
        _load({"kind": "imagefolder", "root": str(root), "holdout_site": "nope"}, tmp_path)


def test_csv_sites(tmp_path):
    for name in ("1.png", "2.png", "3.png"):
        _image(tmp_path / name)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,site\n1.png,a,x\n2.png,b,y\n3.png,a,z\n")
    loaded = _load({"kind": "csv", "path": str(manifest), "holdout_site": "z"}, tmp_path)
    assert list(loaded.sites) == ["x", "y"] and loaded.holdout is not None


def test_subsample_keeps_the_class_mix_and_is_seeded(tmp_path):
    records = [ImageRecord(tmp_path / f"{i}.png", "ab"[i % 4 == 0], int(i % 4 == 0)) for i in range(40)]
    images = LabeledImages(["a", "b"], records)
    picked = subsample(images, 8, seed=1)
    assert len(picked.records) == 8 and sum(picked.labels) == 2  # a quarter of them are class b
    assert picked.records == subsample(images, 8, seed=1).records
    assert picked.records != subsample(images, 8, seed=2).records
    assert subsample(images, 100, seed=1) is images
