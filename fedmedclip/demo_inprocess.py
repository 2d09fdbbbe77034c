"""The in-process demo: synthetic sites, cached embeddings, a few federated rounds, a results table.

It runs exactly the training, codec and aggregation code the services use, in one process. The multi-process
demo with the real services replaces it once they exist (issue "deploy and demo").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from fedmedclip.console import console, progress_bar
from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.data.sites import embed_imagefolder_site
from fedmedclip.data.synth import SynthConfig, generate
from fedmedclip.federation.simulation import RoundRecord, SimulationConfig, SiteTensors, run_federation
from fedmedclip.model.backbone import Backbone, BackboneSpec, WeightsUnavailableError, load_backbone


@dataclass(frozen=True)
class DemoSettings:
    out_dir: Path
    model: str = "ViT-B-32"
    weights: str = "openai"
    rounds: int = 5
    sites: int = 3
    images_per_site: int = 120
    seed: int = 0


def _load_backbone_or_fallback(settings: DemoSettings) -> Backbone:
    try:
        return load_backbone(BackboneSpec(settings.model, settings.weights))
    except WeightsUnavailableError as error:
        console.print(f"[bold red]WARNING: {error}[/]")
        console.print(
            f"[bold red]WARNING: falling back to a RANDOM-INIT {settings.model}: the system runs end to "
            "end, but accuracies say nothing about pretrained CLIP.[/]"
        )
        return load_backbone(BackboneSpec(settings.model, None, seed=settings.seed))


def run_demo(settings: DemoSettings) -> dict[str, dict[str, float]]:
    data_dir = settings.out_dir / "synth"
    with progress_bar("generating synthetic sites") as update:
        generate(
            SynthConfig(sites=settings.sites, images_per_site=settings.images_per_site, seed=settings.seed),
            data_dir,
            progress=update,
        )
    backbone = _load_backbone_or_fallback(settings)
    console.print(f"backbone: {backbone.spec.describe()} on {backbone.device}")
    sites: list[SiteTensors] = []
    with EmbeddingCache(settings.out_dir / "cache") as cache:
        for root in sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name.startswith("site-")):
            with progress_bar(f"embedding {root.name}") as update:
                site = embed_imagefolder_site(backbone, root, cache, split_seed=settings.seed, progress=update)
            sites.append(
                SiteTensors(
                    site.name,
                    site.classes,
                    backbone.class_prototypes(site.classes),
                    site.part("train"),
                    site.part("test"),
                )
            )

    def report(record: RoundRecord) -> None:
        accs = ", ".join(f"{name} {m['ensemble_acc']:.2f}" for name, m in record.eval_metrics.items())
        kib = sum(record.upload_bytes.values()) / max(len(record.upload_bytes), 1) / 1024
        console.print(
            f"round {record.round_index + 1}/{settings.rounds}: ensemble acc {accs}; upload {kib:.1f} KiB per site"
        )

    result = run_federation(
        sites, backbone.logit_scale, SimulationConfig(rounds=settings.rounds, seed=settings.seed), on_round=report
    )
    table = Table(
        title=f"FedMedCLIP in-process demo: {len(sites)} sites, {settings.rounds} rounds, held-out test split"
    )
    for column in ("site", "classes", "zero-shot acc", "head acc", "ensemble acc", "macro-F1", "mean α"):
        table.add_column(column)
    for tensors in sites:
        m = result.final_metrics[tensors.name]
        table.add_row(
            tensors.name,
            str(len(tensors.classes)),
            f"{m['zero_shot_acc']:.3f}",
            f"{m.get('head_acc', 0):.3f}",
            f"{m['ensemble_acc']:.3f}",
            f"{m['macro_f1']:.3f}",
            f"{m['mean_alpha']:.2f}",
        )
    console.print(table)
    return result.final_metrics
