"""Test-side clients of the aggregator (a minimal site and admin) and update payload builders."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedmedclip import PROTOCOL_VERSION
from fedmedclip.federation import payload as framing
from fedmedclip.federation.codec import CodecConfig, EncodedUpdate, encode_update
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.federation.serde import codec_config_to_proto, run_config_to_proto
from fedmedclip.model.fam import FAM_MATRIX_NAMES, fam_shapes
from fedmedclip.rpc.v1 import admin_pb2, admin_pb2_grpc, common_pb2, federation_pb2, federation_pb2_grpc

ADMIN_TOKEN = "test-admin-token-0123456789abcdefXYZ"
DIM = 16  # FAM width of the test runs: small enough that payloads are a few KiB
TIMEOUT = 20.0


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def run_config(**overrides: Any) -> RunConfig:
    values: dict[str, Any] = {"embed_dim": DIM, "rounds": 3, "min_sites": 1, "round_timeout_s": 60.0}
    values.update(overrides)
    return RunConfig(**values)


def make_update(seed: int, dim: int = DIM, codec: CodecConfig | None = None, scale: float = 0.01) -> EncodedUpdate:
    """A random FAM delta of width ``dim``, encoded like a site would (all rows alive)."""
    generator = torch.Generator().manual_seed(seed)
    delta = {name: torch.randn(shape, generator=generator) * scale for name, shape in fam_shapes(dim).items()}
    alive = {name: torch.ones(dim, dtype=torch.bool) for name in FAM_MATRIX_NAMES}
    return encode_update(delta, alive, None, codec or CodecConfig())


def with_non_finite(payload: bytes, value: str = "nan", tensor: str = "m1.bias") -> bytes:
    """A well-framed payload whose ``tensor`` holds a NaN or +Inf (the encoder refuses to produce one)."""
    header, body = framing.unpack(payload, 1 << 26)
    entry = next(e for e in header["tensors"] if e["name"] == tensor)
    offset = entry["parts"]["values"]["offset"]
    half = entry["encoding"].endswith("fp16")
    bits = {"nan": (b"\x00\x7e", b"\x00\x00\xc0\x7f"), "inf": (b"\x00\x7c", b"\x00\x00\x80\x7f")}[value]
    patch = bits[0] if half else bits[1]
    patched = body[:offset] + patch + body[offset + len(patch) :]
    return framing.pack(header, patched, header["body"]["compression"])


class AdminStub:
    def __init__(self, channel: grpc.Channel, token: str = ADMIN_TOKEN) -> None:
        self.stub = admin_pb2_grpc.AdminStub(channel)
        self.metadata = bearer(token)

    def __call__(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=TIMEOUT)

    def enrol(self, name: str) -> str:
        return str(self("EnrolSite", admin_pb2.EnrolSiteRequest(site=name)).token)

    def start(self, config: RunConfig, initial_version: int = 0) -> str:
        request = admin_pb2.StartRunRequest(config=run_config_to_proto(config), initial_version=initial_version)
        return str(self("StartRun", request).run_id)

    def status(self, run_id: str = "") -> admin_pb2.RunStatus:
        return self("GetRunStatus", admin_pb2.GetRunStatusRequest(run_id=run_id))

    def versions(self, run_id: str) -> list[admin_pb2.FamVersion]:
        return list(self("ListVersions", admin_pb2.ListVersionsRequest(run_id=run_id)).versions)

    def wait_for(self, predicate: Callable[[admin_pb2.RunStatus], bool], run_id: str, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(run_id)
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; last status: {status}")
            time.sleep(0.05)


@dataclass
class SiteClient:
    """What a hospital agent does over the wire, minus training."""

    channel: grpc.Channel
    token: str
    name: str

    @property
    def stub(self) -> federation_pb2_grpc.FederationStub:
        return federation_pb2_grpc.FederationStub(self.channel)

    def join(self, protocol: tuple[int, int] = PROTOCOL_VERSION) -> federation_pb2.JoinResponse:
        request = federation_pb2.JoinRequest(
            protocol_major=protocol[0], protocol_minor=protocol[1], software_version="test"
        )
        return self.stub.Join(request, metadata=bearer(self.token), timeout=TIMEOUT)

    def poll(self, run_id: str, wait_seconds: int = 0) -> federation_pb2.Task:
        request = federation_pb2.PollTaskRequest(run_id=run_id, wait_seconds=wait_seconds)
        return self.stub.PollTask(request, metadata=bearer(self.token), timeout=TIMEOUT + wait_seconds)

    def get_model(self, version: int) -> tuple[common_pb2.ModelHeader, bytes]:
        chunks = list(
            self.stub.GetModel(
                federation_pb2.GetModelRequest(version=version), metadata=bearer(self.token), timeout=TIMEOUT
            )
        )
        return chunks[0].header, b"".join(c.data for c in chunks[1:])

    def submit(
        self,
        run_id: str,
        round_number: int,
        base_version: int,
        update: EncodedUpdate,
        num_samples: int = 10,
        chunk_bytes: int = 1000,
        **header_overrides: Any,
    ) -> federation_pb2.SubmitUpdateResponse:
        payload = header_overrides.pop("payload", update.payload)
        fields: dict[str, Any] = {
            "run_id": run_id,
            "round": round_number,
            "base_version": base_version,
            "num_samples": num_samples,
            "metrics": {"train_loss": 0.5},
            "codec": codec_config_to_proto(CodecConfig()),
            "sha256": update.sha256,
            "total_bytes": len(payload),
        }
        fields.update(header_overrides)
        return self.stub.SubmitUpdate(
            upload(federation_pb2.UpdateHeader(**fields), payload, chunk_bytes),
            metadata=bearer(self.token),
            timeout=TIMEOUT,
        )

    def heartbeat(self, run_id: str, round_number: int) -> federation_pb2.HeartbeatResponse:
        request = federation_pb2.HeartbeatRequest(run_id=run_id, round=round_number)
        return self.stub.Heartbeat(request, metadata=bearer(self.token), timeout=TIMEOUT)


def upload(
    header: federation_pb2.UpdateHeader, payload: bytes, chunk_bytes: int
) -> Iterator[federation_pb2.UpdateChunk]:
    yield federation_pb2.UpdateChunk(header=header)
    for start in range(0, len(payload), chunk_bytes):
        yield federation_pb2.UpdateChunk(data=payload[start : start + chunk_bytes])


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """The ``grpc.RpcError`` that ``call`` raises (fails the test if it succeeds)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call succeeded; expected an RpcError")


def health_status(channel: grpc.Channel, service: str = "") -> str:
    """The gRPC health status name of ``service`` ("SERVING", "NOT_SERVING"), or the RPC's error code."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    except grpc.RpcError as exc:
        return exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def wait_serving(channel: grpc.Channel, timeout: float = 30.0) -> float:
    """Wait until the server reports SERVING (a PostgreSQL aggregator does once it leads); returns seconds."""
    started = time.monotonic()
    while health_status(channel) != "SERVING":
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not SERVING after {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - started


LISTENING = re.compile(r"aggregator listening on [^\s]+:(\d+)")
