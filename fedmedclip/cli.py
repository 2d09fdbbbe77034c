"""The single ``fedmedclip`` command. Each group delegates to plain functions; nothing here does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedmedclip import __version__

app = typer.Typer(
    name="fedmedclip",
    help="Federated CLIP for medical image classification: the aggregator, hospital agent and inference API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fedmedclip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """FedMedCLIP command line."""


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write site-1/, site-2/... ImageFolder trees into.")],
    sites: Annotated[int, typer.Option(min=1, help="Number of training sites.")] = 3,
    images_per_site: Annotated[int, typer.Option(min=4, help="Images per site.")] = 120,
    image_size: Annotated[int, typer.Option(min=16, help="Image side in pixels.")] = 96,
    difficulty: Annotated[float, typer.Option(min=0.0, max=1.0, help="Class overlap: 0 easy, 1 very hard.")] = 0.4,
    label_skew: Annotated[float, typer.Option(min=0.0, help="Dirichlet concentration; smaller = more skew.")] = 0.5,
    site_shift: Annotated[float, typer.Option(min=0.0, help="Strength of per-site colour/contrast/noise shift.")] = 0.5,
    holdout: Annotated[bool, typer.Option(help="Also write a held-out test-only site (site-holdout).")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed; the same seed gives byte-identical images.")] = 0,
) -> None:
    """Generate a synthetic, heterogeneous multi-site lesion image set (deterministic from the seed)."""
    from fedmedclip.console import console, progress_bar
    from fedmedclip.data.synth import SynthConfig, generate

    try:
        config = SynthConfig(
            sites=sites,
            images_per_site=images_per_site,
            image_size=image_size,
            difficulty=difficulty,
            label_skew=label_skew,
            site_shift=site_shift,
            holdout_site=holdout,
            seed=seed,
        )
        with progress_bar("generating") as update:
            summary = generate(config, out_dir, progress=update)
    except (ValueError, OSError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    console.print(f"wrote {summary.total_images} images for {len(summary.counts)} sites to {out_dir}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="Working folder: data, databases, logs, bundles, report.json.")] = Path(
        "demo-output"
    ),
    model: Annotated[str, typer.Option(help="open_clip model name.")] = "ViT-B-32",
    weights: Annotated[str, typer.Option(help="Pretrained tag, weights file/dir, or 'random'.")] = "openai",
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 3,
    sites: Annotated[int, typer.Option(min=1, max=8, help="Synthetic hospital sites (one agent process each).")] = 3,
    images_per_site: Annotated[
        int, typer.Option(min=20, help="Synthetic images per site (20% of them are the held-out test images).")
    ] = 400,
    image_size: Annotated[int, typer.Option(min=32, help="Synthetic image side in pixels.")] = 96,
    timeout: Annotated[float, typer.Option(min=10, help="Seconds the run may take before the demo gives up.")] = 900,
) -> None:
    """Run the whole federation on this machine: aggregator, one agent per site and the inference API, each a
    real process; then predict every site's held-out images over REST and print the results."""
    from rich.table import Table

    from fedmedclip.console import console
    from fedmedclip.demo.orchestrate import DemoSettings, run_demo
    from fedmedclip.demo.processes import ServiceError

    settings = DemoSettings(
        out_dir=out_dir,
        model=model,
        weights=weights,
        rounds=rounds,
        sites=sites,
        images_per_site=images_per_site,
        image_size=image_size,
        timeout_s=timeout,
    )
    try:
        report = run_demo(settings, say=console.print, warn=lambda text: console.print(f"[bold red]WARNING:[/] {text}"))
    except (ServiceError, ValueError, OSError) as error:
        console.print(f"[red]demo failed:[/] {error}")
        raise typer.Exit(1) from error
    weights_note = report.backbone["weights"] + ("" if report.backbone["pretrained"] else " (random init)")
    table = Table(title=f"FedMedCLIP demo: {model} {weights_note}, {rounds} rounds, held-out images via REST")
    # Short headers: the table must fit 80 columns when stdout is not a terminal (the rest is in report.md).
    for column in ("site", "n", "zero-shot", "head", "ensemble", "F1", "ECE", "α"):
        table.add_column(column)
    for name, score in report.sites.items():
        table.add_row(
            name,
            str(score.n_images),
            f"{score.zero_shot_acc:.3f}",
            f"{score.head_acc:.3f}",
            f"{score.ensemble_acc:.3f}",
            f"{score.macro_f1:.3f}",
            f"{score.ece:.3f}",
            f"{score.mean_alpha:.2f}",
        )
    console.print(table)
    per_round = [max(r.values()) for r in report.upload_bytes_per_round if r]
    if per_round:
        console.print(f"upload per site per round: ≤ {max(per_round) / 1024:.1f} KiB")
    console.print(f"wall time {report.wall_time_s:.0f} s; report: {out_dir / 'report.md'} (plots beside it)")


def _register_experiment() -> None:
    from fedmedclip.experiment.cli import experiment

    app.command(help="Run the paper's protocol in-process: FedMedCLIP, baselines and ablations on the same splits.")(
        experiment
    )


_register_experiment()


def _register_service_groups() -> None:
    """Each service owns its command group; their modules import only typer at the top, so this is cheap."""
    from aggregator_service.cli import app as aggregator_app
    from hospital_agent.cli import app as agent_app
    from inference_api.cli import app as api_app

    app.add_typer(aggregator_app, name="aggregator", help="The aggregator: rounds, sites and FAM versions over gRPC.")
    app.add_typer(
        agent_app, name="agent", help="The hospital agent: train locally, push masked updates, publish bundles."
    )
    app.add_typer(api_app, name="api", help="The inference API: serve each site's classifier over REST.")


_register_service_groups()


def main() -> None:
    app()
