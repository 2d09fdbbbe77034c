"""``fedmedclip simulate --config sim.yaml``: the CLI layer (progress lines, exit codes); ``fedmedclip/cli.py``
registers ``simulate`` as a command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer


def simulate(
    config: Annotated[Path, typer.Option("--config", "-c", help="Simulation YAML (see configs/simulate/).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: runs/<simulation name>).")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="Override the file's backend: 'local' or 'ray'.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Join this Ray cluster ('auto' or ray://host:10001).")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Keep trained sites' heads and residuals in files here, not in memory."),
    ] = None,
) -> None:
    """Simulate many sites with the system's own training, codec and aggregation code (docs/simulation.md).

    Writes results.json, results.md and plots of accuracy, bytes and the spread across sites per round.
    """
    from fedmedclip.console import console
    from fedmedclip.simulation.config import ConfigError, load_simulate_config
    from fedmedclip.simulation.report import write_reports
    from fedmedclip.simulation.runner import RoundSummary, run_simulation

    def show(summary: RoundSummary) -> None:
        accuracy = summary.accuracy.get("ensemble_acc")
        shown = f", mean accuracy {accuracy['mean']:.3f}" if accuracy else ""
        console.print(
            f"round {summary.round}: {summary.trained} trained, {summary.aggregated} aggregated, "
            f"{summary.upload_bytes / 1024:.0f} KiB, {summary.seconds:.1f} s{shown}"
        )

    try:
        settings = load_simulate_config(config)
        if backend is not None:
            if backend not in ("local", "ray"):
                raise ConfigError(f"--backend must be 'local' or 'ray', got {backend!r}")
            chosen: Literal["local", "ray"] = "ray" if backend == "ray" else "local"
            settings = settings.model_copy(update={"backend": chosen})
        if ray_address is not None:
            settings = settings.model_copy(
                update={"backend": "ray", "ray": settings.ray.model_copy(update={"address": ray_address})}
            )
        if state_dir is not None:
            settings = settings.model_copy(update={"state_dir": state_dir})
        out_dir = out or Path("runs") / settings.name
        outcome = run_simulation(settings, on_round=show)
        paths = write_reports(outcome, out_dir)
    except (ConfigError, ValueError, OSError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    rate = sum(r.trained for r in outcome.rounds) / max(outcome.wall_seconds, 1e-9)
    console.print(
        f"{outcome.wall_seconds:.1f} s, {rate:.1f} site-rounds/s; wrote {', '.join(str(p) for p in paths.values())}"
    )
