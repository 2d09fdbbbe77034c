"""One site cannot hold the worker pool: per-site stream slots, the idle-stream watchdog, the retry hint.

All over real sockets against an in-process aggregator. Latency figures are p99 over 200 heartbeats of
another site while the flood is on; the bound (100 ms) is the issue's, loose enough for a shared CI core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from aggregator_service.server import RunningServer
from fedmedclip.federation import messages as m
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.serde import codec_config_to_proto
from fedmedclip.rpc.v1 import federation_pb2
from hospital_agent.client import FederationClient, retry_hint_s
from hospital_agent.settings import load_settings
from tests.aggregator.helpers import AdminStub, SiteClient, bearer, make_update, run_config

IDLE_S = 1.5


def stalled_upload(header: federation_pb2.UpdateHeader, release: threading.Event) -> Iterator[Any]:
    """A header, then nothing until ``release`` (what a hostile or wedged site does)."""
    yield federation_pb2.UpdateChunk(header=header)
    release.wait(30)


def _header(run_id: str, sha: str = "a" * 64) -> federation_pb2.UpdateHeader:
    return federation_pb2.UpdateHeader(
        run_id=run_id,
        round=1,
        base_version=1,
        num_samples=10,
        sha256=sha,
        total_bytes=5000,
        codec=codec_config_to_proto(CodecConfig()),
    )


def p99_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_80_stalled_uploads_from_one_site_neither_stall_another_site_nor_outlive_the_idle_timeout(
    server_factory: Any,
) -> None:
    server: RunningServer = server_factory(stream_idle_timeout_s=IDLE_S, busy_retry_s=0.5)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin = AdminStub(channel)
        hostile = SiteClient(channel, admin.enrol("hostile"), "hostile")
        honest = SiteClient(channel, admin.enrol("honest"), "honest")
        run_id = admin.start(run_config())
        honest.heartbeat(run_id, 1)  # warm the honest site's connection path

        release = threading.Event()
        started = time.monotonic()
        calls = [
            hostile.stub.SubmitUpdate.future(
                stalled_upload(_header(run_id), release), metadata=bearer(hostile.token), timeout=30
            )
            for _ in range(80)
        ]
        ended: dict[int, float] = {}
        for index, call in enumerate(calls):
            call.add_done_callback(lambda _f, i=index: ended.setdefault(i, time.monotonic() - started))
        try:
            latencies = []
            for _ in range(200):
                t0 = time.perf_counter()
                honest.heartbeat(run_id, 1)
                latencies.append(time.perf_counter() - t0)
            codes: dict[str, int] = {}
            hints = set()
            for call in calls:
                try:
                    call.result(timeout=IDLE_S + 10)
                    codes["OK"] = codes.get("OK", 0) + 1
                except grpc.RpcError as error:
                    codes[error.code().name] = codes.get(error.code().name, 0) + 1
                    hints.add(retry_hint_s(error))
        finally:
            release.set()

    print(f"honest heartbeat p99 {p99_ms(latencies):.1f} ms over {len(latencies)} calls")
    assert p99_ms(latencies) < 100, f"honest heartbeat p99 {p99_ms(latencies):.1f} ms"
    # One stream held the site's upload slot; the 79 others were refused at once with the retry hint.
    assert codes == {"RESOURCE_EXHAUSTED": 79, "CANCELLED": 1}, codes
    assert hints == {0.5, None}
    # The one that held the slot was cut by the watchdog: after the idle timeout, well before the deadline.
    assert IDLE_S - 0.2 <= max(ended.values()) <= IDLE_S + 2.0, ended
    # The client sees the cancellation first; the server's handler thread frees the slots as it unwinds.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (
        server.svc.site_slots.in_use("hostile", "upload") or server.svc.site_slots.in_use("hostile", "call")
    ):
        time.sleep(0.05)
    assert server.svc.site_slots.in_use("hostile", "upload") == 0
    assert server.svc.site_slots.in_use("hostile", "call") == 0


def test_the_agent_client_honours_the_retry_hint_and_gets_through_once_the_stall_is_cut(
    server_factory: Any, tmp_path: Path
) -> None:
    server: RunningServer = server_factory(stream_idle_timeout_s=1.5, busy_retry_s=0.3)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin = AdminStub(channel)
        token = admin.enrol("site-a")
        site = SiteClient(channel, token, "site-a")
        run_id = admin.start(run_config())
        settings = load_settings(
            None,
            site="site-a",
            aggregator=f"127.0.0.1:{server.port}",
            token=token,
            insecure_loopback=True,
            data={"adapter": "imagefolder", "root": str(tmp_path)},
            backoff_initial_s=5.0,  # the hint (0.3 s), not the backoff, must set the pace
            backoff_max_s=5.0,
        )
        client = FederationClient(settings, token, threading.Event())
        update = make_update(1)
        header = m.UpdateHeader(
            run_id=run_id,
            round=1,
            base_version=1,
            num_samples=10,
            metrics={},
            codec=CodecConfig(),
            sha256=update.sha256,
            total_bytes=len(update.payload),
        )
        release = threading.Event()
        stalled = site.stub.SubmitUpdate.future(
            stalled_upload(_header(run_id), release), metadata=bearer(token), timeout=30
        )
        time.sleep(0.2)  # the stalled stream holds the site's upload slot
        assert server.svc.site_slots.in_use("site-a", "upload") == 1
        t0 = time.monotonic()
        try:
            reply = client.submit(header, update.payload)
        finally:
            release.set()
            client.close()
        took = time.monotonic() - t0
        assert reply.accepted and not reply.duplicate
        assert 0.8 <= took < 5.0, took  # waited for the stall to be cut (1.5 s after it began), in 0.3 s steps
        assert rpc_code(stalled) == "CANCELLED"


def rpc_code(future: Any) -> str:
    try:
        future.result(timeout=10)
    except grpc.RpcError as error:
        return str(error.code().name)
    return "OK"


def test_idle_watch_counts_only_time_the_client_keeps_the_server_waiting() -> None:
    from aggregator_service.site_limits import IdleWatch

    watch = IdleWatch(0.3, check_every_s=0.05)
    try:
        cancelled: list[str] = []

        def slow_client() -> Iterator[int]:
            yield 1
            time.sleep(0.6)  # the client sends nothing for twice the timeout
            yield 2

        for _ in watch.watch(slow_client(), lambda: cancelled.append("upload")):
            pass
        assert cancelled == ["upload"]

        cancelled.clear()
        for _ in watch.watch(iter([1, 2]), lambda: cancelled.append("server busy")):
            time.sleep(0.6)  # the server (the consumer of an upload) is slow: not the client's fault
        assert cancelled == []

        def server_side() -> Iterator[int]:
            yield 1
            time.sleep(0.6)  # the server takes long to produce the next chunk of a download
            yield 2

        for _ in watch.watch(server_side(), lambda: cancelled.append("download"), client_sends=False):
            pass
        assert cancelled == []
        for _ in watch.watch(iter([1, 2]), lambda: cancelled.append("slow reader"), client_sends=False):
            time.sleep(0.6)  # the client does not take the chunk (gRPC's send blocks in the yield)
        assert cancelled == ["slow reader"]
    finally:
        watch.stop()
