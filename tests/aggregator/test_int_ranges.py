"""Every integer field of every request, swept over the edges of its wire type, against a real server.

The sweep is generated from the proto descriptors: a field added later is swept without editing this file.
A value beyond what the aggregator can store is refused with INVALID_ARGUMENT naming the field; any other
value gets some definite answer, never INTERNAL or UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from aggregator_service.server import RunningServer
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.serde import codec_config_to_proto, run_config_to_proto
from fedmedclip.rpc.v1 import admin_pb2, admin_pb2_grpc, federation_pb2, federation_pb2_grpc
from tests.aggregator.helpers import TIMEOUT, AdminStub, bearer, run_config

_SIGNED = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_INTS = _SIGNED | {
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}
_NUMERIC = _INTS | {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
_32_BIT = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32,
}


def numeric_paths(descriptor: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, field)`` of every singular numeric field reachable from ``descriptor``."""
    for field in descriptor.fields:
        path = (*prefix, field.name)
        if field.is_repeated:
            continue  # no request has a repeated number; maps hold strings → doubles (bounded elsewhere)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from numeric_paths(field.message_type, path)
        elif field.type in _NUMERIC:
            yield path, field


def sweep_values(field: Any) -> list[int | float]:
    values: list[int | float] = [0, 1 << 31, 1 << 63, (1 << 64) - 1]
    if field.type in _SIGNED:
        values.insert(1, -1)
    return values


def out_of_range(field: Any, value: float) -> bool:
    """What the aggregator must refuse: integers that do not fit the signed column they are stored in."""
    if field.type not in _INTS:
        return False
    bits = 31 if field.type in _32_BIT else 63
    return not -(1 << bits) <= value < (1 << bits)


def with_value(base: Message, path: tuple[str, ...], value: float) -> Message | None:
    """A copy of ``base`` with ``path`` set to ``value``, or None where the wire type cannot hold it."""
    message = type(base)()
    message.CopyFrom(base)
    target = message
    for name in path[:-1]:
        target = getattr(target, name)
    try:
        setattr(target, path[-1], value)
    except (ValueError, TypeError):
        return None
    return message


@pytest.fixture
def world(server: RunningServer) -> Iterator[dict[str, Any]]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin = AdminStub(channel)
        token = admin.enrol("sweeper")
        run_id = admin.start(run_config(rounds=2))
        yield {
            "channel": channel,
            "admin": admin_pb2_grpc.AdminStub(channel),
            "site": federation_pb2_grpc.FederationStub(channel),
            "site_md": bearer(token),
            "admin_md": admin.metadata,
            "run_id": run_id,
        }


def _base_requests(run_id: str) -> dict[str, tuple[str, Message]]:
    """A sensible request per method (service, message); the sweep changes one number at a time."""
    config = run_config_to_proto(run_config(rounds=2))
    header = federation_pb2.UpdateHeader(
        run_id=run_id,
        round=1,
        base_version=1,
        num_samples=10,
        sha256="0" * 64,
        total_bytes=100,
        codec=codec_config_to_proto(CodecConfig()),
    )
    return {
        "Join": ("site", federation_pb2.JoinRequest(protocol_major=1, protocol_minor=0, software_version="t")),
        "PollTask": ("site", federation_pb2.PollTaskRequest(run_id=run_id, wait_seconds=0)),
        "GetModel": ("site", federation_pb2.GetModelRequest(version=1)),
        "SubmitUpdate": ("site", federation_pb2.UpdateChunk(header=header)),
        "Heartbeat": ("site", federation_pb2.HeartbeatRequest(run_id=run_id, round=1)),
        "AdvertiseKeys": ("site", federation_pb2.AdvertiseKeysRequest(run_id=run_id, round=1)),
        "ShareKeys": ("site", federation_pb2.ShareKeysRequest(run_id=run_id, round=1)),
        "SubmitMaskedInput": (
            "site",
            federation_pb2.MaskedInputChunk(
                header=federation_pb2.MaskedInputHeader(run_id=run_id, round=1, sha256="0" * 64, total_bytes=100)
            ),
        ),
        "Unmask": ("site", federation_pb2.UnmaskRequest(run_id=run_id, round=1)),
        "StartRun": ("admin", admin_pb2.StartRunRequest(config=config)),
        "StopRun": ("admin", admin_pb2.StopRunRequest(run_id="nope")),
        "ListRuns": ("admin", admin_pb2.ListRunsRequest()),
        "GetRunStatus": ("admin", admin_pb2.GetRunStatusRequest(run_id=run_id)),
        "ListVersions": ("admin", admin_pb2.ListVersionsRequest(run_id=run_id)),
        "ExportVersion": ("admin", admin_pb2.ExportVersionRequest(version=1)),
        "EnrolSite": ("admin", admin_pb2.EnrolSiteRequest(site="other-site")),
        "ListSites": ("admin", admin_pb2.ListSitesRequest()),
        "RevokeSite": ("admin", admin_pb2.RevokeSiteRequest(site="no-such-site")),
        "RotateSiteToken": ("admin", admin_pb2.RotateSiteTokenRequest(site="no-such-site")),
    }


def _caller(world: dict[str, Any], service: str, method: str) -> Callable[[Message], Any]:
    stub, metadata = (world["site"], world["site_md"]) if service == "site" else (world["admin"], world["admin_md"])
    rpc = getattr(stub, method)
    if method in ("SubmitUpdate", "SubmitMaskedInput"):
        return lambda request: rpc(iter([request]), metadata=metadata, timeout=TIMEOUT)
    if method in ("GetModel", "ExportVersion"):
        return lambda request: list(rpc(request, metadata=metadata, timeout=TIMEOUT))
    return lambda request: rpc(request, metadata=metadata, timeout=TIMEOUT)


def _status(call: Callable[[Message], Any], request: Message) -> tuple[grpc.StatusCode, str]:
    try:
        call(request)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_every_service_method_is_swept(world: dict[str, Any]) -> None:
    methods = {
        m.name
        for pb in (federation_pb2, admin_pb2)
        for service in pb.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    }
    assert methods == set(_base_requests(world["run_id"]))


def test_integer_sweep_refuses_out_of_range_values_by_name_and_never_fails_internally(
    world: dict[str, Any],
) -> None:
    answers: dict[str, int] = {}
    swept = 0
    for method, (service, base) in _base_requests(world["run_id"]).items():
        call = _caller(world, service, method)
        for path, field in numeric_paths(base.DESCRIPTOR):
            for value in sweep_values(field):
                request = with_value(base, path, value)
                if request is None:
                    continue  # the wire type cannot carry this value: no client can send it
                swept += 1
                where = f"{method} {'.'.join(path)}={value}"
                code, details = _status(call, request)
                assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), f"{where}: {details}"
                if out_of_range(field, value):
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {code.name} {details}"
                    assert path[-1] in details, f"{where}: {details}"
                answers[code.name] = answers.get(code.name, 0) + 1
    assert swept > 100  # every method, the whole RunConfig tree included
    assert answers.get("INVALID_ARGUMENT", 0) > 50
