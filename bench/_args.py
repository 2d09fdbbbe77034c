"""Command-line options shared by the P1–P3 scripts (this folder is on sys.path when a script runs)."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_MODEL = "fedmedclip-tiny"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks never download anything


def parser(description: str) -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--quick", action="store_true", help="smallest mode: tiny model, a few images (for tests)")
    args.add_argument("--model", default=None, help="open_clip architecture, random init (default ViT-B-32)")
    args.add_argument("--device", default="cpu", help="cpu or cuda")
    args.add_argument("--work", type=Path, default=None, help="folder for images and caches (default: temporary)")
    args.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder for the JSON result")
    args.add_argument("--sites", type=int, default=3, help="synthetic sites in the image set")
    args.add_argument("--images-per-site", type=int, default=128, help="images per synthetic site")
    args.add_argument("--image-size", type=int, default=224, help="side of the synthetic images in pixels")
    return args


def apply_quick(options: argparse.Namespace) -> None:
    """--quick shrinks everything that was left at its default."""
    if options.quick:
        options.model = options.model or QUICK_MODEL
        options.images_per_site = min(options.images_per_site, 24)
        options.image_size = min(options.image_size, 64)
    options.model = options.model or "ViT-B-32"


@contextmanager
def work_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="fedmedclip-bench-") as folder:
        yield Path(folder)
