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
    from pydantic import ValidationError

    from inference_api.server import CONFIG_FILE_ENV, run
    from inference_api.settings import load_settings

    try:
        settings = load_settings(config)
    except (ValidationError, FileNotFoundError, ValueError) as error:
        typer.echo(f"error: invalid inference API settings:\n{error}", err=True)
        raise typer.Exit(2) from error
    if not is_loopback(host):
        if settings.allow_unauthenticated and not settings.api_keys:
            typer.echo(f"error: refusing to serve without API keys on non-loopback address {host}", err=True)
            raise typer.Exit(2)
        if not settings.tls and not settings.allow_plaintext:
            typer.echo(
                f"error: refusing plain HTTP on non-loopback address {host}: set tls_certfile and tls_keyfile, "
                "or allow_plaintext behind a TLS-terminating proxy",
                err=True,
            )
            raise typer.Exit(2)
    if config is not None:  # the worker processes read the same file
        os.environ[CONFIG_FILE_ENV] = str(config.resolve())
    sys.exit(run(settings, host, port, workers))


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
