"""Several aggregator addresses (active/standby): how the setting is read, and the client moving on to the
next address when one is unavailable (a standby, or a dead leader), over real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedmedclip.rpc.v1 import federation_pb2, federation_pb2_grpc
from fedmedclip.settings import ConfigError
from hospital_agent.client import FederationClient
from hospital_agent.settings import AgentSettings, load_settings


class Aggregator(federation_pb2_grpc.FederationServicer):
    """Answers Join when leading; a standby refuses with UNAVAILABLE, like the real one."""

    def __init__(self, leading: bool) -> None:
        self.leading = leading
        self.joins = 0

    def Join(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method name
        self.joins += 1
        if not self.leading:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this aggregator is a standby (not the leader)")
        return federation_pb2.JoinResponse(site="site-a", protocol_major=1)


@pytest.fixture
def servers() -> Iterator[list[tuple[Aggregator, int]]]:
    started = []
    for leading in (False, True):
        servicer = Aggregator(leading)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        federation_pb2_grpc.add_FederationServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append((server, servicer, port))
    yield [(servicer, port) for _, servicer, port in started]
    for server, _, _ in started:
        server.stop(0)


def settings_for(tmp_path: Path, aggregator: Any) -> AgentSettings:
    return load_settings(
        None,
        site="site-a",
        aggregator=aggregator,
        token="secret-token",
        insecure_loopback=True,
        data={"adapter": "imagefolder", "root": str(tmp_path)},
        backoff_initial_s=0.05,
        backoff_max_s=0.1,
        rpc_timeout_s=2.0,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_setting_takes_one_address_a_comma_list_or_a_yaml_list(tmp_path: Path) -> None:
    assert settings_for(tmp_path, "127.0.0.1:1").aggregators == ("127.0.0.1:1",)
    assert settings_for(tmp_path, " 127.0.0.1:1 , localhost:2 ").aggregators == ("127.0.0.1:1", "localhost:2")
    assert settings_for(tmp_path, ["127.0.0.1:1", "[::1]:2"]).aggregators == ("127.0.0.1:1", "[::1]:2")
    for bad, message in [
        ("127.0.0.1:1,127.0.0.1:1", "twice"),
        ("127.0.0.1:1,nonsense", "HOST:PORT"),
        (",", "HOST:PORT"),
        ("127.0.0.1:1,aggregator.example.org:50051", "loopback"),  # plaintext to a remote address in the list
    ]:
        with pytest.raises(ConfigError, match=message):
            settings_for(tmp_path, bad)


def test_a_standby_and_a_dead_address_are_passed_over(tmp_path: Path, servers: list[tuple[Aggregator, int]]) -> None:
    (standby, standby_port), (leader, leader_port) = servers
    addresses = f"127.0.0.1:{free_port()},127.0.0.1:{standby_port},127.0.0.1:{leader_port}"
    settings = settings_for(tmp_path, addresses)
    client = FederationClient(settings, settings.require_token(), threading.Event())
    try:
        assert client.join().site == "site-a"
        assert client.target == f"127.0.0.1:{leader_port}"
        assert (standby.joins, leader.joins) == (1, 1)
        assert client.join().site == "site-a"  # stays with the address that answered
        assert (standby.joins, leader.joins) == (1, 2)

        leader.leading, standby.leading = False, True  # a failover: the standby leads now
        assert client.join().site == "site-a"
        assert client.target == f"127.0.0.1:{standby_port}"
    finally:
        client.close()
