"""Not a test: per-round time of the agent with the embedding cache vs without it, on the same data.

A round without the cache pays the frozen backbone over every image (decode, preprocess, encode) before the
FAM + head steps; with it, the round hashes the files, reads the vectors from SQLite and trains. Both sides run
the agent's own code (``hospital_agent.trainer``), alternating, on one synthetic site.

    HF_HUB_OFFLINE=1 python -m tests.agent.measure_round_time                       # tiny backbone, 64 px
    HF_HUB_OFFLINE=1 python -m tests.agent.measure_round_time --model ViT-B-32 --image-size 224

Prints one JSON object (medians in seconds, and the ratio).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.data.imagefolder import scan_imagefolder
from fedmedclip.data.synth import SynthConfig, generate
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.run_config import BackboneRef, RunConfig
from fedmedclip.model.backbone import load_backbone
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.training.config import TrainConfig
from hospital_agent.trainer import embed_site, resolve_device, run_templates, train_round


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        summary = generate(
            SynthConfig(sites=1, images_per_site=args.images, image_size=args.image_size, label_skew=5.0), base / "d"
        )
        images = scan_imagefolder(summary.site_dir(summary.training_sites[0]))
        backbone = load_backbone(BackboneRef(args.model, args.weights).to_spec(), device)
        config = RunConfig(
            embed_dim=backbone.embed_dim,
            train=TrainConfig(local_epochs=1),
            codec=CodecConfig(compression=args.compression),
        )
        prototypes = backbone.class_prototypes(images.classes, run_templates(config))
        fam = fam_state(build_fam(config.embed_dim))

        def one_round(cache: EmbeddingCache | None) -> float:
            started = time.perf_counter()
            site = embed_site(backbone, images, cache, site="m", split_seed=0, batch_size=64, num_workers=args.workers)
            train_round(
                site,
                prototypes,
                backbone.logit_scale,
                config,
                round_number=1,
                global_fam=fam,
                head=None,
                residual=None,
                seed=0,
                device=device,
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started

        with EmbeddingCache(base / "cache") as cache:
            cold = one_round(cache)  # fills the cache: what the first round (or `agent embed`) costs
            cached, uncached = [], []
            for _ in range(args.rounds):
                cached.append(one_round(cache))
                uncached.append(one_round(None))
    with_cache, without_cache = statistics.median(cached), statistics.median(uncached)
    return {
        "model": args.model,
        "device": str(device),
        "images": len(images.records),
        "image_size": args.image_size,
        "rounds_measured": args.rounds,
        "first_round_filling_cache_s": round(cold, 4),
        "round_with_cache_s": round(with_cache, 4),
        "round_without_cache_s": round(without_cache, 4),
        "speedup": round(without_cache / with_cache, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fedmedclip-tiny")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compression", default="zstd", choices=["zstd", "zlib", "none"])
    print(json.dumps(measure(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
