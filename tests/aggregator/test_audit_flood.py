"""A flood of unauthenticated calls: a bounded number of audit rows, and other sites are not slowed down."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import grpc

from aggregator_service.audit import flush_refusals, prune_audit
from aggregator_service.server import RunningServer
from aggregator_service.store.base import AuditEntry
from fedmedclip.rpc.v1 import federation_pb2, federation_pb2_grpc
from tests.aggregator.helpers import AdminStub, SiteClient, bearer, run_config
from tests.aggregator.test_site_limits import p99_ms

FLOOD = 4000
THREADS = 4


def test_4000_unauthenticated_calls_leave_a_few_counted_rows_and_another_sites_heartbeat_stays_fast(
    server_factory: Any,
) -> None:
    server: RunningServer = server_factory(max_workers=16)
    address = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(address) as channel:
        admin = AdminStub(channel)
        honest = SiteClient(channel, admin.enrol("honest"), "honest")
        run_id = admin.start(run_config())
        honest.heartbeat(run_id, 1)
        codes: list[str] = []

        def flood() -> None:
            with grpc.insecure_channel(address) as own:  # a connection (and port) of its own per thread
                stub = federation_pb2_grpc.FederationStub(own)
                for _ in range(FLOOD // THREADS):
                    try:
                        stub.Heartbeat(federation_pb2.HeartbeatRequest(), metadata=bearer("forged"), timeout=10)
                    except grpc.RpcError as error:
                        codes.append(error.code().name)

        threads = [threading.Thread(target=flood) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        latencies: list[float] = []
        while any(t.is_alive() for t in threads) or len(latencies) < 200:
            t0 = time.perf_counter()
            honest.heartbeat(run_id, 1)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.005)
        for thread in threads:
            thread.join()

    assert codes == ["UNAUTHENTICATED"] * FLOOD
    assert p99_ms(latencies) < 100, f"honest heartbeat p99 {p99_ms(latencies):.1f} ms over {len(latencies)} calls"
    flush_refusals(server.svc)
    rows = [a for a in server.svc.store.list_audit(limit=10_000, outcome="refused") if a.action == "Heartbeat"]
    # One peer host, one action, one reason: one row per audit window (the test fits in one or two).
    assert 1 <= len(rows) <= 2, rows
    assert sum(r.count for r in rows) == FLOOD
    assert rows[0].actor == "anonymous ipv4:127.0.0.1"


def test_admin_actions_stay_one_row_each_and_old_rows_are_pruned(server_factory: Any) -> None:
    server: RunningServer = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin = AdminStub(channel)
        for name in ("a-site", "b-site", "c-site"):
            admin.enrol(name)
    svc = server.svc
    enrolments = [a for a in svc.store.list_audit(outcome="ok") if a.action == "EnrolSite"]
    assert len(enrolments) == 3 and all(a.count == 1 for a in enrolments)
    svc.store.add_audit(AuditEntry(svc.clock() - timedelta(days=100), "admin", "StartRun", "ok"))
    assert prune_audit(svc, retention_days=90) == 1
    assert len([a for a in svc.store.list_audit(outcome="ok") if a.action == "EnrolSite"]) == 3
