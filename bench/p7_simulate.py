#!/usr/bin/env python3
"""P7: simulated sites per second with the system's own training, codec and aggregation code.

    python bench/p7_simulate.py                       # throughput, Ray overhead, 1,000 sites × 20 rounds
    python bench/p7_simulate.py --quick               # seconds: small sites, for a smoke run
    python bench/p7_simulate.py --gpu                 # the prepared GPU run: 10,000 sites × 100 rounds on cuda

Measured side by side in one run, each site holding 100 cached 512-d embeddings (default training settings,
including the 512-wide private head):

1. throughput: site-rounds per second of one vectorised shard (``backend: local``, this process's torch
   threads) against the same sites run one at a time through ``train_local_round`` + ``encode_update``;
2. Ray's overhead: the same simulation with ``backend: local`` and ``backend: ray`` (one actor per shard)
   on the same cores, with and without Ray's start-up;
3. scale: ``--scale-sites`` sites for ``--scale-rounds`` rounds end to end (wall time, peak RSS).

Results go to stdout and ``bench/results/p7.json``; ``p7_site_rounds_per_s_cpu`` (or ``_gpu``) is merged into
``bench/results/latest.json`` without touching its other keys.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fedmedclip.federation.codec import encode_update
from fedmedclip.federation.delta import alive_rows_of_state, fam_delta
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.simulation.config import SimulateConfig, parse_simulate_config
from fedmedclip.simulation.runner import run_simulation
from fedmedclip.simulation.shard import Shard, Status
from fedmedclip.simulation.sites import site_seed
from fedmedclip.training.local_round import train_local_round

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_CPU = 50.0  # site-rounds/s on 2 cores (docs/design.md §11)
GOAL_GPU_SECONDS = 15 * 60  # 10,000 sites × 100 rounds on one GPU


def config(sites: int, rounds: int, options: argparse.Namespace, **extra: Any) -> SimulateConfig:
    raw: dict[str, Any] = {
        "name": "p7",
        "sites": {
            "count": sites,
            "train_samples": options.samples,
            "eval_samples": 25,
            "data": {"kind": "synthetic", "dim": options.dim, "classes": 8},
        },
        "rounds": rounds,
        "shard_size": options.shard_size,
        "train": {"head_hidden": options.head_hidden},
        "device": options.device,
        "eval_every": max(rounds, 1),
        "max_shard_memory_mb": 1 << 20,
        "codec_threads": options.codec_threads,
        **extra,
    }
    return parse_simulate_config(raw)


def throughput(options: argparse.Namespace) -> dict[str, float]:
    """One shard's vectorised rounds against the same sites one at a time through the agent's functions."""
    settings = config(options.shard_size, 1, options)
    shard = Shard(settings, 0)
    global_fam = fam_state(build_fam(options.dim, seed=0))
    sites: list[tuple[int, Status]] = [(site, "train") for site in range(options.shard_size)]
    shard.run_round(global_fam, 0, sites)  # warm-up (first-call costs, allocator)
    started = time.perf_counter()
    for round_index in range(1, options.rounds + 1):
        shard.run_round(global_fam, round_index, sites)
    if options.device.startswith("cuda"):
        torch.cuda.synchronize()
    vectorised = options.shard_size * options.rounds / (time.perf_counter() - started)

    count = min(options.shard_size, options.loop_sites)
    data, train = shard.data, settings.train_config()
    heads = [{n: t[i].cpu().clone() for n, t in shard.heads.items()} for i in range(count)]
    started = time.perf_counter()
    for site in range(count):
        result = train_local_round(
            data.train_features[site].cpu(),
            data.train_labels[site].cpu(),
            data.prototypes.cpu(),
            global_fam,
            heads[site],
            logit_scale=settings.logit_scale,
            config=train,
            round_index=1,
            seed=site_seed(settings, site),
        )
        encode_update(fam_delta(result.fam_state, global_fam), alive_rows_of_state(result.fam_state), None)
    one_at_a_time = count / (time.perf_counter() - started)
    return {"vectorised_site_rounds_per_s": vectorised, "one_at_a_time_site_rounds_per_s": one_at_a_time}


def ray_overhead(options: argparse.Namespace) -> dict[str, float] | None:
    try:
        import ray
    except ImportError:
        print("ray is not installed: skipping the overhead comparison (pip install 'fedmedclip[ray]')")
        return None
    sites, rounds = 2 * options.shard_size, options.ray_rounds
    threads = max(1, torch.get_num_threads() // 2)  # two actors share this process's cores
    local = run_simulation(config(sites, rounds, options, threads=threads))
    started = time.perf_counter()
    remote = run_simulation(config(sites, rounds, options, backend="ray", threads=threads))
    total = time.perf_counter() - started
    del ray
    local_rounds = sum(r.seconds for r in local.rounds)
    remote_rounds = sum(r.seconds for r in remote.rounds)
    return {
        "sites": sites,
        "rounds": rounds,
        "local_round_seconds": local_rounds,
        "ray_round_seconds": remote_rounds,
        "ray_round_overhead_ratio": remote_rounds / local_rounds,
        "local_wall_seconds": local.wall_seconds,
        "ray_wall_seconds_with_startup": total,
        "same_result": all(torch.equal(t, remote.global_fam[n]) for n, t in local.global_fam.items()),
    }


def scale(options: argparse.Namespace, sites: int, rounds: int) -> dict[str, Any]:
    settings = config(sites, rounds, options, participation=options.participation, eval_every=max(1, rounds // 4))
    outcome = run_simulation(
        settings, on_round=lambda r: print(f"  round {r.round}: {r.trained} sites in {r.seconds:.1f} s", flush=True)
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    site_rounds = sum(r.trained for r in outcome.rounds)
    return {
        "sites": sites,
        "rounds": rounds,
        "participation": options.participation,
        "site_rounds": site_rounds,
        "wall_seconds": outcome.wall_seconds,
        "site_rounds_per_s": site_rounds / outcome.wall_seconds,
        "peak_rss_bytes": peak,
        "state_bytes": sum(m.state_bytes for m in outcome.memory),
        "final_mean_accuracy": outcome.rounds[-1].accuracy["ensemble_acc"]["mean"],
        "gpu_peak_bytes": torch.cuda.max_memory_allocated() if options.device.startswith("cuda") else None,
    }


def merge_latest(key: str, value: float) -> None:
    latest = RESULTS / "latest.json"
    data = json.loads(latest.read_text()) if latest.exists() else {}
    data[key] = value
    latest.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--quick", action="store_true", help="small sites and few rounds (a smoke run)")
    args.add_argument("--gpu", action="store_true", help="the GPU run: cuda, 10,000 sites × 100 rounds")
    args.add_argument("--device", default="cpu")
    args.add_argument("--dim", type=int, default=512)
    args.add_argument("--samples", type=int, default=100, help="cached embeddings per site")
    args.add_argument("--head-hidden", type=int, default=512)
    args.add_argument("--shard-size", type=int, default=32)
    args.add_argument("--rounds", type=int, default=3, help="rounds timed for the throughput figure")
    args.add_argument("--loop-sites", type=int, default=8, help="sites timed one at a time")
    args.add_argument("--ray-rounds", type=int, default=2)
    args.add_argument("--scale-sites", type=int, default=1000)
    args.add_argument("--scale-rounds", type=int, default=20)
    args.add_argument("--participation", type=float, default=1.0, help="of the scale run")
    args.add_argument("--codec-threads", type=int, default=0, help="threads encoding a shard's uploads")
    args.add_argument("--skip-ray", action="store_true")
    args.add_argument("--skip-scale", action="store_true")
    args.add_argument("--results", type=Path, default=RESULTS)
    options = args.parse_args()
    if options.gpu:
        options.device = "cuda"
        options.scale_sites, options.scale_rounds = 10_000, 100
        options.shard_size = max(options.shard_size, 1000)
        options.skip_ray = True
        options.codec_threads = max(options.codec_threads, min(12, os.cpu_count() or 1))
    if options.quick:
        options.dim, options.head_hidden, options.samples = 64, 64, 40
        options.shard_size, options.rounds, options.loop_sites = 8, 1, 4
        options.scale_sites, options.scale_rounds, options.ray_rounds = 32, 2, 1
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda asked for, but torch sees no CUDA device")

    report: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": options.device},
        "settings": {k: v for k, v in vars(options).items() if k != "results"},
    }
    print(
        f"throughput: shard of {options.shard_size} sites × {options.samples} × {options.dim}-d, "
        f"{options.rounds} rounds"
    )
    report["throughput"] = throughput(options)
    t = report["throughput"]
    speedup = t["vectorised_site_rounds_per_s"] / t["one_at_a_time_site_rounds_per_s"]
    print(
        f"  vectorised {t['vectorised_site_rounds_per_s']:.1f} site-rounds/s, one at a time "
        f"{t['one_at_a_time_site_rounds_per_s']:.1f} (×{speedup:.2f})"
    )
    if not options.skip_ray:
        print("ray overhead: 2 shards, backend local vs ray")
        report["ray"] = ray_overhead(options)
        if report["ray"]:
            r = report["ray"]
            print(
                f"  rounds: local {r['local_round_seconds']:.1f} s, ray {r['ray_round_seconds']:.1f} s "
                f"(×{r['ray_round_overhead_ratio']:.2f}); "
                f"ray with start-up {r['ray_wall_seconds_with_startup']:.1f} s; "
                f"same result: {r['same_result']}"
            )
    if not options.skip_scale:
        print(
            f"scale: {options.scale_sites} sites × {options.scale_rounds} rounds, "
            f"participation {options.participation:g}"
        )
        report["scale"] = scale(options, options.scale_sites, options.scale_rounds)
        s = report["scale"]
        print(
            f"  {s['wall_seconds']:.0f} s wall, {s['site_rounds_per_s']:.1f} site-rounds/s, peak RSS "
            f"{s['peak_rss_bytes'] / 2**30:.2f} GiB, shard state {s['state_bytes'] / 2**30:.2f} GiB"
        )
        if options.gpu:
            print(f"  goal: under {GOAL_GPU_SECONDS} s → {'met' if s['wall_seconds'] < GOAL_GPU_SECONDS else 'missed'}")
    key = "p7_site_rounds_per_s_gpu" if options.device.startswith("cuda") else "p7_site_rounds_per_s_cpu"
    report[key] = t["vectorised_site_rounds_per_s"]
    if not options.device.startswith("cuda"):
        print(f"goal: ≥ {GOAL_CPU:g} site-rounds/s on 2 cores → {'met' if report[key] >= GOAL_CPU else 'missed'}")
    options.results.mkdir(parents=True, exist_ok=True)
    name = "p7_gpu.json" if options.device.startswith("cuda") else "p7.json"
    (options.results / name).write_text(json.dumps(report, indent=2) + "\n")
    if not options.quick:
        merge_latest(key, report[key])
    print(f"wrote {options.results / name}")


if __name__ == "__main__":
    main()
