"""``fedmedclip agent run|embed|check|status`` (also ``python -m hospital_agent ...``).

Exit codes: 0 clean stop (SIGTERM/SIGINT), 78 (EX_CONFIG) for anything the operator must fix — bad settings,
no usable data, blocking data-check findings, a refused token, a run this site cannot serve — so that systemd
does not restart into the same error (``RestartPreventExitStatus=78``), 1 for anything else (systemd restarts
the agent).

torch, open_clip and grpc are imported inside the commands, and only after the settings are validated: a
configuration mistake is reported in well under a second, and ``--help`` stays fast.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from hospital_agent.settings import AgentSettings

EXIT_CONFIG = 78
# Refusals of the Join (or any call) that retrying cannot fix, with what the operator should check.
_FATAL_HINTS = {
    "UNAUTHENTICATED": "the aggregator refused this site's token: check token / token_file, and ask the federation "
    "operator whether the site is enrolled and not revoked",
    "PERMISSION_DENIED": "the aggregator refused this site's token for this call (an admin token used as a site?)",
    "FAILED_PRECONDITION": "the aggregator refused the agent (protocol version mismatch?): upgrade one side",
}

app = typer.Typer(
    help="The hospital agent: trains locally and pushes masked FAM updates to the aggregator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="FEDMEDCLIP_AGENT_CONFIG",
        help="YAML settings file (keys: docs/hospital_agent.md; environment: FEDMEDCLIP_AGENT_<KEY>).",
        show_default=False,
    ),
]
# How long ``agent embed`` asks the aggregator for the run's backbone before giving up with the fix.
EMBED_JOIN_BUDGET_S = 15.0


def _fail(message: str, code: int = EXIT_CONFIG) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _settings(config: Path | None) -> AgentSettings:
    from hospital_agent.settings import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as error:
        raise _fail(str(error)) from None


def _limit_threads(settings: AgentSettings) -> None:
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)


_RUN_HELP = (
    "Run the agent until SIGTERM/SIGINT: join, train each round, submit updates, publish bundles.\n\n"
    "Keys that matter: site, aggregator, token | token_file, tls.ca_file (or insecure_loopback towards a "
    "loopback aggregator), data.adapter, data.root (data.manifest, data.classes, data.anatomical_site), "
    "backbone.model / backbone.weights, state_dir, bundle_root, device. At start the site's data is "
    "checked as `agent check` does; blocking problems (no usable image, labels that differ only in case, "
    "one image under two labels...) refuse the start (exit 78) naming the files, and "
    "<state_dir>/check-skipped.json lists every skipped file. Data layouts: docs/data.md."
)


@app.command(help=_RUN_HELP)
def run(config: ConfigOption = None) -> None:
    """Run the agent until SIGTERM/SIGINT: join, train each round, submit updates, publish bundles."""
    import logging

    from fedmedclip.data.imagefolder import DatasetError
    from fedmedclip.logs import configure_logging, event
    from hospital_agent.data_check import DataBlockedError, check_site_data, log_report
    from hospital_agent.settings import ConfigError

    settings = _settings(config)  # before torch, grpc and the data: a settings mistake shows at once
    try:
        settings.require_token()  # a missing token is known now; do not make it wait for the data check
    except ConfigError as error:
        raise _fail(str(error)) from None
    configure_logging(settings.log_format, settings.log_level)
    log = logging.getLogger("hospital_agent")
    try:
        report = check_site_data(settings, write_lists=True, trust_cache=True)
        log_report(report)
        if report.blocking:
            raise DataBlockedError(report)
    except (DatasetError, DataBlockedError) as error:
        event(log, "agent cannot run", logging.ERROR, site=settings.site, reason=str(error))
        raise _fail(str(error)) from None

    from fedmedclip.model.backbone import WeightsUnavailableError
    from hospital_agent.client import AggregatorError
    from hospital_agent.loop import AgentLoop
    from hospital_agent.state import StateError
    from hospital_agent.trainer import IncompatibleRunError

    _limit_threads(settings)
    stop = threading.Event()

    def on_signal(number: int, _frame: object) -> None:
        event(log, "signal received; stopping", site=settings.site, signal=signal.Signals(number).name)
        stop.set()

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        AgentLoop(settings, stop=stop).run()
    except (ConfigError, DatasetError, IncompatibleRunError, StateError, WeightsUnavailableError) as error:
        event(log, "agent cannot run", logging.ERROR, site=settings.site, reason=str(error))
        raise _fail(str(error)) from None
    except AggregatorError as error:
        hint = _FATAL_HINTS.get(error.code)
        event(log, "aggregator refused the agent", logging.ERROR, site=settings.site, code=error.code, hint=hint)
        raise _fail(f"{error} — {hint}" if hint else str(error), EXIT_CONFIG if hint else 1) from None
    finally:
        for number, handler in previous.items():  # leave the process as we found it (tests call run in-process)
            signal.signal(number, handler)


_CHECK_HELP = (
    "Dry run of the site's data: read every image exactly as training will, and report (no network, no "
    "model).\n\n"
    "Reports classes and images per class and split, skipped files grouped by reason, empty and small "
    "classes, labels differing only in case/spacing/punctuation, duplicate files (and one image under two "
    "labels), class imbalance, image sizes and modes, and DICOM transfer syntaxes with the package that "
    "decodes the missing ones. Exit 0 when training can use the data, 78 on a blocking problem. Keys "
    "used: site, data.adapter, data.root, data.manifest, data.path_column, data.label_column, "
    "data.classes, data.anatomical_site, data.split_seed, embed_workers (decoding threads). Layouts, what "
    "is ignored and a worked example: docs/data.md."
)


@app.command(help=_CHECK_HELP)
def check(
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full report as JSON (every skipped file).")
    ] = False,
) -> None:
    """Dry run of the site's data: read every image exactly as training will, and report (no network, no model)."""
    from fedmedclip.data.check import render_text
    from fedmedclip.data.imagefolder import DatasetError
    from fedmedclip.logs import configure_logging
    from hospital_agent.data_check import check_site_data

    settings = _settings(config)
    configure_logging(settings.log_format, "ERROR")  # the report is the output; it holds every skipped file
    try:
        report = check_site_data(settings)
    except DatasetError as error:
        if as_json:
            typer.echo(json.dumps({"ok": False, "site": settings.site, "error": str(error)}, indent=2))
        raise _fail(str(error)) from None
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else render_text(report))
    if report.blocking:
        raise typer.Exit(EXIT_CONFIG)


_EMBED_HELP = (
    "Fill the embedding cache for the site's images (progress bar); later rounds train on cached "
    "features.\n\n"
    "Keys that matter: data.* (which images), backbone.model and backbone.weights (which CLIP; with them "
    "no aggregator is needed), cache_dir or state_dir (where the cache lives), device, embed_batch_size, "
    "embed_workers. Without a backbone: section the run's backbone is asked from the aggregator (site, "
    "aggregator, token); if it does not answer within 15 s the command stops and says to add one. Data: "
    "docs/data.md."
)


@app.command(help=_EMBED_HELP)
def embed(
    config: ConfigOption = None,
    device: Annotated[str | None, typer.Option(help="Override the configured device (cpu, cuda, cuda:N).")] = None,
) -> None:
    """Fill the embedding cache for the site's images (progress bar); later rounds train on cached features."""
    settings = _settings(config)  # before torch: a settings mistake shows at once

    from fedmedclip.console import console, progress_bar
    from fedmedclip.data.cache import EmbeddingCache, embed_images
    from fedmedclip.data.imagefolder import DatasetError
    from fedmedclip.logs import configure_logging
    from fedmedclip.model.backbone import WeightsUnavailableError, load_backbone
    from hospital_agent.adapters import load_site_images, report_skipped
    from hospital_agent.settings import ConfigError
    from hospital_agent.trainer import IncompatibleRunError, resolve_device

    configure_logging(settings.log_format, "WARNING")  # the progress bar is the output; warnings still show
    _limit_threads(settings)
    try:
        images = load_site_images(settings.data)
        report_skipped(images.skipped, settings.site, settings.state_dir, "scan")
        spec = _embed_spec(settings)
        backbone = load_backbone(spec, resolve_device(device or settings.device))
    except (DatasetError, WeightsUnavailableError, IncompatibleRunError, ConfigError, ValueError) as error:
        raise _fail(str(error)) from None
    started = time.perf_counter()
    with EmbeddingCache(settings.effective_cache_dir) as cache, progress_bar(f"embedding on {backbone.device}") as bar:
        result = embed_images(
            backbone,
            images.paths,
            cache,
            batch_size=settings.embed_batch_size,
            num_workers=settings.embed_workers,
            progress=bar,
        )
        size = cache.size_bytes()
    report_skipped(result.failed, settings.site, settings.state_dir, "embed")
    console.print(
        f"{len(result.kept_indices)} images embedded with {spec.describe()}: {result.computed} computed, "
        f"{result.reused} from the cache, {len(result.failed)} unreadable, in {time.perf_counter() - started:.1f} s; "
        f"cache {settings.effective_cache_dir} holds {size / 1e6:.1f} MB",
        soft_wrap=True,  # one line, whatever the terminal width: scripts grep it
    )
    if not result.kept_indices:
        raise _fail(f"none of the {len(images.records)} images of site {settings.site} could be read")


def _embed_spec(settings: AgentSettings) -> Any:
    """The configured backbone, else the active run's (one Join)."""
    from fedmedclip.model.backbone import BackboneSpec
    from hospital_agent.client import AggregatorError, FederationClient
    from hospital_agent.trainer import backbone_spec_for

    if settings.backbone is not None:
        local = settings.backbone
        weights = local.weights if local.weights is not None else "openai"  # the library default
        return BackboneSpec(local.model, weights, local.preprocess, local.seed)
    from hospital_agent.client import AgentStopped

    # One bounded attempt, not the service's retry-forever: a person is waiting at the terminal.
    budget = EMBED_JOIN_BUDGET_S
    quick = settings.model_copy(update={"rpc_timeout_s": min(settings.rpc_timeout_s, budget)})
    stop = threading.Event()
    timer = threading.Timer(budget, stop.set)
    timer.start()
    client = FederationClient(quick, settings.require_token(), stop)
    try:
        reply = client.join()
    except AgentStopped:
        raise ValueError(
            f"no backbone: section in the config, and the aggregator {settings.aggregator} did not answer within "
            f"{budget:.0f} s; add a backbone: section (model, weights) to embed without the aggregator"
        ) from None
    except AggregatorError as error:
        raise ValueError(
            f"no backbone: section in the config, and asking the aggregator failed: {error}; add a backbone: "
            "section (model, weights) to embed without the aggregator"
        ) from None
    finally:
        timer.cancel()
        client.close()
    if reply.run_config is None:
        raise ValueError("no backbone: in the config and no active run to take it from; add a backbone: section")
    return backbone_spec_for(reply.run_config, None)


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """What this site knows: run, round, FAM version, last metrics, bundle, cache size (no network).

    Keys used: site, aggregator, state_dir, bundle_root, cache_dir.
    """
    settings = _settings(config)  # before torch (the bundle and cache modules import it)

    from fedmedclip.bundle import current_version
    from fedmedclip.data.cache import CACHE_FILE
    from hospital_agent.state import StateError, StateStore

    try:
        saved = StateStore(settings.state_dir).summary() or {}
    except StateError as error:
        raise _fail(str(error)) from None
    cache_file = settings.effective_cache_dir / CACHE_FILE
    cache_bytes = sum(
        path.stat().st_size
        for path in (cache_file, cache_file.with_name(CACHE_FILE + "-wal"))
        if path.exists()  # no EmbeddingCache(): opening it would create an empty cache
    )
    pending = saved.get("pending")
    info: dict[str, Any] = {
        "site": settings.site,
        "aggregator": settings.aggregator,
        "state_dir": str(settings.state_dir),
        "run": saved.get("run_id") or None,
        "run_finished": bool(saved.get("run_done")),
        "last_round_submitted": saved.get("last_round", 0),
        "fam_version": saved.get("fam_version", 0),
        "pending_round": pending["round"] if pending else None,
        "has_head": bool(saved.get("head")),
        "metrics": saved.get("metrics", {}),
        "metrics_fam_version": saved.get("metrics_version", 0),
        "bundle": current_version(settings.bundle_root, settings.site),
        "cache_dir": str(settings.effective_cache_dir),
        "cache_bytes": cache_bytes,
        "updated_at": saved.get("updated_at") or None,
        "privacy": _privacy_line(saved.get("privacy") or {}),
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    _print_status(info)


def _privacy_line(privacy: dict[str, Any]) -> str:
    """The site's privacy position in this run, in words: off, ε so far, or why it stopped contributing."""
    if privacy.get("budget_spent"):
        return str(privacy["budget_spent"])
    ledger = privacy.get("ledger")
    if ledger:
        return (
            f"ε = {ledger['epsilon']:.3f} of {ledger.get('target_epsilon', 0):g} (δ = {ledger['delta']:.1e}) "
            f"after {ledger.get('rounds', 0)} round(s)"
        )
    return "no formal privacy guarantee (differential privacy off, or no round trained yet)"


def _print_status(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("", "", show_header=False, box=None)
    for key, value in info.items():
        if key == "metrics":
            continue
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    metrics = Table(
        "metric (validation)", "value", title=f"last evaluation (FAM version {info['metrics_fam_version']})"
    )
    for name, value in sorted(info["metrics"].items()):
        metrics.add_row(name, f"{value:.4f}")
    console = Console()
    console.print(table)
    if info["metrics"]:
        console.print(metrics)
