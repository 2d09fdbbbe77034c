"""The aggregator process: gRPC server, health service, metrics endpoint, round engine, graceful shutdown."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import grpc
import torch
from grpc_health.v1 import health
from prometheus_client import start_http_server
from sqlalchemy.engine import make_url

from aggregator_service.audit import AuditWriter
from aggregator_service.context import Limits, Services
from aggregator_service.logs import event
from aggregator_service.rounds import RoundEngine
from aggregator_service.settings import AggregatorSettings, ConfigError
from aggregator_service.store.base import Store
from aggregator_service.store.sql import SqlStore
from aggregator_service.transport import add_services, set_health

log = logging.getLogger("aggregator_service.server")


def grpc_options(settings: AggregatorSettings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Ping idle connections so dead sites are noticed; accept site pings down to every 20 s.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
        # gRPC sets SO_REUSEPORT by default: a second server on "the same" port would silently share it.
        ("grpc.so_reuseport", 0),
    ]


@dataclass
class RunningServer:
    """A started aggregator; ``stop()`` shuts it down in order."""

    settings: AggregatorSettings
    svc: Services
    grpc_server: grpc.Server
    health: health.HealthServicer
    port: int
    metrics_port: int | None
    _engine_thread: threading.Thread
    _stop_engine: threading.Event
    _audit: AuditWriter | None = None
    _metrics_http: Any = None
    _stopped: bool = field(default=False)

    @property
    def address(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def stop(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING → refuse new calls → let in-flight calls finish within the grace period."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        event(log, "shutting down", grace_s=grace)
        self.health.enter_graceful_shutdown()
        self._stop_engine.set()
        self.svc.notifier.close()  # held long polls answer "wait" now instead of at their timeout
        self.grpc_server.stop(grace).wait()
        self._engine_thread.join(timeout=max(grace, 1.0) + 30.0)  # a round being committed finishes
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self.svc.idle_watch.stop()
        if self._audit is not None:
            self._audit.stop()  # writes the refusals still counted in memory
        self.svc.store.close()
        event(log, "stopped")


def start_server(settings: AggregatorSettings, store: Store | None = None) -> RunningServer:
    """Migrate the database, start every part, and return once the port is bound and serving."""
    admin_token = settings.require_admin_token()
    credentials = _server_credentials(settings)
    # Updates are small tensors handled on many request threads at once: intra-op threads would only
    # oversubscribe the cores (measured: round close 240 → 180 ms with 100 sites on 2 cores).
    torch.set_num_threads(settings.torch_threads)
    if store is None:
        store = SqlStore.open(settings.database_url, settings.sqlite_synchronous)
    limits = Limits(
        max_update_bytes=settings.max_update_bytes,
        chunk_bytes=settings.chunk_bytes,
        poll_wait_cap_s=settings.poll_wait_cap_s,
        max_long_polls=max(1, settings.max_workers // 2),  # the other half serves everything else
        max_calls_per_site=settings.max_calls_per_site,
        busy_retry_s=settings.busy_retry_s,
        stream_idle_timeout_s=settings.stream_idle_timeout_s,
    )
    svc = Services(store=store, admin_token=admin_token, limits=limits)
    engine = RoundEngine(svc)
    engine.resume()

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        options=grpc_options(settings),
    )
    health_servicer = add_services(server, svc)
    bind = f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"
    try:
        port = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
    except RuntimeError as exc:
        store.close()
        raise ConfigError(f"cannot bind {bind}: {exc}") from exc
    server.start()
    set_health(health_servicer, serving=True)

    metrics_http, metrics_port = None, None
    if settings.metrics_port is not None:
        metrics_http, _thread = start_http_server(
            settings.metrics_port, settings.metrics_host, registry=svc.metrics.registry
        )
        metrics_port = int(metrics_http.server_port)

    stop_engine = threading.Event()
    engine_thread = threading.Thread(target=engine.run, args=(stop_engine,), name="round-engine", daemon=True)
    engine_thread.start()
    audit = AuditWriter(svc, settings.audit_window_s, settings.audit_retention_days).start()
    running = RunningServer(
        settings, svc, server, health_servicer, port, metrics_port, engine_thread, stop_engine, audit, metrics_http
    )
    event(
        log,
        "aggregator listening",
        address=running.address,
        port=port,
        tls=credentials is not None,
        mutual_tls=settings.tls_client_ca_file is not None,
        metrics_port=metrics_port,
        database=make_url(settings.database_url).render_as_string(hide_password=True),
    )
    return running


def serve_until_signalled(settings: AggregatorSettings, on_ready: Callable[[RunningServer], None]) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully. Must be called from the main thread."""
    stop_requested = threading.Event()

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        event(log, "signal received", signal=signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        running = start_server(settings)
        on_ready(running)
        while not stop_requested.wait(timeout=1.0):  # a timed wait keeps the main thread responsive
            pass
        running.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _server_credentials(settings: AggregatorSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None  # settings validation allowed plaintext: insecure_loopback on a loopback host
    try:
        cert = settings.tls_cert_file.read_bytes()
        key = settings.tls_key_file.read_bytes()
        client_ca = None if settings.tls_client_ca_file is None else settings.tls_client_ca_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS files: {exc}") from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
