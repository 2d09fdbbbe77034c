"""``fedmedclip experiment --config exp.yaml``: the CLI layer (progress bars, tables, exit codes).

``experiment`` is a plain typer command function; ``fedmedclip/cli.py`` registers it with
``app.command()(experiment)``. ``python -m fedmedclip.experiment`` runs it on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer

ProgressCallback = Callable[[int, int], None]


class ConsoleReporter:
    """Sends the harness's messages and progress to the shared rich console (stderr)."""

    def message(self, text: str) -> None:
        from fedmedclip.console import console

        console.print(text)

    def progress(self, description: str) -> AbstractContextManager[ProgressCallback]:
        from fedmedclip.console import progress_bar

        return progress_bar(description)


def experiment(
    config: Annotated[Path, typer.Option("--config", "-c", help="Experiment YAML (see configs/experiments/).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: runs/<experiment name>).")
    ] = None,
) -> None:
    """Run FedMedCLIP and the baselines on the same splits and print the paper-style table."""
    from pydantic import ValidationError

    from fedmedclip.console import error as print_error
    from fedmedclip.console import print_table, say
    from fedmedclip.data.imagefolder import DatasetError
    from fedmedclip.experiment.config import ConfigError, load_config
    from fedmedclip.experiment.report import build_tables, to_rich
    from fedmedclip.experiment.runner import RESULTS_JSON, RESULTS_MD, run_experiment
    from fedmedclip.model.backbone import WeightsUnavailableError

    try:
        settings = load_config(config)
        out_dir = out or Path("runs") / settings.name
        result = run_experiment(settings, out_dir, ConsoleReporter())
    except (ConfigError, DatasetError, WeightsUnavailableError, ValidationError, ValueError, OSError) as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    # The tables go to stdout (the report): whole in a pipe, fitted on a terminal; messages went to stderr.
    for spec in build_tables(result):
        print_table(to_rich(spec))
    say(f"wrote {out_dir / RESULTS_JSON} and {out_dir / RESULTS_MD}")


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(experiment)
    app()
