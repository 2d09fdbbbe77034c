"""Builders for the experiment tests: a fake ISIC 2019 tree (both CSVs + tiny JPEGs) and small configs."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from fedmedclip.data.isic2019 import GROUND_TRUTH_FILE, IMAGE_DIR, LABEL_CODES, METADATA_FILE

# (anatomical site, label code, count): two big sites, a small one (dropped), and images without a site.
FAKE_ISIC = [
    ("anterior torso", "MEL", 6),
    ("anterior torso", "NV", 6),
    ("anterior torso", "DF", 2),  # outside the default 6-class subset
    ("head/neck", "MEL", 5),
    ("head/neck", "NV", 7),
    ("oral/genital", "NV", 3),
    ("", "MEL", 4),
    ("", "NV", 4),
]


def write_isic_tree(root: Path, rows: list[tuple[str, str, int]] = FAKE_ISIC, size: int = 24) -> list[str]:
    """Write the official layout under ``root``; returns the image ids in order."""
    images = root / IMAGE_DIR
    images.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    truth: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []
    for site, code, count in rows:
        for _ in range(count):
            image_id = f"ISIC_{len(ids):07d}"
            ids.append(image_id)
            shade = (30 * LABEL_CODES.index(code) + 7 * len(ids)) % 255
            Image.new("RGB", (size, size), (shade, 255 - shade, 90)).save(images / f"{image_id}.jpg", quality=90)
            truth.append({"image": image_id, **{c: "1.0" if c == code else "0.0" for c in LABEL_CODES}})
            meta.append({"image": image_id, "age_approx": "55.0", "anatom_site_general": site, "sex": "female"})
    _write_csv(root / GROUND_TRUTH_FILE, ["image", *LABEL_CODES], truth)
    _write_csv(root / METADATA_FILE, ["image", "age_approx", "anatom_site_general", "sex"], meta)
    return ids


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tests run many tiny tensor ops: on a shared 2-core machine a second intra-op thread mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def isic_root(tmp_path: Path) -> Path:
    root = tmp_path / "isic2019"
    write_isic_tree(root)
    return root


def tiny_experiment(data: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A minimal but complete config: tiny random CLIP, 2 rounds, every method."""
    config: dict[str, Any] = {
        "name": "tiny",
        "backbone": {"model": "fedmedclip-tiny", "weights": "random", "device": "cpu"},
        "data": data,
        "federation": {"rounds": 2, "train": {"head_hidden": 32}},
        "fedavg": {"rounds": 1, "max_train_images_per_site": 4, "batch_size": 2},
    }
    config.update(overrides)
    return config
