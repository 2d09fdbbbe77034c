"""P2: local round compute vs FedAvg full fine-tuning, same images, same architecture (ViT-B-32, random
init): per round, and over 50 rounds including our embedding pass. Ours is timed for real over all rounds;
FedAvg's per-round cost is constant, so a few of its steps are timed and scaled (the output says so).

    python bench/p2_compute.py           # 256 images, 50 rounds, 2 FedAvg steps timed
    python bench/p2_compute.py --quick   # tiny model, for tests
"""

from __future__ import annotations

import time

import _args

from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.experiment.machine import machine_info
from fedmedclip.experiment.perf.common import bench_backbone, bench_images, write_json
from fedmedclip.experiment.perf.compute import measure_compute


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = _args.parser(__doc__ or "")
    args.add_argument("--images", type=int, default=256, help="training images of the site")
    args.add_argument("--rounds", type=int, default=50)
    args.add_argument("--fedavg-steps", type=int, default=2, help="FedAvg optimiser steps actually timed")
    args.add_argument("--batch-size", type=int, default=32)
    args.add_argument("--embed-batch-size", type=int, default=32)
    args.add_argument("--num-workers", type=int, default=1, help="image decoding workers of the embedding pass")
    options = args.parse_args(argv)
    _args.apply_quick(options)
    if options.quick:
        options.images, options.rounds, options.fedavg_steps, options.batch_size, options.num_workers = 16, 3, 1, 8, 0
    started = time.perf_counter()
    with _args.work_dir(options.work) as work:
        images = bench_images(work, options.sites, options.images_per_site, options.image_size)
        count = min(options.images, len(images.paths))
        backbone = bench_backbone(options.model, options.device)
        print(
            f"P2: {backbone.spec.model} (random init) on {backbone.device}, {count} images "
            f"({options.image_size}px), {options.rounds} rounds, batch {options.batch_size}; FedAvg: "
            f"{options.fedavg_steps} step(s) timed and scaled",
            flush=True,
        )
        with EmbeddingCache(work / "cache") as shared:
            result = measure_compute(
                backbone,
                images.paths[:count],
                images.labels[:count],
                images.classes,
                rounds=options.rounds,
                fedavg_steps=options.fedavg_steps,
                batch_size=options.batch_size,
                embed_batch_size=options.embed_batch_size,
                num_workers=options.num_workers,
                cache_into=shared,
            )
    result["machine"] = machine_info(backbone.device)
    result["seconds"] = time.perf_counter() - started
    write_json(options.results / "p2.json", result)
    ours, fedavg = result["ours"], result["fedavg"]
    assert isinstance(ours, dict) and isinstance(fedavg, dict)
    print(
        f"P2: ours {ours['round_s_median'] * 1000:.1f} ms/round (median of {options.rounds}), embedding pass "
        f"{ours['embed_pass_s']:.1f} s; FedAvg {fedavg['round_s']:.1f} s/round ({fedavg['timed']}); "
        f"speed-up per round {result['p2_round_speedup']:,.0f}x, over {options.rounds} rounds "
        f"{result['p2_50round_speedup']:,.0f}x",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()
