"""What the aggregator's commands share: the settings, server and loopback options, and one error line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from aggregator_service.settings import AggregatorSettings

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="FEDMEDCLIP_AGGREGATOR_CONFIG",
        # Not shown: rich cuts the 28-character name in the narrow help column of `serve` and `runs start`.
        show_envvar=False,
        help="YAML settings file (or the environment variable named in docs/aggregator.md).",
        show_default=False,
    ),
]
ServerOption = Annotated[
    str | None, typer.Option("--server", help="Aggregator address host:port (default: the configured host:port).")
]
InsecureOption = Annotated[
    bool | None,
    typer.Option("--insecure-loopback", help="Plaintext gRPC, allowed only on a loopback address.", show_default=False),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def load_settings(config: Path | None, **overrides: Any) -> AggregatorSettings:
    from aggregator_service.settings import AggregatorSettings, ConfigError

    try:
        return AggregatorSettings.load(config, **overrides)
    except ConfigError as exc:  # one line naming the settings, never their values (secrets)
        raise fail(str(exc)) from None
