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
    out_dir: Annotated[Path, typer.Option(help="Working folder for data, cache and results.")] = Path("demo-output"),
    model: Annotated[str, typer.Option(help="open_clip model name.")] = "ViT-B-32",
    weights: Annotated[str, typer.Option(help="Pretrained tag, weights file/dir, or 'random'.")] = "openai",
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 5,
    sites: Annotated[int, typer.Option(min=1, help="Synthetic sites.")] = 3,
    images_per_site: Annotated[int, typer.Option(min=10, help="Images per site.")] = 120,
) -> None:
    """Run a federation of synthetic sites in one process and print per-site accuracies."""
    from fedmedclip.demo_inprocess import DemoSettings, run_demo

    run_demo(
        DemoSettings(
            out_dir=out_dir, model=model, weights=weights, rounds=rounds, sites=sites, images_per_site=images_per_site
        )
    )


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
