"""The single ``fedmedclip`` command. Each group delegates to plain functions; nothing here does the work.

``app`` holds the core's commands; ``main`` adds the services' groups (``fedmedclip aggregator|agent|api``)
found through entry points, so that importing this module loads no service."""

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
    site_shift: Annotated[float, typer.Option(min=0.0, help="Per-site colour, contrast and noise shift.")] = 0.5,
    holdout: Annotated[bool, typer.Option(help="Also write a held-out test-only site (site-holdout).")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed; the same seed gives byte-identical images.")] = 0,
) -> None:
    """Generate a synthetic, heterogeneous multi-site lesion image set (deterministic from the seed)."""
    from fedmedclip.console import error as print_error
    from fedmedclip.console import progress_bar, say
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
        print_error(str(error))
        raise typer.Exit(2) from None
    say(f"wrote {summary.total_images} images for {len(summary.counts)} sites to {out_dir}")


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

    from fedmedclip.console import error as print_error
    from fedmedclip.console import print_table, say, warning
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
        report = run_demo(settings, say=say, warn=warning)
    except (ServiceError, ValueError, OSError) as error:
        print_error(f"demo failed: {error}")
        raise typer.Exit(1) from None
    weights_note = report.backbone["weights"] + ("" if report.backbone["pretrained"] else " (random init)")
    table = Table(title=f"FedMedCLIP demo: {model} {weights_note}, {rounds} rounds, held-out images via REST")
    for column in (
        "site",
        "images",
        "classes",
        "zero-shot acc",
        "head acc",
        "ensemble acc",
        "macro-F1",
        "ECE",
        "mean α",
    ):
        table.add_column(column)
    for name, score in report.sites.items():
        table.add_row(
            name,
            str(score.n_images),
            str(score.n_classes),
            f"{score.zero_shot_acc:.3f}",
            f"{score.head_acc:.3f}",
            f"{score.ensemble_acc:.3f}",
            f"{score.macro_f1:.3f}",
            f"{score.ece:.3f}",
            f"{score.mean_alpha:.2f}",
        )
    print_table(table)
    per_round = [max(r.values()) for r in report.upload_bytes_per_round if r]
    if per_round:
        say(f"upload per site per round: ≤ {max(per_round) / 1024:.1f} KiB")
    say(f"wall time {report.wall_time_s:.0f} s; report: {out_dir / 'report.md'} (plots beside it)")


def _register_experiment() -> None:
    from fedmedclip.experiment.cli import experiment

    app.command(help="Run the paper's protocol in-process: FedMedCLIP, baselines and ablations on the same splits.")(
        experiment
    )


_register_experiment()


def _register_backbone() -> None:
    from fedmedclip.model.pack_cli import app as backbone_app

    app.add_typer(backbone_app, name="backbone", help="Backbone packs: a CLIP model as checked files, loaded offline.")


_register_backbone()


def _register_simulate() -> None:
    from fedmedclip.simulation.cli import simulate

    app.command(
        help="Simulate thousands of sites with the system's own training, codec and aggregation code, "
        "vectorised per shard, locally or on Ray; writes results.json, results.md and plots (docs/simulation.md)."
    )(simulate)


_register_simulate()


ENTRY_POINT_GROUP = "fedmedclip.cli"


def _register_service_groups() -> None:
    """Add every command group installed under the ``fedmedclip.cli`` entry-point group (docs/design.md §2).

    The services declare theirs in pyproject.toml, so the core imports no service: the group's module is
    imported only here, when the ``fedmedclip`` command runs, and each imports only typer at the top.
    """
    from importlib.metadata import entry_points

    registered = {group.name for group in app.registered_groups}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda point: point.name):
        if point.name not in registered:
            app.add_typer(point.load(), name=point.name)


def main() -> None:
    _register_service_groups()
    app()
