#!/usr/bin/env python3
"""P6: what record-level differential privacy costs on the synthetic proxy: ensemble accuracy at
ε ∈ {1, 3, 8} against non-private training (ε = ∞) after the same rounds, the ε each site achieved, and the
time per round against non-private training, measured side by side in one run (same data, splits, seeds).

    python bench/p6_dp.py            # ViT-B-32 width (D=512), 3 sites x 128 images, 10 rounds, 2 seeds
    python bench/p6_dp.py --quick    # tiny model, for tests

Each site calibrates its noise multiplier so that all rounds fit the target ε at δ = 1/(10·N) (dp-accounting,
RDP, Poisson sampling); the FAM trains by DP-SGD and the private head without noise (docs/design.md §3.15).
Results: stdout and ``bench/results/p6.json`` (key ``p6_dp_accuracy_cost_pt_eps8``: non-private minus ε = 8
accuracy, in points, mean over seeds; goal ≤ 3 pt).
"""

from __future__ import annotations

import itertools
import math
import statistics
import time

import _args
import torch

from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.experiment.machine import machine_info
from fedmedclip.experiment.perf.common import bench_backbone, bench_images, write_json
from fedmedclip.experiment.perf.upload import embed_set, split_sites
from fedmedclip.federation.simulation import RoundRecord, SimulationConfig, run_federation
from fedmedclip.privacy.config import PrivacyConfig
from fedmedclip.training.config import TrainConfig

GOAL_PT = 3.0


def _mean_accuracy(metrics: dict[str, dict[str, float]]) -> float:
    return sum(site["ensemble_acc"] for site in metrics.values()) / len(metrics)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = _args.parser(__doc__ or "")
    args.add_argument("--rounds", type=int, default=10)
    args.add_argument("--seeds", type=int, default=2, help="seeds (split + federation + noise) averaged")
    args.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    args.add_argument("--clip-norm", type=float, default=1.0, help="per-sample clip bound C")
    args.add_argument("--batch-size", type=int, default=256, help="expected Poisson batch (q = batch / N)")
    options = args.parse_args(argv)
    _args.apply_quick(options)
    if options.quick:
        options.rounds, options.seeds = min(options.rounds, 2), 1
    started = time.perf_counter()
    with _args.work_dir(options.work) as work:
        images = bench_images(work, options.sites, options.images_per_site, options.image_size)
        backbone = bench_backbone(options.model, options.device)
        print(
            f"P6: {backbone.spec.model} (random init, D={backbone.embed_dim}), {len(images.paths)} images "
            f"({options.sites} sites x {options.images_per_site}), {options.rounds} rounds, {options.seeds} "
            f"seed(s), ε ∈ {options.epsilons} and ∞",
            flush=True,
        )
        with EmbeddingCache(work / "cache") as cache:
            data = embed_set(backbone, images, cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small steps; both private and non-private runs use the same setting
    train = TrainConfig(head_hidden=32) if options.quick else TrainConfig()
    settings: list[float] = [math.inf, *options.epsilons]
    accuracy: dict[str, list[float]] = {_label(e): [] for e in settings}
    achieved: dict[str, list[float]] = {_label(e): [] for e in settings[1:]}
    seconds: dict[str, list[float]] = {_label(e): [] for e in settings}
    try:
        for seed in range(options.seeds):
            sites = split_sites(data, seed)
            for epsilon in settings:
                privacy = (
                    PrivacyConfig()
                    if math.isinf(epsilon)
                    else PrivacyConfig(
                        mode="record",
                        target_epsilon=epsilon,
                        clip_norm=options.clip_norm,
                        batch_size=options.batch_size,
                    )
                )
                marks = [time.perf_counter()]

                def mark(_: RoundRecord, marks: list[float] = marks) -> None:
                    marks.append(time.perf_counter())

                config = SimulationConfig(rounds=options.rounds, train=train, seed=seed, privacy=privacy)
                federation = run_federation(sites, backbone.logit_scale, config, on_round=mark)
                label = _label(epsilon)
                accuracy[label].append(_mean_accuracy(federation.final_metrics))
                seconds[label] += [b - a for a, b in itertools.pairwise(marks)]
                if label in achieved:
                    spent = [m["dp_epsilon"] for m in federation.rounds[-1].train_metrics.values()]
                    achieved[label].append(max(spent))
                print(
                    f"  seed {seed} ε={label}: accuracy {100 * accuracy[label][-1]:.1f}%, "
                    f"{statistics.median(seconds[label]):.2f} s/round",
                    flush=True,
                )
    finally:
        torch.set_num_threads(threads)
    base = statistics.fmean(accuracy["inf"])
    base_time = statistics.median(seconds["inf"])
    table: dict[str, dict[str, float | None]] = {
        label: {
            "accuracy": statistics.fmean(values),
            "accuracy_cost_pt": 100 * (base - statistics.fmean(values)),
            "epsilon_achieved": max(achieved[label]) if label in achieved else None,
            "seconds_per_round": statistics.median(seconds[label]),
            "time_ratio_vs_non_private": statistics.median(seconds[label]) / base_time,
        }
        for label, values in accuracy.items()
    }
    result: dict[str, object] = {
        "p6_dp_accuracy_cost_pt_eps8": table["8"]["accuracy_cost_pt"] if "8" in table else None,
        "goal_accuracy_cost_pt_eps8": GOAL_PT,
        "p6_dp_time_ratio_eps8": table["8"]["time_ratio_vs_non_private"] if "8" in table else None,
        "table": table,
        "per_seed_accuracy": accuracy,
        "rounds": options.rounds,
        "seeds": options.seeds,
        "clip_norm": options.clip_norm,
        "expected_batch": options.batch_size,
        "embed_dim": int(data.features.shape[1]),
        "train_images_per_site": [int(site.train[1].numel()) for site in split_sites(data, 0)],
        "machine": machine_info(backbone.device),
        "seconds": time.perf_counter() - started,
    }
    write_json(options.results / "p6.json", result)
    print("P6:  ε     accuracy   cost (pt)   ε achieved   s/round   × non-private")
    for label, values in accuracy.items():
        shown = f"{max(achieved[label]):.2f}" if label in achieved else "-"
        per_round = statistics.median(seconds[label])
        print(
            f"P6: {label:>4}  {100 * statistics.fmean(values):7.1f}%  {100 * (base - statistics.fmean(values)):+9.2f}  "
            f"{shown:>10}  {per_round:8.2f}  {per_round / base_time:6.2f}",
            flush=True,
        )
    return result


def _label(epsilon: float) -> str:
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


if __name__ == "__main__":
    main()
