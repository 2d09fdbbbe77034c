"""P3: embedding pass throughput (hash, decode, preprocess, encode, cache write) vs raw encode_image on
preprocessed tensors already in memory; alternating repetitions, median of the pair ratios.

The pass decodes through ``data.embed_pipeline.EmbedPipeline``: its decode worker is a persistent process,
started before timing (as in an agent, which keeps it for the whole run); ``--decoder dataloader`` measures
the default DataLoader instead, whose workers start with every pass.

    python bench/p3_embed.py             # ViT-B-32, 96 images, 9 raw/pass pairs of 32, batch 16, 1 decode worker
    python bench/p3_embed.py --quick     # tiny model, for tests
"""

from __future__ import annotations

import time

import _args

from fedmedclip.data.embed_pipeline import EmbedPipeline
from fedmedclip.experiment.machine import machine_info
from fedmedclip.experiment.perf.common import bench_backbone, bench_images, write_json
from fedmedclip.experiment.perf.embed import measure_embedding


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = _args.parser(__doc__ or "")
    args.add_argument("--images", type=int, default=96)
    args.add_argument("--reps", type=int, default=3)
    args.add_argument("--chunk", type=int, default=32, help="images per paired raw/pass measurement")
    args.add_argument("--batch-size", type=int, default=16)
    # One loader worker decodes the next batch while the encoder runs, as an agent's embedding pass would.
    args.add_argument("--num-workers", type=int, default=1)
    args.add_argument("--decoder", choices=("pipeline", "dataloader"), default="pipeline")
    options = args.parse_args(argv)
    _args.apply_quick(options)
    if options.quick:
        options.images, options.reps, options.batch_size, options.chunk, options.num_workers = 16, 1, 8, 8, 0
    started = time.perf_counter()
    with _args.work_dir(options.work) as work:
        images = bench_images(work, options.sites, options.images_per_site, options.image_size)
        paths = images.paths[-options.images :]
        backbone = bench_backbone(options.model, options.device)
        print(
            f"P3: {backbone.spec.model} (random init) on {backbone.device}, {len(paths)} images "
            f"({options.image_size}px), batch {options.batch_size}, {options.num_workers} workers ({options.decoder}), "
            f"{options.reps} rep(s)",
            flush=True,
        )
        pipeline = EmbedPipeline(backbone, num_workers=options.num_workers) if options.decoder == "pipeline" else None
        try:
            if pipeline is not None:
                pipeline.start()
            result = measure_embedding(
                backbone,
                paths,
                reps=options.reps,
                batch_size=options.batch_size,
                num_workers=options.num_workers,
                chunk=options.chunk,
                decoder=pipeline,
            )
        finally:
            if pipeline is not None:
                pipeline.close()
    result["machine"] = machine_info(backbone.device)
    result["seconds"] = time.perf_counter() - started
    write_json(options.results / "p3.json", result)
    print(
        f"P3: raw {result['raw_images_per_s']:.1f} img/s, pass {result['pass_images_per_s']:.1f} img/s, "
        f"efficiency {100 * float(result['p3_embed_efficiency']):.1f}% (median pair), encoder busy "
        f"{100 * float(result['encoder_busy_share_median']):.1f}% of the pass",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()
