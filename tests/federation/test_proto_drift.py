"""The committed generated code matches the .proto files, imports as a package, and serves real calls."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from fedmedclip.rpc.v1 import admin_pb2, admin_pb2_grpc, common_pb2, federation_pb2, federation_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "generate_proto.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_committed_code_matches_the_proto_files() -> None:
    result = run_script("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_drift(tmp_path: Path) -> None:
    assert run_script("--out", str(tmp_path)).returncode == 0
    (tmp_path / "common_pb2.py").write_text("# edited by hand\n")
    (tmp_path / "old_pb2.py").write_text("")
    (tmp_path / "admin_pb2.pyi").unlink()
    result = run_script("--check", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "differs: " in result.stderr and "common_pb2.py" in result.stderr
    assert "stale" in result.stderr and "old_pb2.py" in result.stderr
    assert "missing: " in result.stderr and "admin_pb2.pyi" in result.stderr


def test_service_contracts() -> None:
    federation = federation_pb2.DESCRIPTOR.services_by_name["Federation"]
    admin = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    assert federation.full_name == "fedmedclip.rpc.v1.Federation"
    assert {m.name for m in federation.methods} == {
        "Join",
        "PollTask",
        "GetModel",
        "SubmitUpdate",
        "Heartbeat",
        # secure rounds (docs/design.md §4.6)
        "AdvertiseKeys",
        "ShareKeys",
        "SubmitMaskedInput",
        "Unmask",
    }
    assert {m.name for m in admin.methods} == {
        "StartRun",
        "StopRun",
        "ListRuns",
        "GetRunStatus",
        "ListVersions",
        "ExportVersion",
        "EnrolSite",
        "ListSites",
        "RevokeSite",
    }
    streaming = {(m.name, m.client_streaming, m.server_streaming) for m in federation.methods}
    assert ("GetModel", False, True) in streaming and ("SubmitUpdate", True, False) in streaming
    assert ("SubmitMaskedInput", True, False) in streaming


class _Federation(federation_pb2_grpc.FederationServicer):
    def Join(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.JoinRequest, context: grpc.ServicerContext
    ) -> federation_pb2.JoinResponse:
        return federation_pb2.JoinResponse(
            site="site-a", protocol_major=request.protocol_major, run_config=common_pb2.RunConfig(rounds=3)
        )

    def GetModel(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.ModelChunk]:
        yield common_pb2.ModelChunk(header=common_pb2.ModelHeader(version=request.version, total_bytes=4))
        yield common_pb2.ModelChunk(data=b"ab")
        yield common_pb2.ModelChunk(data=b"cd")

    def SubmitUpdate(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[federation_pb2.UpdateChunk], context: grpc.ServicerContext
    ) -> federation_pb2.SubmitUpdateResponse:
        chunks = list(request_iterator)
        data = b"".join(c.data for c in chunks[1:])
        return federation_pb2.SubmitUpdateResponse(accepted=chunks[0].header.total_bytes == len(data))


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    federation_pb2_grpc.add_FederationServicer_to_server(_Federation(), server)
    admin_pb2_grpc.add_AdminServicer_to_server(admin_pb2_grpc.AdminServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")  # loopback, ephemeral port
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as client:
            yield client
    finally:
        server.stop(grace=None)


def test_generated_stubs_serve_calls(channel: grpc.Channel) -> None:
    stub = federation_pb2_grpc.FederationStub(channel)
    joined = stub.Join(federation_pb2.JoinRequest(protocol_major=1, protocol_minor=0), timeout=10)
    assert (joined.site, joined.protocol_major, joined.run_config.rounds) == ("site-a", 1, 3)
    chunks = list(stub.GetModel(federation_pb2.GetModelRequest(version=5), timeout=10))
    assert chunks[0].WhichOneof("kind") == "header" and chunks[0].header.version == 5
    assert b"".join(c.data for c in chunks[1:]) == b"abcd"
    upload = [
        federation_pb2.UpdateChunk(header=federation_pb2.UpdateHeader(round=1, total_bytes=3, metrics={"loss": 0.5})),
        federation_pb2.UpdateChunk(data=b"xyz"),
    ]
    assert stub.SubmitUpdate(iter(upload), timeout=10).accepted
    with pytest.raises(grpc.RpcError) as caught:
        admin_pb2_grpc.AdminStub(channel).ListSites(admin_pb2.ListSitesRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
