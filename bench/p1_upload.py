"""P1: bytes uploaded per site per round (masked vs dense fp32 vs reference fp16+zlib vs whole CLIP), and
the accuracy cost of masked vs dense updates on the synthetic proxy (same data, splits and seeds).

    python bench/p1_upload.py            # ViT-B-32 width (D=512), 3 sites x 128 images, 20 rounds, 8 seeds
    python bench/p1_upload.py --quick    # tiny model, for tests
"""

from __future__ import annotations

import time

import _args
import torch

from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.experiment.machine import machine_info
from fedmedclip.experiment.perf.common import bench_backbone, bench_images, write_json
from fedmedclip.experiment.perf.upload import embed_set, measure_upload
from fedmedclip.training.config import TrainConfig


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = _args.parser(__doc__ or "")
    args.add_argument("--rounds", type=int, default=20)
    args.add_argument("--seeds", type=int, default=8, help="seeds (split + federation) averaged for the cost")
    options = args.parse_args(argv)
    _args.apply_quick(options)
    if options.quick:
        options.rounds, options.seeds = min(options.rounds, 2), 1
    started = time.perf_counter()
    with _args.work_dir(options.work) as work:
        images = bench_images(work, options.sites, options.images_per_site, options.image_size)
        backbone = bench_backbone(options.model, options.device)
        print(
            f"P1: {backbone.spec.model} (random init, D={backbone.embed_dim}), {len(images.paths)} images "
            f"({options.sites} sites x {options.images_per_site}, {options.image_size}px), "
            f"{options.rounds} rounds, {options.seeds} seed(s)",
            flush=True,
        )
        with EmbeddingCache(work / "cache") as cache:
            data = embed_set(backbone, images, cache)
        # The federation is many small steps: one thread avoids hand-off stalls on a busy CPU. Bytes and
        # accuracy do not depend on it, and both the masked and the dense runs use the same setting.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        train = TrainConfig(head_hidden=32) if options.quick else TrainConfig()
        try:
            result = measure_upload(backbone, data, options.rounds, list(range(options.seeds)), train=train)
        finally:
            torch.set_num_threads(threads)
    result["machine"] = machine_info(backbone.device)
    result["seconds"] = time.perf_counter() - started
    write_json(options.results / "p1.json", result)
    sizes = result["bytes_per_site_round"]
    assert isinstance(sizes, dict)
    print(
        f"P1: masked {sizes['masked_max'] / 1024:.1f} KiB (worst) / {sizes['masked_mean'] / 1024:.1f} KiB (mean), "
        f"dense fp32 {sizes['dense_fp32_mean'] / 1024:.1f} KiB, reference fp16+zlib "
        f"{sizes['reference_fp16_zlib'] / 1024:.1f} KiB, whole CLIP {sizes['fedavg_full_clip_fp32'] / 1e6:.1f} MB; "
        f"accuracy cost {result['p1_accuracy_cost_pt']:+.2f} pt",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()
