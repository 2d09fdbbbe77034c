"""``fedmedclip aggregator sites|runs|versions ...``: the operator's commands, each one call (or a few) of
the Admin service through ``AdminClient``, printed as tables or plain lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from aggregator_service.cli_options import ConfigOption, InsecureOption, ServerOption, fail, load_settings

if TYPE_CHECKING:
    from aggregator_service.admin_client import AdminClient

_T = TypeVar("_T")

sites_app = typer.Typer(help="Enrol, list, revoke hospital sites and rotate their tokens.", no_args_is_help=True)
runs_app = typer.Typer(help="Start, stop and inspect federated runs.", no_args_is_help=True)
versions_app = typer.Typer(help="List and export FAM versions.", no_args_is_help=True)


def _client(config: Path | None, server: str | None, insecure: bool | None) -> AdminClient:
    from aggregator_service.admin_client import AdminClient, open_channel
    from aggregator_service.settings import ConfigError

    settings = load_settings(config, insecure_loopback=insecure)
    try:
        return AdminClient(open_channel(settings, server), settings.require_admin_token())
    except ConfigError as exc:
        raise fail(str(exc)) from exc


def _call(call: Callable[[], _T]) -> _T:
    """Run one Admin call; a refusal becomes one error line and exit code 1."""
    from aggregator_service.admin_client import AdminCallError

    try:
        return call()
    except AdminCallError as exc:
        raise fail(str(exc), 1) from exc


def _when(stamp: datetime | None) -> str:
    """A UTC time as ISO text, or '-' when unset."""
    return "-" if stamp is None else stamp.strftime("%Y-%m-%d %H:%M:%SZ")


def _console() -> Any:
    from fedmedclip.console import stdout_console  # tables whole in a pipe, fitted on a terminal

    return stdout_console()


# --- sites --------------------------------------------------------------------------------------------


@sites_app.command("add")
def sites_add(
    name: Annotated[str, typer.Argument(help="Site name: letters, digits, '-', '_', '.'; at most 64.")],
    description: Annotated[str, typer.Option(help="Free text, e.g. hospital and contact.")] = "",
    max_samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="The most training samples this site has: its aggregation weight never exceeds it, whatever "
            "it reports.",
        ),
    ] = None,
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """Enrol a site and print its token. The token is shown once; only its hash is stored."""
    client = _client(config, server, insecure_loopback)
    reply = _call(lambda: client.enrol_site(name, description, max_samples))
    typer.secho(
        f"enrolled site {reply.site.name!r}; its token follows. Store it now: it cannot be shown again.", err=True
    )
    typer.echo(reply.token)


@sites_app.command("list")
def sites_list(
    config: ConfigOption = None, server: ServerOption = None, insecure_loopback: InsecureOption = None
) -> None:
    """Every enrolled site, revoked ones included."""
    from rich.table import Table

    client = _client(config, server, insecure_loopback)
    sites = _call(client.list_sites)
    table = Table("site", "enabled", "enrolled", "last seen", "software", "device", "description")
    for site in sites:
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
    client = _client(config, server, insecure_loopback)
    _call(lambda: client.revoke_site(name, reason))
    typer.echo(f"revoked site {name!r}")


@sites_app.command("rotate")
def sites_rotate(
    name: Annotated[str, typer.Argument(help="The site whose token to replace.")],
    grace: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds the old token keeps working (0: stops now). Default: the aggregator's site_token_grace_s "
            "(one day unless configured).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """Issue a new token for a site and print it (shown once). The old token keeps working for the grace
    period, so the site can switch without missing a round; then it stops."""
    client = _client(config, server, insecure_loopback)
    reply = _call(lambda: client.rotate_site_token(name, grace))
    until = reply.previous_token_expires_at
    old = f"the old token works until {_when(until)}" if until is not None else "the old token no longer works"
    typer.secho(
        f"new token for site {reply.site.name!r} follows ({old}). Store it now: it cannot be shown again.", err=True
    )
    typer.echo(reply.token)


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
    from fedmedclip.federation.run_config import run_config_from_yaml

    text = ""
    if run_config is not None:
        try:
            text = run_config.read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot read run config {run_config}: {exc}") from exc
    flags = {
        "embed_dim": embed_dim,
        "rounds": rounds,
        "min_sites": min_sites,
        "round_timeout_s": round_timeout,
        "late_policy": late_policy,
        "weighting": weighting,
    }
    backbone: dict[str, Any] = {}
    if model is not None:
        backbone["model"] = model
    if weights is not None:
        backbone["weights"] = None if weights.lower() in ("", "none", "random") else weights
    try:
        parsed = run_config_from_yaml(
            text, flags, backbone, source=f"run config {run_config}" if run_config else "run config"
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    client = _client(config, server, insecure_loopback)
    reply = _call(lambda: client.start_run(parsed, name, initial_version))
    typer.secho(f"started run {reply.run_id} from FAM version {reply.initial_version}", err=True)
    typer.echo(reply.run_id)


@runs_app.command("stop")
def runs_stop(
    run_id: Annotated[str, typer.Argument(help="The run to stop.")],
    reason: Annotated[str, typer.Option(help="Recorded and sent to the sites.")] = "stopped by operator",
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """Stop a run: its open round is abandoned and sites get a done task."""
    client = _client(config, server, insecure_loopback)
    state = _call(lambda: client.stop_run(run_id, reason))
    typer.echo(f"run {run_id}: {state.value}")


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

    from fedmedclip.federation.messages import ParticipationState
    from fedmedclip.federation.serde import run_status_to_json

    client = _client(config, server, insecure_loopback)
    status = _call(lambda: client.run_status(run_id))
    if as_json:
        typer.echo(json.dumps(run_status_to_json(status)))
        return
    console = _console()
    console.print(
        f"run [bold]{status.run_id}[/] {status.name!r}: {status.state.value}, "
        f"round {status.current_round}/{status.config.rounds}, "
        f"latest FAM version {status.latest_version}, min_sites {status.config.min_sites}"
        + (f" — {status.message}" if status.message else "")
    )
    rounds = Table("round", "state", "opened", "closed", "in → out", "accepted", "bytes", "metrics", title="rounds")
    sites = Table(
        "round", "site", "participation", "samples", "bytes", "ε (δ)", "received", "note", title="participation"
    )
    for item in status.rounds:
        accepted = [p for p in item.participants if p.state == ParticipationState.ACCEPTED]
        rounds.add_row(
            str(item.round),
            item.state.value,
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
                part.state.value,
                str(part.num_samples or "-"),
                str(part.payload_bytes or "-"),
                "-" if part.privacy is None else f"{part.privacy.epsilon:.3g} ({part.privacy.delta:.1e})",
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

    client = _client(config, server, insecure_loopback)
    runs = _call(client.list_runs)
    table = Table("run", "name", "state", "round", "latest version", "created", "finished")
    for run in runs:
        table.add_row(
            run.run_id,
            run.name,
            run.state.value,
            f"{run.current_round}/{run.config.rounds}",
            str(run.latest_version),
            _when(run.created_at),
            _when(run.finished_at),
        )
    _console().print(table)


# --- versions -----------------------------------------------------------------------------------------


def _resolve_run(client: AdminClient, run_id: str) -> str:
    return run_id or _call(client.run_status).run_id


@versions_app.command("list")
def versions_list(
    run_id: Annotated[str, typer.Argument(help="Run id; default: the most recent run.")] = "",
    config: ConfigOption = None,
    server: ServerOption = None,
    insecure_loopback: InsecureOption = None,
) -> None:
    """FAM versions of a run with their lineage (parent, round, contributing sites)."""
    from rich.table import Table

    client = _client(config, server, insecure_loopback)
    run = _resolve_run(client, run_id)
    versions = _call(lambda: client.list_versions(run))
    table = Table("version", "round", "parent", "bytes", "sha256", "created", "sites (samples)", title=f"run {run}")
    for version in versions:
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

    from fedmedclip.atomic_files import write_atomic
    from fedmedclip.federation.serde import run_config_to_json

    client = _client(config, server, insecure_loopback)
    header, data = _call(lambda: client.export_version(version))
    digest = hashlib.sha256(data).hexdigest()
    if digest != header.sha256 or len(data) != header.total_bytes:
        raise fail(f"download of version {version} is damaged: sha256 {digest}, expected {header.sha256}", 1)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / f"fam-v{version}.safetensors"
    manifest_path = out / f"fam-v{version}.manifest.json"
    write_atomic(weights_path, data)
    manifest: dict[str, Any] = {"version": version, "format": "safetensors", "sha256": digest, "size_bytes": len(data)}
    # The version's run and lineage come from the run's version list.
    for run in _call(client.list_runs):
        match = [v for v in _call(partial(client.list_versions, run.run_id)) if v.version == version]
        if match:
            record = match[0]
            manifest.update(
                run_id=record.run_id,
                round=record.round,
                parent_version=record.parent_version or None,
                created_at=_when(record.created_at),
                contributions=[
                    {"site": c.site, "num_samples": c.num_samples, "payload_bytes": c.payload_bytes}
                    for c in record.contributions
                ],
                run_config=run_config_to_json(run.config),
            )
            break
    write_atomic(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    typer.echo(f"wrote {weights_path} and {manifest_path}")
