"""The gRPC client against a scripted in-process Federation server: what is retried, what is not, backoff."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedmedclip.rpc.v1 import federation_pb2, federation_pb2_grpc
from hospital_agent.client import AgentStopped, AggregatorError, Backoff, FederationClient
from hospital_agent.settings import load_settings


class Scripted(federation_pb2_grpc.FederationServicer):
    """Fails each method with the queued status codes, then answers; records the metadata it saw."""

    def __init__(self) -> None:
        self.failures: dict[str, list[grpc.StatusCode]] = {}
        self.calls: dict[str, int] = {}
        self.metadata: list[dict[str, str]] = []

    def _step(self, method: str, context: grpc.ServicerContext) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        self.metadata.append(dict(context.invocation_metadata()))
        queue = self.failures.get(method, [])
        if queue:
            context.abort(queue.pop(0), f"scripted failure of {method}")

    def Join(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method name
        self._step("Join", context)
        return federation_pb2.JoinResponse(site="site-a", protocol_major=1)

    def PollTask(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._step("PollTask", context)
        time.sleep(min(request.wait_seconds, 5))  # a held long poll
        return federation_pb2.Task(wait=federation_pb2.WaitTask(retry_after_seconds=1))


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, int]]:
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    federation_pb2_grpc.add_FederationServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def client_for(tmp_path: Path, port: int, stop: threading.Event) -> FederationClient:
    settings = load_settings(
        None,
        site="site-a",
        aggregator=f"127.0.0.1:{port}",
        token="secret-token",
        insecure_loopback=True,
        data={"adapter": "imagefolder", "root": str(tmp_path)},
        backoff_initial_s=0.05,
        backoff_max_s=0.1,
        rpc_timeout_s=2.0,
    )
    return FederationClient(settings, settings.require_token(), stop)


def test_unavailable_is_retried_and_the_token_is_sent(tmp_path: Path, scripted: tuple[Scripted, int]) -> None:
    servicer, port = scripted
    servicer.failures["Join"] = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    client = client_for(tmp_path, port, threading.Event())
    assert client.join().site == "site-a"
    assert servicer.calls["Join"] == 3
    assert {m["authorization"] for m in servicer.metadata} == {"Bearer secret-token"}


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT])
def test_other_failures_are_not_retried(tmp_path: Path, scripted: tuple[Scripted, int], code: grpc.StatusCode) -> None:
    servicer, port = scripted
    servicer.failures["Join"] = [code]
    with pytest.raises(AggregatorError) as caught:
        client_for(tmp_path, port, threading.Event()).join()
    assert (caught.value.code, servicer.calls["Join"]) == (code.name, 1)


def test_stop_interrupts_a_held_poll_and_the_backoff(tmp_path: Path, scripted: tuple[Scripted, int]) -> None:
    _, port = scripted
    stop = threading.Event()
    client = client_for(tmp_path, port, stop)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(AgentStopped):
        client.poll("run", wait_s=5)
    assert time.monotonic() - started < 2.0

    stop.clear()
    nowhere = client_for(tmp_path, 1, stop)  # nothing listens on port 1: UNAVAILABLE, retried until stopped
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(AgentStopped):
        nowhere.join()


def test_backoff_is_capped_exponential_with_jitter() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0)
    rng = random.Random(0)
    delays = [[backoff.delay(attempt, rng) for _ in range(50)] for attempt in range(6)]
    for attempt, seen in enumerate(delays):
        ceiling = min(8.0, 2.0**attempt)
        assert all(ceiling / 2 <= d <= ceiling for d in seen)
        assert max(seen) - min(seen) > ceiling / 10  # jittered, so restarting sites do not retry in lockstep
