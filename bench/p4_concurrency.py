"""P4 under concurrency (docs/design.md §11): CPU per image of the API against the in-process path, latency
under 50 concurrent clients, RSS over a soak, and throughput with several worker processes.

The API runs as a real ``fedmedclip api serve`` process (``python -m inference_api serve``) on 127.0.0.1;
clients are asyncio tasks in this process, each sending one PNG per request to ``/v1/sites/{site}/predict``
and waiting for the answer before sending again. The server's CPU time (user + system, all its processes and
threads, from psutil) is read before and after the measured window, so the figure does not depend on how
busy a shared machine is. The in-process side runs in this process, between the API windows, with the same
backbone and bundle: decode the same PNG, preprocess, ``encode_images`` and the site's classifier, at batch
32, timed with ``time.process_time``.

- ``p4_api_cpu_ratio`` = API images per CPU-second ÷ in-process images per CPU-second (goal ≥ 0.7);
- ``p4_api_p50_ms`` / ``p4_api_p99_ms``: request latency seen by the clients under that load;
- ``p4_soak_rss_mib_per_min``: growth of the server's RSS after warm-up, least-squares slope (goal ≤ 2);
  the curve is drawn to ``bench/results/p4_soak_rss.png``;
- with ``--workers 1,2``: images/s and CPU ratio per worker count.

    python bench/p4_concurrency.py --quick                  # tiny model, 20 s window, 60 s soak
    python bench/p4_concurrency.py --model ViT-B-32 --soak-s 600 --workers 1,2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import torch
from PIL import Image

from fedmedclip.bundle import current_version, read_bundle
from fedmedclip.data.images import decode_image
from fedmedclip.model.backbone import TINY_MODEL, BackboneSpec, load_backbone
from inference_api.keys import generate_key, hash_key
from inference_api.settings import ApiKeyConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from p4_predict import SITE, make_bundle  # a sibling script: the same bundle and site

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_CPU_RATIO = 0.7
GOAL_RSS_MIB_PER_MIN = 2.0
BATCH = 32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help=f"open_clip model, random init ({TINY_MODEL} with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"{TINY_MODEL}, a 20 s window and a 60 s soak")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients, one request in flight each")
    parser.add_argument("--window-s", type=float, default=60.0, help="seconds of measured load per worker count")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="seconds of unmeasured load first")
    parser.add_argument("--soak-s", type=float, default=600.0, help="seconds of soak for the RSS curve (0: none)")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts to compare, e.g. 1,2")
    parser.add_argument("--image-side", type=int, default=0, help="side of the uploaded image (default: model input)")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png", help="upload format")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads on both sides (OMP_NUM_THREADS for the server). On a shared 2-core machine "
        "more than one thread spends most of its CPU spinning (measured: a tiny-model batch-32 encode took 154 ms "
        "CPU with 2 threads, 3 ms with 1)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/p4_concurrency.json")
    args = parser.parse_args()
    if args.quick:
        args.model, args.window_s, args.warmup_s, args.soak_s = TINY_MODEL, 20.0, 5.0, min(args.soak_s, 60.0)
    if args.out is None:
        args.out = RESULTS / ("p4_concurrency_quick.json" if args.quick else "p4_concurrency.json")
    return args


def make_image(side: int, kind: str) -> bytes:
    """A photograph-like upload: larger than the model input, textured so PNG cannot shrink it to nothing."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, side)
    pixels = rng.normal(0, 12, (side, side, 3)) + ramp[None, :, None] + ramp[:, None, None] * 0.2
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
        buffer, kind.upper(), **({"quality": 90} if kind == "jpeg" else {})
    )
    return buffer.getvalue()


@dataclass
class Server:
    url: str
    process: psutil.Process

    def tree(self) -> list[psutil.Process]:
        return [self.process, *self.process.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        # multiprocessing's spawn start method adds a resource tracker beside uvicorn's workers.
        children = self.process.children()
        return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())] or [self.process]

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_mib(self) -> float:
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total / 2**20


@contextlib.contextmanager
def serve(root: Path, spec: BackboneSpec, key: str, workers: int, log: Path, threads: int) -> Iterator[Server]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "FEDMEDCLIP_API_BUNDLE_ROOT": str(root),
        "FEDMEDCLIP_API_MODEL": spec.model,
        "FEDMEDCLIP_API_WEIGHTS": "random",
        "FEDMEDCLIP_API_SEED": str(spec.seed),
        "FEDMEDCLIP_API_DEVICE": "cpu",
        "FEDMEDCLIP_API_MAX_QUEUED_IMAGES": "4096",
        "FEDMEDCLIP_API_LOG_LEVEL": "info",  # startup lines only: the API logs no per-request lines
        "FEDMEDCLIP_API_API_KEYS": json.dumps(
            [ApiKeyConfig(name="bench", sha256=hash_key(key), sites=[SITE]).model_dump()]
        ),
    }
    command = [sys.executable, "-m", "inference_api", "serve", "--host", "127.0.0.1", "--port", "0"]
    if workers > 1:
        command += ["--workers", str(workers)]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        assert process.stdout is not None
        url = None
        while url is None:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"the API did not start:\n{log.read_text()[-2000:]}")
            match = re.search(r"serving on (http://\S+)", line)
            url = match.group(1) if match else None
        server = Server(url, psutil.Process(process.pid))
        _wait_ready(server, workers, log)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(server: Server, workers: int, log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        # Every worker logs "serving N site(s)" at the end of its startup.
        if log.read_text().count(" site(s) from ") >= workers:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/readyz", timeout=5).status_code == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError("the API did not become ready")


@dataclass
class Load:
    latencies_s: list[float]
    images: int
    errors: int


def raw_request(url: str, key: str, png: bytes) -> bytes:
    """One predict request as bytes on the wire, built once by httpx (multipart encoding and all)."""
    request = httpx.Request(
        "POST", f"{url}/v1/sites/{SITE}/predict", headers={"X-API-Key": key}, files={"files": ("x.png", png)}
    )
    body = request.read()
    head = [f"POST {request.url.raw_path.decode()} HTTP/1.1"]
    head += [f"{name}: {value}" for name, value in request.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def load(url: str, key: str, png: bytes, clients: int, seconds: float, on_tick: Any = None) -> Load:
    """``clients`` closed-loop clients for ``seconds``, each on its own keep-alive connection; ``on_tick`` is
    called about once a second. The clients replay prebuilt request bytes and read only the status line and
    Content-Length (like wrk): a full Python HTTP client per request would cost more CPU than the server
    spends, and on a small machine the clients, not the server, would set the pace."""
    result = Load([], 0, 0)
    deadline = time.perf_counter() + seconds
    request = raw_request(url, key, png)
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def one_client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                if status == 200:
                    result.latencies_s.append(time.perf_counter() - started)
                    result.images += 1
                else:
                    result.errors += 1
        finally:
            writer.close()

    async def ticker() -> None:
        while time.perf_counter() < deadline:
            await asyncio.sleep(1.0)
            if on_tick is not None:
                on_tick()

    await asyncio.gather(ticker(), *[one_client() for _ in range(clients)])
    return result


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    values = {}
    for name in ("fedmedclip_api_batch_images_sum", "fedmedclip_api_batch_images_count"):
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        values[name] = float(match.group(1)) if match else 0.0
    return values["fedmedclip_api_batch_images_sum"], values["fedmedclip_api_batch_images_count"]


def in_process_rate(backbone: Any, classifier: Any, png: bytes, seconds: float) -> float:
    """Images per CPU-second of decode + preprocess + encode + classify at batch 32, in this process."""
    images, cpu = 0, 0.0
    while cpu < seconds:
        started = time.process_time()
        with torch.inference_mode():
            pixels = torch.stack([backbone.preprocess(decode_image(png)) for _ in range(BATCH)])
            output = classifier.predict(backbone.encode_images(pixels))
            output.probs.tolist()
        cpu += time.process_time() - started
        images += BATCH
    return images / cpu


def measure(server: Server, key: str, png: bytes, args: argparse.Namespace) -> dict[str, Any]:
    asyncio.run(load(server.url, key, png, args.clients, args.warmup_s))
    before_batches, before_cpu = batch_stats(server.url), server.cpu_seconds()
    started = time.perf_counter()
    result = asyncio.run(load(server.url, key, png, args.clients, args.window_s))
    wall = time.perf_counter() - started
    cpu = server.cpu_seconds() - before_cpu
    after_batches = batch_stats(server.url)
    latencies = np.asarray(result.latencies_s) * 1000
    passes = after_batches[1] - before_batches[1]
    return {
        "images": result.images,
        "errors": result.errors,
        "seconds": round(wall, 2),
        "images_per_s": round(result.images / wall, 2),
        "server_cpu_s": round(cpu, 2),
        "images_per_cpu_s": round(result.images / cpu, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        # With several workers /metrics answers from one of them: a sample, not the total.
        "mean_images_per_pass": round((after_batches[0] - before_batches[0]) / max(passes, 1.0), 2),
    }


def soak(server: Server, key: str, png: bytes, args: argparse.Namespace) -> dict[str, Any]:
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()

    def tick() -> None:
        samples.append((time.perf_counter() - started, server.rss_mib()))

    tick()
    result = asyncio.run(load(server.url, key, png, args.clients, args.soak_s, on_tick=tick))
    tick()
    times = np.array([t for t, _ in samples])
    rss = np.array([r for _, r in samples])
    settled = times >= min(60.0, 0.2 * args.soak_s)  # after warm-up: allocator pools and caches filled
    slope = float(np.polyfit(times[settled] / 60, rss[settled], 1)[0]) if settled.sum() >= 3 else float("nan")
    figure = args.out.with_name(args.out.stem.replace("p4_concurrency", "p4_soak_rss") + ".png")
    _plot(times, rss, slope, args, figure)
    return {
        "seconds": args.soak_s,
        "requests": result.images,
        "errors": result.errors,
        "rss_mib_start": round(float(rss[0]), 1),
        "rss_mib_end": round(float(rss[-1]), 1),
        "rss_mib_max": round(float(rss.max()), 1),
        "rss_mib_per_min_after_warmup": round(slope, 3),
        "figure": str(figure.relative_to(RESULTS.parent.parent))
        if figure.is_relative_to(RESULTS.parent.parent)
        else str(figure),
        "samples": [[round(t, 1), round(r, 2)] for t, r in samples],
    }


def _plot(times: np.ndarray, rss: np.ndarray, slope: float, args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    ax.plot(times / 60, rss, lw=1.2)
    ax.set_xlabel("minutes under load")
    ax.set_ylabel("server RSS (MiB)")
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    middle = float((rss.max() + rss.min()) / 2)
    half = max(10.0, float(rss.max() - rss.min()) * 0.6)  # at least ±10 MiB: flat should look flat, not zoomed
    ax.set_ylim(middle - half, middle + half)
    ax.set_title(f"{args.model}, {args.clients} clients: {slope:+.2f} MiB/min after warm-up", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def record_latest(result: dict[str, Any], suffix: str) -> None:
    """Put this run's figures at the top of bench/results/latest.json (keys suffixed by the model unless it
    is ViT-B-32), beside the other benchmarks' figures."""
    latest_file = RESULTS / "latest.json"
    latest = json.loads(latest_file.read_text()) if latest_file.is_file() else {}
    for key in ("p4_api_cpu_ratio", "p4_api_p50_ms", "p4_api_p99_ms", "p4_soak_rss_mib_per_min"):
        if result[key] is not None:
            latest[key + suffix] = result[key]
    latest_file.write_text(json.dumps(latest, indent=2) + "\n")


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.torch_threads)
    spec = BackboneSpec(model=args.model, weights="random")
    backbone = load_backbone(spec, device="cpu")
    args.image_side = args.image_side or backbone.image_size
    png = make_image(args.image_side, args.format)
    key = generate_key()
    worker_counts = [int(w) for w in args.workers.split(",")]
    runs: dict[str, Any] = {}
    soaked: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "bundles"
        make_bundle(root, backbone)
        classifier = read_bundle(root / SITE / str(current_version(root, SITE))).classifier(backbone.device)
        in_process = [in_process_rate(backbone, classifier, png, 3.0)]
        for workers in worker_counts:
            with serve(root, spec, key, workers, Path(work) / f"server-{workers}.log", args.torch_threads) as server:
                runs[str(workers)] = measure(server, key, png, args)
                in_process.append(in_process_rate(backbone, classifier, png, 3.0))
                runs[str(workers)]["rss_mib"] = round(server.rss_mib(), 1)
                if workers == 1 and args.soak_s > 0:
                    soaked = soak(server, key, png, args)
    reference = float(np.median(in_process))
    for run in runs.values():
        run["cpu_ratio"] = round(run["images_per_cpu_s"] / reference, 4)
    first = runs[str(worker_counts[0])]
    result: dict[str, Any] = {
        "benchmark": "P4 API under concurrency: CPU per image, latency, RSS soak, workers",
        "created": datetime.now(UTC).isoformat(),
        "p4_api_cpu_ratio": first["cpu_ratio"],
        "p4_api_p50_ms": first["p50_ms"],
        "p4_api_p99_ms": first["p99_ms"],
        "p4_soak_rss_mib_per_min": soaked["rss_mib_per_min_after_warmup"] if soaked else None,
        "goals": {"p4_api_cpu_ratio_min": GOAL_CPU_RATIO, "p4_soak_rss_mib_per_min_max": GOAL_RSS_MIB_PER_MIN},
        "in_process_images_per_cpu_s": round(reference, 2),
        "in_process_samples": [round(r, 2) for r in in_process],
        "by_workers": runs,
        "soak": soaked,
        "setup": {
            "model": spec.model,
            "weights": "random",
            "clients": args.clients,
            "window_s": args.window_s,
            "image": f"{args.image_side}x{args.image_side} {args.format.upper()}, {len(png)} bytes",
            "torch_threads": args.torch_threads,
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "machine": platform.machine(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.out.resolve().parent == RESULTS and not args.quick:
        record_latest(result, "" if spec.model == "ViT-B-32" else "_" + spec.model.removeprefix("fedmedclip-"))
    summary = {k: result[k] for k in ("p4_api_cpu_ratio", "p4_api_p50_ms", "p4_api_p99_ms", "p4_soak_rss_mib_per_min")}
    print(json.dumps(summary))
    for workers, run in runs.items():
        print(f"workers={workers}: {json.dumps({k: v for k, v in run.items()})}")
    print(f"in-process images per CPU-second at batch {BATCH}: {reference:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
