"""P1: bytes a site uploads per round, and what masking costs in accuracy.

Four uploads side by side for the same FAM width: our masked update (top-rho rows, int8, compressed, error
feedback), the dense fp32 FAM update, the reference's whole FAM in fp16 + zlib, and a whole CLIP (FedAvg).
Accuracy: the same federation (same data, split and seed) with masked and with dense fp32 updates; the
cost is dense minus masked mean ensemble accuracy, in points, averaged over seeds, each seed with its own
split (the evaluation sets are small, so one seed's difference is a handful of images).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedmedclip.data.cache import EmbeddingCache, embed_images
from fedmedclip.data.splits import split_indices
from fedmedclip.experiment.fedavg import model_upload_bytes
from fedmedclip.experiment.perf.common import ImageSet
from fedmedclip.federation.codec import CodecConfig, encode_dense_reference
from fedmedclip.federation.simulation import DENSE_FP32, SimulationConfig, SiteTensors, run_federation
from fedmedclip.model.backbone import Backbone
from fedmedclip.training.config import TrainConfig

GOAL_BYTES = 128 * 1024
GOAL_ACCURACY_PT = 0.5


@dataclass(frozen=True)
class EmbeddedSet:
    """The benchmark images embedded once; each seed splits them anew."""

    names: list[str]
    classes: list[str]
    prototypes: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor
    site_of: list[str]


def embed_set(backbone: Backbone, images: ImageSet, cache: EmbeddingCache | None) -> EmbeddedSet:
    embedded = embed_images(backbone, images.paths, cache)
    return EmbeddedSet(
        names=list(images.sites),
        classes=images.classes,
        prototypes=backbone.class_prototypes(images.classes),
        features=embedded.features,
        labels=torch.tensor([images.labels[i] for i in embedded.kept_indices]),
        site_of=[images.paths[i].parent.parent.name for i in embedded.kept_indices],
    )


def split_sites(data: EmbeddedSet, seed: int) -> list[SiteTensors]:
    """Each site split 60/20/20 with ``seed``; evaluation on validation + test together (more images, a
    finer accuracy resolution; nothing is selected on them)."""
    sites = []
    for name in data.names:
        rows = torch.tensor([i for i, site in enumerate(data.site_of) if site == name])
        split = split_indices(data.labels[rows].tolist(), seed=seed)
        train, held = rows[split.train], rows[split.val + split.test]
        sites.append(
            SiteTensors(
                name,
                data.classes,
                data.prototypes,
                (data.features[train], data.labels[train]),
                (data.features[held], data.labels[held]),
            )
        )
    return sites


def measure_upload(
    backbone: Backbone,
    data: EmbeddedSet,
    rounds: int,
    seeds: Sequence[int],
    codec: CodecConfig | None = None,
    train: TrainConfig | None = None,
) -> dict[str, Any]:
    codec = codec or CodecConfig()
    train = train or TrainConfig()
    scale = backbone.logit_scale
    masked_bytes: list[int] = []
    dense_bytes: list[int] = []
    masked_acc: list[float] = []
    dense_acc: list[float] = []
    reference_bytes = 0
    evaluated = 0
    for seed in seeds:
        # Each seed draws its own split, FAM and head initialisation and batch order; masked and dense
        # share all of them, so the per-seed difference isolates the update encoding.
        sites = split_sites(data, seed)
        evaluated += int(sum(site.evaluation[1].numel() for site in sites))
        masked = run_federation(sites, scale, SimulationConfig(rounds=rounds, train=train, codec=codec, seed=seed))
        dense = run_federation(sites, scale, SimulationConfig(rounds=rounds, train=train, codec=DENSE_FP32, seed=seed))
        masked_bytes += [size for record in masked.rounds for size in record.upload_bytes.values()]
        dense_bytes += [size for record in dense.rounds for size in record.upload_bytes.values()]
        masked_acc.append(_mean_accuracy(masked.final_metrics))
        dense_acc.append(_mean_accuracy(dense.final_metrics))
        # The reference sends the whole (trained) FAM each round; its size barely depends on the values.
        reference_bytes = max(reference_bytes, len(encode_dense_reference(masked.global_fam)))
    clip_bytes = model_upload_bytes(backbone.model)
    masked_max = max(masked_bytes)
    costs = [100 * (d - m) for d, m in zip(dense_acc, masked_acc, strict=True)]
    cost_pt = sum(costs) / len(costs)
    spread = statistics.stdev(costs) / math.sqrt(len(costs)) if len(costs) > 1 else None
    return {
        "p1_upload_bytes": masked_max,
        "p1_accuracy_cost_pt": cost_pt,
        "goal_upload_bytes": GOAL_BYTES,
        "goal_accuracy_cost_pt": GOAL_ACCURACY_PT,
        "codec": codec.to_dict(),
        "embed_dim": int(data.features.shape[1]),
        "bytes_per_site_round": {
            "masked_max": masked_max,
            "masked_mean": sum(masked_bytes) / len(masked_bytes),
            "dense_fp32_mean": sum(dense_bytes) / len(dense_bytes),
            "reference_fp16_zlib": reference_bytes,
            "fedavg_full_clip_fp32": clip_bytes,
        },
        "ratios": {
            "dense_fp32_over_masked": (sum(dense_bytes) / len(dense_bytes)) / masked_max,
            "reference_over_masked": reference_bytes / masked_max,
            "full_clip_over_masked": clip_bytes / masked_max,
        },
        "accuracy": {
            "masked_per_seed": masked_acc,
            "dense_per_seed": dense_acc,
            "cost_pt_per_seed": costs,
            "cost_pt_standard_error": spread,
            "evaluation_images_per_seed": evaluated // len(seeds),
        },
        "rounds": rounds,
        "seeds": list(seeds),
        "sites": len(data.names),
        "images": int(data.labels.numel()),
    }


def _mean_accuracy(metrics: dict[str, dict[str, float]]) -> float:
    return sum(site["ensemble_acc"] for site in metrics.values()) / len(metrics)
