"""``fedmedclip aggregator ...``: serve, and the operator's commands (which call the Admin service).

Heavy modules (grpc, SQLAlchemy, torch) are imported inside the commands, so that ``fedmedclip --help``
and the other services' commands do not pay for them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from aggregator_service.admin_client import AdminClient
    from aggregator_service.settings import AggregatorSettings

app = typer.Typer(
    help="The federation's aggregator: serve it, enrol sites, start runs, inspect and export FAM versions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sites_app = typer.Typer(help="Enrol, list and revoke hospital sites.", no_args_is_help=True)
runs_app = typer.Typer(help="Start, stop and inspect federated runs.", no_args_is_help=True)
versions_app = typer.Typer(help="List and export FAM versions.", no_args_is_help=True)
app.add_typer(sites_app, name="sites")
app.add_typer(runs_app, name="runs")
app.add_typer(versions_app, name="versions")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", envvar="FEDMEDCLIP_AGGREGATOR_CONFIG", help="YAML settings file.", show_default=False),
]
ServerOption = Annotated[
    str | None, typer.Option("--server", help="Aggregator address host:port (default: the configured host:port).")
]
InsecureOption = Annotated[
    bool | None,
    typer.Option("--insecure-loopback", help="Plaintext gRPC, allowed only on a loopback address.", show_default=False),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _settings(config: Path | None, **overrides: Any) -> AggregatorSettings:
    from aggregator_service.settings import AggregatorSettings, ConfigError

    try:
        return AggregatorSettings.load(config, **overrides)
    except ConfigError as exc:  # one line naming the settings, never their values (secrets)
        raise _fail(str(exc)) from None


def _client(config: Path | None, server: str | None, insecure: bool | None) -> AdminClient:
    from aggregator_service.admin_client import AdminClient, open_channel
    from aggregator_service.settings import ConfigError

    settings = _settings(config, insecure_loopback=insecure)
    try:
        return AdminClient(open_channel(settings, server), settings.require_admin_token())
    except ConfigError as exc:
        raise _fail(str(exc)) from exc


def _call(client: AdminClient, method: str, request: Any) -> Any:
    from aggregator_service.admin_client import AdminCallError

    try:
        return client.call(method, request)
    except AdminCallError as exc:
        raise _fail(str(exc), 1) from exc


def _when(stamp: Any) -> str:
    """A protobuf Timestamp as ISO text, or '-' when unset."""
    if stamp is None or (stamp.seconds == 0 and stamp.nanos == 0):
        return "-"
    return str(stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ"))  # protobuf times are UTC


def _console() -> Any:
    from fedmedclip.console import stdout_console  # tables whole in a pipe, fitted on a terminal

    return stdout_console()


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

    settings = _settings(
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
        raise _fail(str(exc)) from exc


# --- sites --------------------------------------------------------------------------------------------


@sites_app.command("add")
def sites_add(
    name: Annotated[str, typer.Argument(help="Site name: letters, digits, '-', '_', '.'; at most 64.")],
    description: Annotated[str, typer.Option(help="Free text, e.g. hospital and contact.")] = "",
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """Enrol a site and print its token. The token is shown once; only its hash is stored."""
    from fedmedclip.rpc.v1 import admin_pb2

    client = _client(config, server, insecure_loopback)
    response = _call(client, "EnrolSite", admin_pb2.EnrolSiteRequest(site=name, description=description))
    typer.secho(
        f"enrolled site {response.site.name!r}; its token follows. Store it now: it cannot be shown again.", err=True
    )
    typer.echo(response.token)


@sites_app.command("list")
def sites_list(
    config: ConfigOption = None, server: ServerOption = None, insecure_loopback: InsecureOption = None
) -> None:
    """Every enrolled site, revoked ones included."""
    from rich.table import Table

    from fedmedclip.rpc.v1 import admin_pb2

    response = _call(_client(config, server, insecure_loopback), "ListSites", admin_pb2.ListSitesRequest())
    table = Table("site", "enabled", "enrolled", "last seen", "software", "device", "description")
    for site in response.sites:
        table.add_row(
            site.name,
            "yes" if site.enabled else "[red]revoked[/]",
            _when(site.enrolled_at),
            _when(site.last_seen),
            site.software_version or "-",
            site.site_info.device or "-",
            site.description,
        )
    _console().print(table)


@sites_app.command("revoke")
def sites_revoke(
    name: Annotated[str, typer.Argument(help="The site to revoke.")],
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "revoked by operator",
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """Disable a site's token at once; its updates in open rounds are discarded."""
    from fedmedclip.rpc.v1 import admin_pb2

    _call(
        _client(config, server, insecure_loopback), "RevokeSite", admin_pb2.RevokeSiteRequest(site=name, reason=reason)
    )
    typer.echo(f"revoked site {name!r}")


# --- runs ---------------------------------------------------------------------------------------------


@runs_app.command("start")
def runs_start(
    run_config: Annotated[
        Path | None, typer.Option("--run-config", help="YAML/JSON run config (RunConfig fields).", show_default=False)
    ] = None,
    name: Annotated[str, typer.Option(help="Label shown in listings.")] = "",
    embed_dim: Annotated[int | None, typer.Option(min=1, help="FAM width D (512 for ViT-B-32).")] = None,
    rounds: Annotated[int | None, typer.Option(min=1, help="Number of rounds.")] = None,
    min_sites: Annotated[int | None, typer.Option(min=1, help="Quorum per round.")] = None,
    round_timeout: Annotated[float | None, typer.Option(min=0.001, help="Seconds a round stays open.")] = None,
    late_policy: Annotated[str | None, typer.Option(help="accept_until_quorum | reopen")] = None,
    weighting: Annotated[str | None, typer.Option(help="samples | uniform")] = None,
    model: Annotated[str | None, typer.Option(help="open_clip model name of the backbone.")] = None,
    weights: Annotated[str | None, typer.Option(help="Backbone weights tag or path; 'random' for none.")] = None,
    initial_version: Annotated[int, typer.Option(min=0, help="Start from this FAM version (0: fresh).")] = 0,
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """Start a run (refused while another run is running); prints the run id."""
    import yaml

    from fedmedclip.federation.run_config import RunConfig
    from fedmedclip.federation.serde import run_config_to_proto
    from fedmedclip.rpc.v1 import admin_pb2

    data: dict[str, Any] = {}
    if run_config is not None:
        try:
            loaded = yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise _fail(f"cannot read run config {run_config}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise _fail(f"run config {run_config} must be a mapping of RunConfig fields")
        data.update(loaded)
    flags = {
        "embed_dim": embed_dim,
        "rounds": rounds,
        "min_sites": min_sites,
        "round_timeout_s": round_timeout,
        "late_policy": late_policy,
        "weighting": weighting,
    }
    data.update({key: value for key, value in flags.items() if value is not None})
    if model is not None or weights is not None:
        backbone = dict(data.get("backbone") or {})
        if model is not None:
            backbone["model"] = model
        if weights is not None:
            backbone["weights"] = None if weights.lower() in ("", "none", "random") else weights
        data["backbone"] = backbone
    try:
        parsed = RunConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    request = admin_pb2.StartRunRequest(config=run_config_to_proto(parsed), name=name, initial_version=initial_version)
    response = _call(_client(config, server, insecure_loopback), "StartRun", request)
    typer.secho(f"started run {response.run_id} from FAM version {response.initial_version}", err=True)
    typer.echo(response.run_id)


@runs_app.command("stop")
def runs_stop(
    run_id: Annotated[str, typer.Argument(help="The run to stop.")],
    reason: Annotated[str, typer.Option(help="Recorded and sent to the sites.")] = "stopped by operator",
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """Stop a run: its open round is abandoned and sites get a done task."""
    from fedmedclip.rpc.v1 import admin_pb2

    request = admin_pb2.StopRunRequest(run_id=run_id, reason=reason)
    response = _call(_client(config, server, insecure_loopback), "StopRun", request)
    typer.echo(f"run {run_id}: {admin_pb2.RunState.Name(response.state).removeprefix('RUN_STATE_').lower()}")


@runs_app.command("status")
def runs_status(
    run_id: Annotated[str, typer.Argument(help="Run id; default: the most recent run.")] = "",
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the status as one JSON document (for scripts).")
    ] = False,
) -> None:
    """Rounds, per-site participation, bytes and aggregate metrics of a run, as tables (or JSON)."""
    from rich.table import Table

    from fedmedclip.rpc.v1 import admin_pb2

    status = _call(
        _client(config, server, insecure_loopback), "GetRunStatus", admin_pb2.GetRunStatusRequest(run_id=run_id)
    )
    if as_json:
        import json

        from google.protobuf.json_format import MessageToDict

        typer.echo(json.dumps(MessageToDict(status, preserving_proto_field_name=True)))
        return
    console = _console()
    state = admin_pb2.RunState.Name(status.state).removeprefix("RUN_STATE_").lower()
    console.print(
        f"run [bold]{status.run_id}[/] {status.name!r}: {state}, round {status.current_round}/{status.config.rounds}, "
        f"latest FAM version {status.latest_version}, min_sites {status.config.min_sites}"
        + (f" — {status.message}" if status.message else "")
    )
    rounds = Table("round", "state", "opened", "closed", "in → out", "accepted", "bytes", "metrics", title="rounds")
    sites = Table("round", "site", "participation", "samples", "bytes", "received", "note", title="participation")
    for item in status.rounds:
        accepted = [p for p in item.participants if p.state == admin_pb2.PARTICIPATION_STATE_ACCEPTED]
        rounds.add_row(
            str(item.round),
            admin_pb2.RoundState.Name(item.state).removeprefix("ROUND_STATE_").lower(),
            _when(item.opened_at),
            _when(item.closed_at),
            f"{item.input_version} → {item.output_version or '-'}",
            f"{len(accepted)}/{len(item.participants)}",
            str(sum(p.payload_bytes for p in accepted)),
            ", ".join(f"{key}={value:.4g}" for key, value in sorted(item.metrics.items())) or "-",
        )
        for part in item.participants:
            sites.add_row(
                str(item.round),
                part.site,
                admin_pb2.ParticipationState.Name(part.state).removeprefix("PARTICIPATION_STATE_").lower(),
                str(part.num_samples or "-"),
                str(part.payload_bytes or "-"),
                _when(part.received_at),
                part.message[:60],
            )
    console.print(rounds)
    console.print(sites)


@runs_app.command("list")
def runs_list(
    config: ConfigOption = None, server: ServerOption = None, insecure_loopback: InsecureOption = None
) -> None:
    """Runs, newest first."""
    from rich.table import Table

    from fedmedclip.rpc.v1 import admin_pb2

    response = _call(_client(config, server, insecure_loopback), "ListRuns", admin_pb2.ListRunsRequest())
    table = Table("run", "name", "state", "round", "latest version", "created", "finished")
    for run in response.runs:
        table.add_row(
            run.run_id,
            run.name,
            admin_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_").lower(),
            f"{run.current_round}/{run.config.rounds}",
            str(run.latest_version),
            _when(run.created_at),
            _when(run.finished_at),
        )
    _console().print(table)


# --- versions -----------------------------------------------------------------------------------------


def _resolve_run(client: AdminClient, run_id: str) -> str:
    from fedmedclip.rpc.v1 import admin_pb2

    if run_id:
        return run_id
    return str(_call(client, "GetRunStatus", admin_pb2.GetRunStatusRequest()).run_id)


@versions_app.command("list")
def versions_list(
    run_id: Annotated[str, typer.Argument(help="Run id; default: the most recent run.")] = "",
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """FAM versions of a run with their lineage (parent, round, contributing sites)."""
    from rich.table import Table

    from fedmedclip.rpc.v1 import admin_pb2

    client = _client(config, server, insecure_loopback)
    run = _resolve_run(client, run_id)
    response = _call(client, "ListVersions", admin_pb2.ListVersionsRequest(run_id=run))
    table = Table("version", "round", "parent", "bytes", "sha256", "created", "sites (samples)", title=f"run {run}")
    for version in response.versions:
        table.add_row(
            str(version.version),
            str(version.round),
            str(version.parent_version or "-"),
            str(version.size_bytes),
            version.sha256[:16],
            _when(version.created_at),
            ", ".join(f"{c.site} ({c.num_samples})" for c in version.contributions) or "-",
        )
    _console().print(table)


@versions_app.command("export")
def versions_export(
    version: Annotated[int, typer.Argument(min=1, help="The FAM version to export.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write into.")] = Path("."),
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """Write fam-v<N>.safetensors and fam-v<N>.manifest.json (lineage, digest, run config)."""
    import hashlib

    from google.protobuf.json_format import MessageToDict

    from aggregator_service.admin_client import AdminCallError
    from fedmedclip.rpc.v1 import admin_pb2

    client = _client(config, server, insecure_loopback)
    try:
        header, data = client.download("ExportVersion", admin_pb2.ExportVersionRequest(version=version))
    except AdminCallError as exc:
        raise _fail(str(exc), 1) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != header.sha256 or len(data) != header.total_bytes:
        raise _fail(f"download of version {version} is damaged: sha256 {digest}, expected {header.sha256}", 1)
    # The version's run and lineage come from the run's version list.
    listing = {}
    for run in _call(client, "ListRuns", admin_pb2.ListRunsRequest()).runs:
        versions = _call(client, "ListVersions", admin_pb2.ListVersionsRequest(run_id=run.run_id)).versions
        match = [v for v in versions if v.version == version]
        if match:
            listing = {"run": MessageToDict(run, preserving_proto_field_name=True), "version": match[0]}
            break
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / f"fam-v{version}.safetensors"
    manifest_path = out / f"fam-v{version}.manifest.json"
    _write_atomically(weights_path, data)
    manifest: dict[str, Any] = {"version": version, "format": "safetensors", "sha256": digest, "size_bytes": len(data)}
    if listing:
        record = listing["version"]
        manifest.update(
            run_id=record.run_id,
            round=record.round,
            parent_version=record.parent_version or None,
            created_at=_when(record.created_at),
            contributions=[
                {"site": c.site, "num_samples": c.num_samples, "payload_bytes": c.payload_bytes}
                for c in record.contributions
            ],
            run_config=listing["run"].get("config", {}),
        )
    _write_atomically(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    typer.echo(f"wrote {weights_path} and {manifest_path}")


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
