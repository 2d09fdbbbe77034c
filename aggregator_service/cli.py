"""``fedmedclip aggregator ...``: serve, and the operator's command groups (``admin_cli``: sites, runs,
versions, which call the Admin service).

Heavy modules (grpc, SQLAlchemy, torch) are imported inside the commands, so that ``fedmedclip --help``
and the other services' commands do not pay for them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from aggregator_service.admin_cli import runs_app, sites_app, versions_app
from aggregator_service.cli_options import ConfigOption, InsecureOption, fail, load_settings

app = typer.Typer(
    help="The federation's aggregator: serve it, enrol sites, start runs, inspect and export FAM versions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(sites_app, name="sites")
app.add_typer(runs_app, name="runs")
app.add_typer(versions_app, name="versions")


# --- serve --------------------------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535, help="gRPC port; 0 = any free port.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default 127.0.0.1).")] = None,
    insecure_loopback: InsecureOption = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy database URL.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", min=0, max=65535, help="Prometheus port; 0 = any free port.")
    ] = None,
) -> None:
    """Run the aggregator until SIGTERM/SIGINT (then drain in-flight calls and stop)."""
    from aggregator_service.logs import configure_logging
    from aggregator_service.server import RunningServer, serve_until_signalled
    from aggregator_service.settings import ConfigError

    settings = load_settings(
        config,
        port=port,
        host=host,
        insecure_loopback=insecure_loopback,
        database_url=database_url,
        metrics_port=metrics_port,
    )
    configure_logging(settings.log_format, settings.log_level)

    def ready(running: RunningServer) -> None:
        metrics = (
            ""
            if running.metrics_port is None
            else f" metrics http://{settings.metrics_host}:{running.metrics_port}/metrics"
        )
        # The one line scripts wait for; the log has the same event with more fields.
        typer.echo(f"aggregator listening on {running.address}{metrics}")

    try:
        serve_until_signalled(settings, ready)
    except ConfigError as exc:
        raise fail(str(exc)) from exc
