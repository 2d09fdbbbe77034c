"""P4 (docs/design.md §11): REST predict latency and batched throughput against raw ``encode_images``.

Everything is measured side by side in one process with one backbone object: the API runs under uvicorn on
127.0.0.1 (a real socket, multipart, PNG decoding, auth, micro-batching, FAM + head, JSON), and the "raw"
numbers call ``backbone.encode_images`` of the same backbone on the same image, already preprocessed.
Raw and HTTP measurements alternate so that a noisy neighbour hits both alike.

- latency: batch 1, sequential requests; ``p4_predict_p50_ratio`` = HTTP p50 / raw-encode p50 (goal ≤ 1.15);
- throughput: many concurrent single-image requests, micro-batched by the server, against raw batch-32
  encodes of the same number of images; ``p4_batch_throughput_ratio`` = median over rounds of HTTP images/s
  / raw images/s of the round just before (goal ≥ 0.80).

    python bench/p4_predict.py                 # ViT-B-32, random-init weights (no download needed)
    python bench/p4_predict.py --weights openai --device cuda
    python bench/p4_predict.py --quick         # the tiny test config: a smoke run in seconds (p4_quick.json)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

from fedmedclip.bundle import write_bundle
from fedmedclip.data.images import decode_image
from fedmedclip.model.backbone import TINY_MODEL, Backbone, BackboneSpec, load_backbone
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.model.prompts import DEFAULT_TEMPLATES
from fedmedclip.training.local_round import train_local_round
from inference_api.app import create_app
from inference_api.keys import generate_key, hash_key
from inference_api.settings import ApiKeyConfig, ApiSettings

SITE = "bench-site"
CLASSES = ("melanoma", "nevus", "basal cell carcinoma", "actinic keratosis", "benign keratosis")
RESULTS = Path(__file__).resolve().parent / "results"
GOAL_P50_RATIO = 1.15
GOAL_THROUGHPUT_RATIO = 0.80


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--weights", default="random", help="pretrained tag, weights file/dir, or 'random'")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--quick", action="store_true", help=f"use {TINY_MODEL} and few repetitions")
    parser.add_argument("--requests", type=int, default=40, help="batch-1 latency samples of each kind")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds of each kind")
    parser.add_argument("--images", type=int, default=96, help="images per throughput round")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent single-image requests")
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="override the server's batch_wait_ms")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/p4.json (p4_quick.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.weights = TINY_MODEL, "random"
        args.requests, args.rounds, args.images = 30, 2, 64
    if args.out is None:  # a smoke run never overwrites the real measurement
        args.out = RESULTS / ("p4_quick.json" if args.quick else "p4.json")
    return args


def make_bundle(root: Path, backbone: Backbone) -> None:
    """A real bundle: one local round of the actual training code on random embeddings, default head size."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(160, backbone.embed_dim, generator=generator)
    labels = torch.arange(160) % len(CLASSES)
    prototypes = backbone.class_prototypes(CLASSES, DEFAULT_TEMPLATES)
    result = train_local_round(
        features,
        labels,
        prototypes,
        fam_state(build_fam(backbone.embed_dim)),
        None,
        logit_scale=backbone.logit_scale,
    )
    write_bundle(
        root,
        SITE,
        backbone=backbone,
        classes=CLASSES,
        prompts=DEFAULT_TEMPLATES,
        text_prototypes=prototypes,
        fam_state=result.fam_state,
        fam_version=1,
        head_state=result.head_state,
    )


def make_png(size: int) -> bytes:
    """A textured image at the model's input size (noise keeps PNG from compressing it to nothing)."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((size, size, 3)) * 80 + np.linspace(60, 170, size)[None, :, None]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


class BackgroundServer:
    """uvicorn in a thread of this process, so the raw measurements can use the very same backbone."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 300
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def batch_stats(app: Any) -> tuple[float, float]:
    """(images, batches) the server's micro-batcher has encoded so far, from its Prometheus registry."""
    registry = app.state.metrics.registry
    total = registry.get_sample_value("fedmedclip_api_batch_images_sum") or 0.0
    count = registry.get_sample_value("fedmedclip_api_batch_images_count") or 0.0
    return total, count


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def http_throughput(url: str, key: str, png: bytes, images: int, concurrency: int) -> float:
    """Images/s for ``images`` single-image requests, ``concurrency`` in flight at once."""
    remaining = images
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                response = await client.post(f"/v1/sites/{SITE}/predict", files={"files": ("x.png", png)})
                response.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = BackboneSpec(model=args.model, weights=args.weights)
    backbone = load_backbone(spec, device=args.device)
    sync = torch.cuda.synchronize if backbone.device.type == "cuda" else (lambda: None)
    png = make_png(backbone.image_size)
    pixels = backbone.preprocess(decode_image(png)).unsqueeze(0)
    batch32 = pixels.repeat(32, 1, 1, 1)
    key = generate_key()

    with tempfile.TemporaryDirectory() as root:
        make_bundle(Path(root), backbone)
        overrides = {} if args.batch_wait_ms is None else {"batch_wait_ms": args.batch_wait_ms}
        settings = ApiSettings(
            bundle_root=Path(root),
            model=spec.model,
            weights=spec.weights,
            api_keys=[ApiKeyConfig(name="bench", sha256=hash_key(key), sites=[SITE])],
            max_batch=32,
            max_queued_images=4096,
            **overrides,
        )
        app = create_app(settings, backbone=backbone)
        with BackgroundServer(app) as url:
            client = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=300)

            def predict_once() -> None:
                client.post(f"/v1/sites/{SITE}/predict", files={"files": ("x.png", png)}).raise_for_status()

            def encode_once() -> None:
                backbone.encode_images(pixels)

            for _ in range(3):  # warm up both paths (allocators, autotuning, connection)
                encode_once()
                predict_once()
            sync()
            raw_ms, http_ms = [], []
            for _ in range(args.requests):
                raw_ms.append(1000 * timed(encode_once, sync))
                http_ms.append(1000 * timed(predict_once, sync))
            client.close()

            raw_rates, http_rates = [], []
            before = batch_stats(app)
            batches = max(1, args.images // 32)
            images = 32 * batches

            def encode_batches() -> None:
                for _ in range(batches):
                    backbone.encode_images(batch32)

            for _ in range(args.rounds):
                raw_rates.append(images / timed(encode_batches, sync))
                http_rates.append(asyncio.run(http_throughput(url, key, png, images, args.concurrency)))
            after = batch_stats(app)
            mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])

    raw_p50, http_p50 = statistics.median(raw_ms), statistics.median(http_ms)
    raw_rate, http_rate = statistics.median(raw_rates), statistics.median(http_rates)
    # Each HTTP round is compared with the raw round just before it: drift on a shared machine cancels out.
    throughput_ratio = statistics.median(h / r for h, r in zip(http_rates, raw_rates, strict=True))
    result = {
        "benchmark": "P4 REST predict vs raw encode_images",
        "created": datetime.now(UTC).isoformat(),
        "p4_predict_p50_ratio": round(http_p50 / raw_p50, 4),
        "p4_batch_throughput_ratio": round(throughput_ratio, 4),
        "goals": {"p4_predict_p50_ratio_max": GOAL_P50_RATIO, "p4_batch_throughput_ratio_min": GOAL_THROUGHPUT_RATIO},
        "met": {
            "p50": http_p50 / raw_p50 <= GOAL_P50_RATIO,
            "throughput": throughput_ratio >= GOAL_THROUGHPUT_RATIO,
        },
        "latency_ms": {
            "raw_encode_p50": round(raw_p50, 3),
            "raw_encode_p95": round(percentile(raw_ms, 95), 3),
            "http_predict_p50": round(http_p50, 3),
            "http_predict_p95": round(percentile(http_ms, 95), 3),
            "samples": args.requests,
        },
        "throughput_images_per_s": {
            "raw_batch32": round(raw_rate, 2),
            "http_microbatched": round(http_rate, 2),
            "per_round_ratios": [round(h / r, 4) for h, r in zip(http_rates, raw_rates, strict=True)],
            "concurrency": args.concurrency,
            "images_per_round": 32 * max(1, args.images // 32),
            "rounds": args.rounds,
            "mean_server_batch": round(mean_batch, 2),
        },
        "setup": {
            "model": spec.model,
            "weights": spec.weights,
            "image_size": backbone.image_size,
            "device": str(backbone.device),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "quick": args.quick,
            "batch_wait_ms": settings.batch_wait_ms,
            "note": "raw = encode_images on the preprocessed image; HTTP includes PNG decode and preprocessing",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("p4_predict_p50_ratio", "p4_batch_throughput_ratio", "met")}))
    print(f"latency ms: {result['latency_ms']}")
    print(f"throughput img/s: {result['throughput_images_per_s']}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
