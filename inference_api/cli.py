"""``fedmedclip api …`` (also ``python -m inference_api …``). Heavy imports happen inside the commands, so
that the umbrella CLI stays quick to start."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fedmedclip.netaddr import is_loopback

app = typer.Typer(
    name="api",
    help="The inference API: each site's personalised classifier over REST, and a page for clinicians.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one (the URL is printed).")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes sharing the port; each loads the backbone once (its own copy in memory).",
        ),
    ] = 1,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML settings file; FEDMEDCLIP_API_* environment variables override it.",
            envvar="FEDMEDCLIP_API_CONFIG_FILE",
        ),
    ] = None,
) -> None:
    """Serve the API until SIGINT/SIGTERM (in-flight requests finish first)."""
    from fedmedclip.model.backbone import WeightsUnavailableError
    from inference_api.server import CONFIG_FILE_ENV, prepare, run
    from inference_api.settings import ConfigError, load_settings

    try:
        settings = load_settings(config)
    except ConfigError as error:
        raise _fail(str(error)) from None
    if not is_loopback(host):
        if settings.allow_unauthenticated and not settings.api_keys:
            raise _fail(f"refusing to serve without API keys on non-loopback address {host}")
        if not settings.tls and not settings.allow_plaintext:
            raise _fail(
                f"refusing plain HTTP on non-loopback address {host}: set tls_certfile and tls_keyfile, "
                "or allow_plaintext behind a TLS-terminating proxy"
            )
    try:
        backbone = prepare(settings)
    except (WeightsUnavailableError, ValueError) as error:
        raise _fail(f"cannot load the backbone: {error}") from None
    if config is not None:  # the worker processes read the same file
        os.environ[CONFIG_FILE_ENV] = str(config.resolve())
    sys.exit(run(settings, host, port, backbone, workers))


def _fail(message: str) -> typer.Exit:
    """One plain line on stderr and exit status 1, as the aggregator and the agent refuse to start."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@app.command("hash-key")
def hash_key_command(
    key: Annotated[
        str | None, typer.Option(help="Hash this existing key instead of generating one (prefer stdin: '-').")
    ] = None,
) -> None:
    """Generate a new API key and print it with the sha256 to put in the settings (the key is shown once)."""
    from inference_api.keys import generate_key, hash_key

    if key == "-":
        key = sys.stdin.readline().strip()
    new = key is None
    key = key or generate_key()
    if new:
        typer.echo(f"key:    {key}")
    typer.echo(f"sha256: {hash_key(key)}")
