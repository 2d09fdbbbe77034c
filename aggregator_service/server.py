"""The aggregator process: gRPC server, health service, metrics endpoint, round engine, graceful shutdown."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health
from prometheus_client import start_http_server
from sqlalchemy.engine import make_url

from aggregator_service.audit import AuditWriter
from aggregator_service.context import Limits, PendingUpdates, Services
from aggregator_service.leadership import Elector, Lease, hold_sqlite_lock, new_holder_id, refuse_writes
from aggregator_service.logs import event
from aggregator_service.rounds import RoundEngine
from aggregator_service.secure_rounds import SecureRegistry
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


class EngineThread:
    """The round engine on its own thread; started and stopped again as leadership comes and goes."""

    def __init__(self, engine: RoundEngine) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.engine.run, args=(self._stop,), name="round-engine", daemon=True)
        self._thread.start()

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop and wait (a round being committed finishes first)."""
        self._stop.set()
        self.engine.svc.notifier.notify()  # wakes the engine's wait at once
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None


@dataclass
class RunningServer:
    """A started aggregator; ``stop()`` shuts it down in order."""

    settings: AggregatorSettings
    svc: Services
    grpc_server: grpc.Server
    health: health.HealthServicer
    port: int
    metrics_port: int | None
    engine: EngineThread
    elector: Elector | None = None  # PostgreSQL: active/standby; None: SQLite, single-process
    _metrics_http: Any = None
    _sqlite_lock: Any = None
    _audit: AuditWriter | None = None  # refusal counts, written off the request path
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
        self.engine.signal_stop()
        self.svc.notifier.close()  # held long polls answer "wait" now instead of at their timeout
        self.grpc_server.stop(grace).wait()
        if self.elector is not None:  # after in-flight calls: their writes still need the lease
            self.elector.stop(release=True)  # a standby takes over at its next look, not at expiry
        self.engine.stop(timeout_s=max(grace, 1.0) + 30.0)  # a round being committed finishes
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self.svc.idle_watch.stop()
        if self._audit is not None:
            self._audit.stop()  # writes the refusals still counted in memory
        self.svc.store.close()
        if self._sqlite_lock is not None:
            self._sqlite_lock.close()
        event(log, "stopped")


def start_server(settings: AggregatorSettings, store: Store | None = None) -> RunningServer:
    """Migrate the database, start every part, and return once the port is bound and serving."""
    admin_token = settings.require_admin_token()
    credentials = _server_credentials(settings)
    # The aggregator computes in numpy and never imports torch (docs/design.md §2). When torch is loaded
    # in the same process anyway (an embedding test), its intra-op threads would only oversubscribe the
    # cores: updates are small tensors handled on many request threads at once.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(settings.torch_threads)
    url = make_url(settings.database_url)
    sqlite_lock = None
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            sqlite_lock = hold_sqlite_lock(url.database)
        event(log, "SQLite database: single-process mode (active/standby failover needs PostgreSQL)")
    if store is None:
        try:
            store = SqlStore.open(settings.database_url, settings.sqlite_synchronous)
        except BaseException:
            if sqlite_lock is not None:
                sqlite_lock.close()
            raise
    limits = Limits(
        max_update_bytes=settings.max_update_bytes,
        chunk_bytes=settings.chunk_bytes,
        poll_wait_cap_s=settings.poll_wait_cap_s,
        max_long_polls=max(1, settings.max_workers // 2),  # the other half serves everything else
        site_token_grace_s=settings.site_token_grace_s,
        max_calls_per_site=settings.max_calls_per_site,
        busy_retry_s=settings.busy_retry_s,
        stream_idle_timeout_s=settings.stream_idle_timeout_s,
    )
    svc = Services(store=store, admin_token=admin_token, limits=limits)
    engine = EngineThread(RoundEngine(svc))
    # PostgreSQL: start as a standby (NOT_SERVING, refusing writes) and lead once the lease is ours.
    standby = isinstance(store, SqlStore) and store.dialect == "postgresql"
    if standby:
        svc.leading.clear()
        assert isinstance(store, SqlStore)
        store.set_fence(refuse_writes)
    else:
        engine.engine.resume()

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
        if sqlite_lock is not None:
            sqlite_lock.close()
        raise ConfigError(f"cannot bind {bind}: {exc}") from exc
    server.start()
    set_health(health_servicer, serving=not standby)

    metrics_http, metrics_port = None, None
    if settings.metrics_port is not None:
        metrics_http, _thread = start_http_server(
            settings.metrics_port, settings.metrics_host, registry=svc.metrics.registry
        )
        metrics_port = int(metrics_http.server_port)

    audit = AuditWriter(svc, settings.audit_window_s, settings.audit_retention_days).start()
    elector = None
    if standby:
        assert isinstance(store, SqlStore)
        elector = _elector(settings, store, svc, engine, health_servicer)
    else:
        engine.start()
    running = RunningServer(
        settings, svc, server, health_servicer, port, metrics_port, engine, elector, metrics_http, sqlite_lock, audit
    )
    event(
        log,
        "aggregator listening",
        address=running.address,
        port=port,
        tls=credentials is not None,
        mutual_tls=settings.tls_client_ca_file is not None,
        metrics_port=metrics_port,
        database=url.render_as_string(hide_password=True),
        role="standby until it holds the leader lease" if standby else "single process",
    )
    if elector is not None:
        elector.start()
    return running


def _elector(
    settings: AggregatorSettings, store: SqlStore, svc: Services, engine: EngineThread, health: health.HealthServicer
) -> Elector:
    """Wire leadership to the parts it switches: the store's write fence, the round engine, health, RPCs."""
    lease = Lease(store.write_engine, new_holder_id(), settings.leader_lease_s)

    def on_lead(token: int) -> None:
        store.set_fence(lease.fence(token))
        svc.pending = PendingUpdates()  # the previous leader may have accepted updates this process never saw
        svc.secure = SecureRegistry()  # key material of an earlier stint is stale; resume() abandons the round
        engine.engine.resume()
        engine.start()
        svc.leading.set()
        set_health(health, serving=True)

    def on_lose() -> None:
        svc.leading.clear()
        set_health(health, serving=False)
        store.set_fence(refuse_writes)
        engine.stop()

    return Elector(lease, on_lead, on_lose)


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
