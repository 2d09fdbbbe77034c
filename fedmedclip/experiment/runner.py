"""Run a whole experiment: data → embeddings → every method and ablation on the same splits → reports.

The result types live in ``results`` and the writers in ``report``, so this module imports both and neither
imports it back.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.experiment.baselines import run_fedclip, run_local_head, run_zero_shot
from fedmedclip.experiment.config import ExperimentConfig, Preprocess
from fedmedclip.experiment.data import (
    PreparedData,
    embed_sites,
    load_labeled_sites,
    preprocess_variants,
)
from fedmedclip.experiment.fedavg import run_fedavg
from fedmedclip.experiment.machine import machine_info
from fedmedclip.experiment.ours import ablation_variant, main_variant, run_variant
from fedmedclip.experiment.report import write_reports
from fedmedclip.experiment.reporter import Reporter, SilentReporter
from fedmedclip.experiment.results import RESULTS_JSON, RESULTS_MD, ExperimentResult, MethodResult
from fedmedclip.model.backbone import BackboneSpec, default_device, load_backbone


def run_experiment(config: ExperimentConfig, out_dir: Path, reporter: Reporter | None = None) -> ExperimentResult:
    """Run every configured method and ablation, write ``results.json`` and ``results.md`` into ``out_dir``."""
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    labeled = load_labeled_sites(config, out_dir, reporter)
    device = default_device() if config.backbone.device == "auto" else config.backbone.device
    prepared: dict[Preprocess, PreparedData] = {}
    with EmbeddingCache(config.embedding.cache_dir or out_dir / "cache") as cache:
        for preprocess in preprocess_variants(config):
            spec = BackboneSpec(config.backbone.model, config.backbone.weights, preprocess, config.backbone.seed)
            backbone = load_backbone(spec, device)
            reporter.message(f"backbone: {spec.describe()} on {backbone.device}")
            prepared[preprocess] = embed_sites(backbone, labeled, config, cache, reporter)
    main = prepared[config.backbone.preprocess]
    methods: list[MethodResult] = []
    for key in config.methods:
        reporter.message(f"method: {key}")
        if key == "zero_shot":
            methods.append(run_zero_shot(main))
        elif key == "local_head":
            methods.append(run_local_head(main, config.federation, reporter))
        elif key == "fedclip":
            methods.append(run_fedclip(main, config.federation, reporter))
        elif key == "fedavg":
            methods.append(run_fedavg(main, config, reporter))
        else:
            variant = main_variant(config.federation, config.backbone.preprocess)
            methods.append(run_variant(main, variant, config.federation, reporter))
    for ablation in config.ablations:
        reporter.message(f"ablation: {ablation.name}")
        variant = ablation_variant(ablation, config.federation, config.backbone.preprocess)
        data = prepared[variant.preprocess]
        methods.append(run_variant(data, variant, config.federation, reporter))

    result = ExperimentResult(
        config=config,
        backbone=main.backbone.spec.describe(),
        device=str(main.backbone.device),
        embed_dim=main.backbone.embed_dim,
        sites={site.name: site.split_sizes() for site in main.sites},
        holdout={main.holdout.name: main.holdout.split_sizes()["test"]} if main.holdout else None,
        methods=methods,
        embedding={
            preprocess: {"seconds": data.embed_seconds, "computed": data.computed, "skipped": _skips(data)}
            for preprocess, data in prepared.items()
        },
        machine=machine_info(main.backbone.device),
        wall_seconds=time.perf_counter() - started,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=list(labeled.notes),
    )
    write_reports(result, out_dir)
    return result


def _skips(data: PreparedData) -> dict[str, int]:
    return {name: len(items) for name, items in data.skipped.items()}


__all__ = ["RESULTS_JSON", "RESULTS_MD", "ExperimentResult", "run_experiment"]
