"""A flood of unauthenticated calls: a bounded number of audit rows, and other sites are not slowed down."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc

from aggregator_service.audit import prune_audit
from aggregator_service.server import RunningServer
from aggregator_service.store.base import AuditEntry
from aggregator_service.store.sql import SqlStore
from tests.aggregator.helpers import AdminStub, SiteClient, run_config
from tests.aggregator.test_lifecycle import ServerProcess, processes  # noqa: F401 - the fixture
from tests.aggregator.test_site_limits import p99_ms

FLOOD = 4000
THREADS = 4


FLOOD_SCRIPT = """
import sys, threading, grpc
from fedmedclip.rpc.v1 import federation_pb2, federation_pb2_grpc
address, per_thread, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
codes = []
forged = (("authorization", "Bearer forged"),)
def flood():
    with grpc.insecure_channel(address) as channel:  # a connection (and port) of its own per thread
        stub = federation_pb2_grpc.FederationStub(channel)
        for _ in range(per_thread):
            try:
                stub.Heartbeat(federation_pb2.HeartbeatRequest(), metadata=forged, timeout=10)
            except grpc.RpcError as error:
                codes.append(error.code().name)
workers = [threading.Thread(target=flood) for _ in range(threads)]
[w.start() for w in workers]
[w.join() for w in workers]
print(len(codes), sorted(set(codes)))
"""


def test_4000_unauthenticated_calls_leave_a_few_counted_rows_and_another_sites_heartbeat_stays_fast(
    processes: Callable[[], ServerProcess],  # noqa: F811 - the fixture imported above
    database_url: str,
) -> None:
    # The aggregator, the flood and the honest site are three processes: the figure is the server's.
    server = processes()
    address = f"127.0.0.1:{server.port}"
    admin = AdminStub(server.channel)
    honest = SiteClient(server.channel, admin.enrol("honest"), "honest")
    run_id = admin.start(run_config())
    honest.heartbeat(run_id, 1)
    flood = subprocess.Popen(
        [sys.executable, "-c", FLOOD_SCRIPT, address, str(FLOOD // THREADS), str(THREADS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    latencies: list[float] = []
    while flood.poll() is None or len(latencies) < 200:
        t0 = time.perf_counter()
        honest.heartbeat(run_id, 1)
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.005)
    out, _ = flood.communicate(timeout=60)
    assert out.split() == [str(FLOOD), "['UNAUTHENTICATED']"], out
    assert server.terminate() == 0  # SIGTERM writes the refusals still counted in memory

    print(f"honest heartbeat p99 {p99_ms(latencies):.1f} ms over {len(latencies)} calls")
    assert p99_ms(latencies) < 100, f"honest heartbeat p99 {p99_ms(latencies):.1f} ms over {len(latencies)} calls"
    store = SqlStore.open(database_url)
    try:
        rows = [a for a in store.list_audit(limit=10_000, outcome="refused") if a.action == "Heartbeat"]
    finally:
        store.close()
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
