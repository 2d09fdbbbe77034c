"""`make bench-gpu`: everything of docs/design.md §11's GPU targets in one run on one CUDA GPU, written to
bench/results/gpu.json under the GPU's name (and to latest.json's "gpu" key when that file exists).

- P2-GPU: our local round (DeviceRoundTrainer: embeddings resident, CUDA-graph step) vs a FedAvg full
  fine-tune round, per round and over 50 rounds with the embedding pass (EmbedPipeline) included; our
  previous round path (train_local_round) is timed on the same GPU alongside, for reference.
- P3-GPU: the embedding pass on 224-px JPEG (decoded on the GPU) vs raw encode_image, alternating chunks.
- Formats: images/s of decoding alone and of the whole pass, for 224 and 1024-px JPEG, PNG and DICOM.
- P2-GPU compiled: the same rounds with torch.compile'd FAM and head inside the graph (last: compiling
  takes a while; everything before it is saved already).
- P4-GPU: the inference API (bench/p4_predict.py, in this process): batched predict throughput vs raw
  batched encode, and predict p50 vs one raw encode.

Sized to finish in well under 8 minutes on one H200 (about 3 there). Each part is guarded: one that fails
is recorded with its error and the others still run. Without CUDA it says so and exits with 2, unless
--smoke: the whole script on the CPU with a tiny model and a handful of images, so tests keep it working.

    python bench/gpu.py                         # on the GPU machine
    python bench/gpu.py --smoke --results DIR   # CPU smoke run (tests/bench)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
GOAL_P2_ROUND = 100.0
GOAL_P2_RUN = 50.0
GOAL_P3 = 0.5
GOAL_P4_THROUGHPUT = 0.8


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder for gpu.json")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random init")
    parser.add_argument("--p2-images", type=int, default=1024, help="training images of the P2 site")
    parser.add_argument("--p3-images", type=int, default=2048, help="224-px JPEGs of the P3 pass")
    parser.add_argument("--format-images", type=int, default=1024, help="images per format in the format table")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--reference-rounds", type=int, default=10, help="rounds of train_local_round, for reference")
    parser.add_argument("--fedavg-steps", type=int, default=8)
    parser.add_argument("--embed-batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--skip", action="append", default=[], choices=("p2", "p3", "formats", "p4", "p2_compiled"), help="repeatable"
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, a few images: checks the script runs")
    options = parser.parse_args(argv)
    if options.smoke:
        from fedmedclip.model.backbone import TINY_MODEL

        options.model = TINY_MODEL
        options.p2_images = options.p3_images = options.format_images = 24
        options.rounds, options.reference_rounds, options.fedavg_steps = 3, 2, 1
        options.embed_batch_size, options.workers, options.reps = 8, 1, 1
        options.skip.append("p2_compiled")  # inductor's CPU compile takes minutes on a busy machine
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    import torch

    if not torch.cuda.is_available() and not options.smoke:
        print(
            "bench/gpu.py: no CUDA GPU is visible (torch.cuda.is_available() is False), so nothing was measured. "
            "Run `make bench-gpu` on a machine with an NVIDIA GPU; `make bench` measures the CPU figures "
            "(`python bench/gpu.py --smoke` runs this script on the CPU to check it).",
            file=sys.stderr,
        )
        return 2

    from fedmedclip.data.embed_pipeline import EmbedPipeline
    from fedmedclip.experiment.machine import machine_info
    from fedmedclip.experiment.perf.common import bench_backbone, many_bench_images, write_json
    from fedmedclip.experiment.perf.formats import format_sets

    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not options.smoke else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-smoke"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # our rounds stay float32, as on the CPU
    entry: dict[str, Any] = {"errors": {}}

    def part(key: str, work: Callable[[], dict[str, Any]]) -> None:
        if key in options.skip:
            return
        begun = time.perf_counter()
        try:
            entry[key] = work()
            entry[key]["part_seconds"] = time.perf_counter() - begun
        except Exception as error:  # one broken part must not cost the GPU minutes of the others
            entry["errors"][key] = f"{error.__class__.__name__}: {error}"
            traceback.print_exc()
        print(f"[{time.perf_counter() - started:6.1f} s] {key} done", flush=True)
        save(entry, complete=False)  # a run cut short still leaves what it measured

    def save(data: dict[str, Any], complete: bool) -> None:
        data.update(machine=machine_info(device), measured_at=datetime.now(UTC).isoformat(timespec="seconds"))
        data.update(seconds=time.perf_counter() - started, complete=complete, ratios=_ratios(data))
        gpu_file = options.results / "gpu.json"
        known = json.loads(gpu_file.read_text()).get("gpu", {}) if gpu_file.is_file() else {}
        write_json(gpu_file, {"gpu": {**known, name: data}})

    count = max(options.p2_images, options.p3_images, options.format_images)
    per_set = min(256, count)
    with tempfile.TemporaryDirectory(prefix="fedmedclip-gpu-bench-") as folder:
        work = Path(folder)
        images = many_bench_images(work, -(-count // per_set), per_set, 224, options.workers)
        sets = format_sets(images.paths[:count], work / "formats", options.workers)
        print(f"{name}: {len(images.paths)} synthetic images in 4 formats, {time.perf_counter() - started:.0f} s")
        backbone = bench_backbone(options.model, device)
        with EmbedPipeline(backbone, num_workers=options.workers) as pipeline:
            entry["pipeline"] = {"device_jpeg": pipeline.device_jpeg, "workers": options.workers}
            part("p2", lambda: _p2(options, backbone, sets["jpeg224"], images, pipeline))
            part("p3", lambda: _p3(options, backbone, sets["jpeg224"], pipeline))
            part("formats", lambda: _formats(options, backbone, sets, pipeline))
        part("p4", lambda: _p4(options, device, work))
        # Last: compiling takes seconds to a minute, and everything above is saved already.
        part("p2_compiled", lambda: _p2_compiled(options, backbone, images, entry))
    save(entry, complete=True)
    print(json.dumps(entry["ratios"], indent=2), flush=True)
    gpu_file = options.results / "gpu.json"
    latest = options.results / "latest.json"
    if latest.is_file() and not options.smoke:
        data = json.loads(latest.read_text())
        data["gpu"] = {**data.get("gpu", {}), name: entry}
        write_json(latest, data)
    print(f"wrote {gpu_file} in {entry['seconds']:.0f} s; errors: {entry['errors'] or 'none'}", flush=True)
    return 1 if entry["errors"] else 0


def _p2(options: argparse.Namespace, backbone: Any, paths: list[Path], images: Any, pipeline: Any) -> dict[str, Any]:
    from fedmedclip.experiment.perf.compute import measure_compute

    count = options.p2_images
    common = dict(
        rounds=options.rounds,
        fedavg_steps=options.fedavg_steps,
        embed_batch_size=options.embed_batch_size,
        num_workers=options.workers,
        decode_overlapped=True,  # FedAvg's decoding assumed free: least favourable to us
        decoder=pipeline,
    )
    ours = measure_compute(backbone, paths[:count], images.labels[:count], images.classes, device_rounds=True, **common)
    print(
        f"P2: ours {ours['ours']['round_s_median'] * 1000:.2f} ms/round ({ours['round_path_info']}), FedAvg "
        f"{ours['fedavg']['round_s']:.3f} s/round: {ours['p2_round_speedup']:,.0f}x per round, "
        f"{ours['p2_50round_speedup']:,.0f}x over {options.rounds} rounds",
        flush=True,
    )
    reference = measure_compute(
        backbone,
        paths[:count],
        images.labels[:count],
        images.classes,
        device_rounds=False,
        **{**common, "rounds": options.reference_rounds, "fedavg_steps": 1},
    )
    ours["reference_train_local_round"] = {
        "round_s_median": reference["ours"]["round_s_median"],
        "rounds": options.reference_rounds,
        "device_round_speedup_vs_it": reference["ours"]["round_s_median"] / ours["ours"]["round_s_median"],
    }
    ours["goal_round_speedup"], ours["goal_run_speedup"] = GOAL_P2_ROUND, GOAL_P2_RUN
    return ours


def _p2_compiled(options: argparse.Namespace, backbone: Any, images: Any, entry: dict[str, Any]) -> dict[str, Any]:
    """The device round with torch.compile'd FAM and head, rounds only, against the FedAvg round of P2."""
    import torch

    from fedmedclip.experiment.perf.compute import device_round_times

    count = options.p2_images
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(count, backbone.embed_dim, generator=generator)  # cached vectors: values do not matter
    targets = torch.tensor(images.labels[:count])
    result = device_round_times(
        backbone, features, targets, images.classes, rounds=options.rounds, compile_modules=True
    )
    fedavg_round_s = entry.get("p2", {}).get("fedavg", {}).get("round_s")
    if fedavg_round_s:
        result["p2_round_speedup"] = fedavg_round_s / result["round_s_median"]
    print(f"P2 compiled: {result['round_s_median'] * 1000:.2f} ms/round, set-up {result['setup_s']:.1f} s", flush=True)
    return result


def _p3(options: argparse.Namespace, backbone: Any, paths: list[Path], pipeline: Any) -> dict[str, Any]:
    from fedmedclip.experiment.perf.embed import measure_embedding

    result = measure_embedding(
        backbone,
        paths[: options.p3_images],
        reps=options.reps,
        batch_size=options.embed_batch_size,
        num_workers=options.workers,
        chunk=min(1024, options.p3_images),
        decoder=pipeline,
    )
    result["format"], result["goal_efficiency"] = "jpeg224", GOAL_P3
    print(
        f"P3: raw {result['raw_images_per_s']:,.0f} img/s, pass {result['pass_images_per_s']:,.0f} img/s, "
        f"efficiency {100 * result['p3_embed_efficiency']:.1f}%",
        flush=True,
    )
    return result


def _formats(options: argparse.Namespace, backbone: Any, sets: dict[str, list[Path]], pipeline: Any) -> dict[str, Any]:
    from fedmedclip.experiment.perf.embed import measure_formats

    chosen = {key: paths[: options.format_images] for key, paths in sets.items()}
    result = measure_formats(backbone, chosen, pipeline, batch_size=options.embed_batch_size, reps=2)
    for key, value in result.items():
        print(f"{key:>9}: decode {value['images_per_s']:,.0f} img/s, pass {value['pass_images_per_s']:,.0f} img/s")
    return {"by_format": result, "route": {"jpeg": "gpu" if pipeline.device_jpeg else "cpu workers"}}


def _p4(options: argparse.Namespace, device: Any, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import p4_predict

    out = work / "p4.json"
    args = ["--device", str(device), "--out", str(out)]
    args += ["--quick"] if options.smoke else ["--model", options.model, "--images", "1024", "--concurrency", "64"]
    p4_predict.main(args)
    result: dict[str, Any] = json.loads(out.read_text())
    result["goals"]["p4_batch_throughput_ratio_min"] = GOAL_P4_THROUGHPUT
    return result


def _ratios(entry: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, each next to its goal (None where the part failed or was skipped)."""

    def get(*keys: str) -> Any:
        value: Any = entry
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    return {
        "p2_gpu_round_speedup": {"measured": get("p2", "p2_round_speedup"), "goal_min": GOAL_P2_ROUND},
        "p2_gpu_50round_speedup": {"measured": get("p2", "p2_50round_speedup"), "goal_min": GOAL_P2_RUN},
        "p2_gpu_round_speedup_compiled": {
            "measured": get("p2_compiled", "p2_round_speedup"),
            "goal_min": GOAL_P2_ROUND,
        },
        "p3_gpu_embed_efficiency_jpeg224": {"measured": get("p3", "p3_embed_efficiency"), "goal_min": GOAL_P3},
        "p4_gpu_batch_throughput_ratio": {
            "measured": get("p4", "p4_batch_throughput_ratio"),
            "goal_min": GOAL_P4_THROUGHPUT,
        },
        "p4_gpu_predict_p50_ratio": {"measured": get("p4", "p4_predict_p50_ratio"), "goal_max": 1.15},
    }


if __name__ == "__main__":
    sys.exit(main())
