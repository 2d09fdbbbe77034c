"""P3: the embedding pass (hash, decode, preprocess, encode, write the cache) vs raw ``encode_image``.

Raw: the same images already decoded and preprocessed, in memory (on the device), encoded in batches of
the same size: the encoder's own throughput. Pass: ``embed_images`` from the files into a fresh cache.
The two alternate on chunks of images, ``reps`` times, and the median ratio over these adjacent pairs counts,
so a burst of load on a shared machine hurts neither side more than the other.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fedmedclip.data.cache import BatchDecoder, EmbeddingCache, embed_images, file_sha256
from fedmedclip.data.images import load_image
from fedmedclip.experiment.perf.common import timed
from fedmedclip.model.backbone import Backbone

GOAL_EFFICIENCY = 0.9


class _TimedEncoder:
    """The backbone as ``embed_images`` sees it, with the seconds spent inside ``encode_images`` counted."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.seconds = 0.0

    @property
    def cache_namespace(self) -> str:
        return self.backbone.cache_namespace

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.backbone.transform

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.backbone.preprocess(image)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        features, seconds = timed(self.device, lambda: self.backbone.encode_images(pixels))
        self.seconds += seconds
        return features


def measure_embedding(
    backbone: Backbone,
    paths: Sequence[Path],
    *,
    reps: int = 2,
    batch_size: int = 32,
    num_workers: int = 0,
    chunk: int | None = None,
    decoder: BatchDecoder | None = None,
) -> dict[str, Any]:
    """Raw and pass alternate on chunks of ``chunk`` images (default: all at once), ``reps`` times; the
    figure is the median over these adjacent pairs of raw time / pass time, so that a burst of load on a
    shared machine spoils one pair, not the result. Also recorded: the share of the pass's wall time spent
    inside the encoder (what the pipeline around it costs, measured within the same pass). ``decoder``:
    the pass decodes through it (an ``EmbedPipeline`` started before timing: its workers persist)."""
    device = backbone.device
    size = chunk or len(paths)
    groups = [list(paths[start : start + size]) for start in range(0, len(paths), size)]
    pixels = [torch.stack([backbone.preprocess(load_image(path)) for path in group]) for group in groups]
    batches = [[batch.to(device) for batch in group.split(batch_size)] for group in pixels]
    backbone.encode_images(batches[0][0])  # warm-up: first-call allocations and kernel selection

    def raw(index: int) -> None:
        for batch in batches[index]:
            backbone.encode_images(batch)

    def embedding_pass(index: int, encoder: _TimedEncoder) -> int:
        with tempfile.TemporaryDirectory(prefix="p3-cache-") as folder, EmbeddingCache(folder) as cache:
            result = embed_images(
                encoder, groups[index], cache, batch_size=batch_size, num_workers=num_workers, decoder=decoder
            )
        return result.computed

    raw_s: list[float] = []
    pass_s: list[float] = []
    busy: list[float] = []
    for _ in range(reps):
        for index in range(len(groups)):
            raw_s.append(timed(device, functools.partial(raw, index))[1])
            encoder = _TimedEncoder(backbone)
            computed, seconds = timed(device, functools.partial(embedding_pass, index, encoder))
            if computed != len(groups[index]):
                raise RuntimeError(f"the pass encoded {computed} of {len(groups[index])} images; comparison void")
            pass_s.append(seconds)
            busy.append(encoder.seconds / seconds)
    ratios = [r / p for r, p in zip(raw_s, pass_s, strict=True)]
    images = len(paths)
    return {
        "p3_embed_efficiency": statistics.median(ratios),
        "goal_efficiency": GOAL_EFFICIENCY,
        "images": images,
        "chunk": size,
        "reps": reps,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "decoder": type(decoder).__name__ if decoder is not None else "DataLoader",
        "device": str(device),
        "model": backbone.spec.model,
        "raw_images_per_s": len(raw_s) * images / len(groups) / sum(raw_s) if raw_s else 0.0,
        "pass_images_per_s": len(pass_s) * images / len(groups) / sum(pass_s) if pass_s else 0.0,
        "pair_ratios": ratios,
        "encoder_busy_share_median": statistics.median(busy),
        "raw_s": raw_s,
        "pass_s": pass_s,
        "timed": (
            f"median of {len(ratios)} adjacent raw/pass pairs on chunks of {size} images; "
            "raw = preprocessed tensors already in memory"
        ),
    }


def measure_decode(decoder: BatchDecoder, paths: Sequence[Path], *, batch_size: int, reps: int = 2) -> dict[str, Any]:
    """Decoding alone (read, re-hash, decode, resize, normalise, on the encoder's device): images/s, best
    of ``reps``. Possible because decoding is separated from encoding."""
    items = [(Path(path), file_sha256(path)) for path in paths]
    seconds: list[float] = []
    decoded = 0
    for _ in range(max(1, reps)):
        started = time.perf_counter()
        decoded = 0
        for batch in decoder(items, batch_size):
            if batch.pixels is not None:
                decoded += batch.pixels.shape[0]
                if batch.pixels.device.type == "cuda":
                    torch.cuda.synchronize(batch.pixels.device)
        seconds.append(time.perf_counter() - started)
    return {"images": len(items), "decoded": decoded, "images_per_s": len(items) / min(seconds), "seconds": seconds}


def measure_formats(
    backbone: Backbone,
    sets: dict[str, list[Path]],
    decoder: BatchDecoder,
    *,
    batch_size: int,
    reps: int = 2,
    full_pass: bool = True,
) -> dict[str, Any]:
    """Per format: decode-only images/s and, with ``full_pass``, the whole pass (fresh cache) images/s."""
    out: dict[str, Any] = {}
    for name, paths in sets.items():
        entry = measure_decode(decoder, paths, batch_size=batch_size, reps=reps)
        if full_pass:
            best = float("inf")
            for _ in range(max(1, reps)):
                with tempfile.TemporaryDirectory(prefix="formats-cache-") as folder, EmbeddingCache(folder) as cache:
                    started = time.perf_counter()
                    result = embed_images(backbone, paths, cache, batch_size=batch_size, decoder=decoder)
                    best = min(best, time.perf_counter() - started)
                if result.computed != len(paths):
                    raise RuntimeError(f"{name}: the pass encoded {result.computed} of {len(paths)} images")
            entry["pass_images_per_s"] = len(paths) / best
        out[name] = entry
    return out
