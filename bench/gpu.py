"""`make bench-gpu`: P2 and P3 on a CUDA GPU, stored under the GPU's name (bench/results/gpu.json, and in
latest.json's "gpu" key when that file exists). On a machine without CUDA it says so and exits with 2.

    python bench/gpu.py                         # defaults sized for a few minutes on one GPU
    python bench/gpu.py --results /some/dir     # write gpu.json elsewhere
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--p2-images", type=int, default=1024, help="training images of the P2 site")
    parser.add_argument("--p3-images", type=int, default=2048, help="images of the P3 embedding pass")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--fedavg-steps", type=int, default=8)
    parser.add_argument("--embed-batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            "bench/gpu.py: no CUDA GPU is visible (torch.cuda.is_available() is False), so nothing was measured. "
            "Run `make bench-gpu` on a machine with an NVIDIA GPU; `make bench` measures the CPU figures.",
            file=sys.stderr,
        )
        return 2

    from fedmedclip.experiment.machine import machine_info
    from fedmedclip.experiment.perf.common import bench_backbone, many_bench_images, write_json
    from fedmedclip.experiment.perf.compute import measure_compute
    from fedmedclip.experiment.perf.embed import measure_embedding

    started = time.perf_counter()
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    count = max(options.p2_images, options.p3_images)
    per_set = 256
    with tempfile.TemporaryDirectory(prefix="fedmedclip-gpu-bench-") as work:
        images = many_bench_images(Path(work), -(-count // per_set), per_set, 224, options.workers)
        print(
            f"GPU {name}: {len(images.paths)} synthetic 224px images in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        backbone = bench_backbone(options.model, device)
        p3 = measure_embedding(
            backbone,
            images.paths[: options.p3_images],
            reps=options.reps,
            batch_size=options.embed_batch_size,
            num_workers=options.workers,
        )
        print(
            f"P3 on {name}: raw {p3['raw_images_per_s']:,.0f} img/s, pass {p3['pass_images_per_s']:,.0f} img/s "
            f"({options.workers} decode workers), efficiency {100 * p3['p3_embed_efficiency']:.1f}%",
            flush=True,
        )
        p2 = measure_compute(
            backbone,
            images.paths[: options.p2_images],
            images.labels[: options.p2_images],
            images.classes,
            rounds=options.rounds,
            fedavg_steps=options.fedavg_steps,
            embed_batch_size=options.embed_batch_size,
            num_workers=options.workers,
            decode_overlapped=True,
        )
        print(
            f"P2 on {name}: ours {p2['ours']['round_s_median'] * 1000:.1f} ms/round, FedAvg "
            f"{p2['fedavg']['round_s']:.2f} s/round ({p2['fedavg']['timed']}); speed-up per round "
            f"{p2['p2_round_speedup']:,.0f}x, over {options.rounds} rounds {p2['p2_50round_speedup']:,.0f}x",
            flush=True,
        )
    entry: dict[str, Any] = {
        "p2": p2,
        "p3": p3,
        "machine": machine_info(device),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
    }
    gpu_file = options.results / "gpu.json"
    known = json.loads(gpu_file.read_text()).get("gpu", {}) if gpu_file.is_file() else {}
    write_json(gpu_file, {"gpu": {**known, name: entry}})
    latest = options.results / "latest.json"
    if latest.is_file():
        data = json.loads(latest.read_text())
        data["gpu"] = {**data.get("gpu", {}), name: entry}
        write_json(latest, data)
    print(f"wrote {gpu_file}" + (f" and the 'gpu' key of {latest}" if latest.is_file() else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
