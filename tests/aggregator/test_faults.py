"""Bad input over real sockets: every refusal has its status code, stores nothing and is audited."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from aggregator_service.audit import flush_refusals
from aggregator_service.server import RunningServer
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.serde import codec_config_to_proto
from fedmedclip.rpc.v1 import admin_pb2, admin_pb2_grpc, federation_pb2, federation_pb2_grpc
from tests.aggregator.helpers import (
    TIMEOUT,
    AdminStub,
    SiteClient,
    bearer,
    make_update,
    rpc_error,
    run_config,
    upload,
    with_non_finite,
)

Code = grpc.StatusCode


@dataclass
class Federation:
    server: RunningServer
    admin: AdminStub
    sites: list[SiteClient]
    run_id: str
    base: int

    def updates_stored(self) -> int:
        store = self.server.svc.store
        return sum(len(store.list_updates(r.id)) for r in store.list_rounds(self.run_id))

    def refusals(self) -> list[tuple[str, str, str | None]]:
        flush_refusals(self.server.svc)  # refusals are counted in memory and written in batches
        return [(a.action, a.code, a.site) for a in self.server.svc.store.list_audit(outcome="refused")]


@pytest.fixture
def federation(server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient]) -> Federation:
    sites = [enrol("site-a"), enrol("site-b")]
    run_id = admin.start(run_config(min_sites=2, rounds=3, norm_bound=1.0))
    base = sites[0].poll(run_id).train.fam_version
    return Federation(server, admin, sites, run_id, base)


def assert_refused(federation: Federation, error: grpc.RpcError, code: grpc.StatusCode, action: str) -> None:
    assert error.code() == code, error.details()
    assert federation.updates_stored() == 0
    assert (action, code.name) in [(a, c) for a, c, _ in federation.refusals()]


# --- credentials --------------------------------------------------------------------------------------


def test_every_rpc_denies_a_call_without_credentials(channel: grpc.Channel, server: RunningServer) -> None:
    federation = federation_pb2_grpc.FederationStub(channel)
    admin = admin_pb2_grpc.AdminStub(channel)
    calls: list[Callable[[], object]] = [
        lambda: federation.Join(federation_pb2.JoinRequest(protocol_major=1), timeout=TIMEOUT),
        lambda: federation.PollTask(federation_pb2.PollTaskRequest(run_id="x"), timeout=TIMEOUT),
        lambda: list(federation.GetModel(federation_pb2.GetModelRequest(version=1), timeout=TIMEOUT)),
        lambda: federation.SubmitUpdate(iter([federation_pb2.UpdateChunk(data=b"x")]), timeout=TIMEOUT),
        lambda: federation.Heartbeat(federation_pb2.HeartbeatRequest(), timeout=TIMEOUT),
        lambda: admin.StartRun(admin_pb2.StartRunRequest(), timeout=TIMEOUT),
        lambda: admin.StopRun(admin_pb2.StopRunRequest(run_id="x"), timeout=TIMEOUT),
        lambda: admin.ListRuns(admin_pb2.ListRunsRequest(), timeout=TIMEOUT),
        lambda: admin.GetRunStatus(admin_pb2.GetRunStatusRequest(), timeout=TIMEOUT),
        lambda: admin.ListVersions(admin_pb2.ListVersionsRequest(run_id="x"), timeout=TIMEOUT),
        lambda: list(admin.ExportVersion(admin_pb2.ExportVersionRequest(version=1), timeout=TIMEOUT)),
        lambda: admin.EnrolSite(admin_pb2.EnrolSiteRequest(site="evil"), timeout=TIMEOUT),
        lambda: admin.ListSites(admin_pb2.ListSitesRequest(), timeout=TIMEOUT),
        lambda: admin.RevokeSite(admin_pb2.RevokeSiteRequest(site="x"), timeout=TIMEOUT),
    ]
    for call in calls:
        assert rpc_error(call).code() == Code.UNAUTHENTICATED
    flush_refusals(server.svc)
    assert len(server.svc.store.list_audit(outcome="refused")) == len(calls)  # one action each: one row each
    assert server.svc.store.list_sites() == []


def test_wrong_and_revoked_tokens_are_unauthenticated(federation: Federation) -> None:
    site_a, site_b = federation.sites
    update = make_update(1)
    forged = SiteClient(site_a.channel, "fmc_" + "A" * 43, "forged")
    error = rpc_error(lambda: forged.submit(federation.run_id, 1, federation.base, update))
    assert_refused(federation, error, Code.UNAUTHENTICATED, "SubmitUpdate")

    federation.admin("RevokeSite", admin_pb2.RevokeSiteRequest(site="site-b", reason="test"))
    error = rpc_error(lambda: site_b.submit(federation.run_id, 1, federation.base, update))
    assert_refused(federation, error, Code.UNAUTHENTICATED, "SubmitUpdate")
    assert "revoked" in (error.details() or "")


def test_site_token_on_admin_and_admin_token_as_site_are_denied(federation: Federation) -> None:
    as_site = AdminStub(federation.sites[0].channel, federation.sites[0].token)
    error = rpc_error(lambda: as_site("ListSites", admin_pb2.ListSitesRequest()))
    assert error.code() == Code.PERMISSION_DENIED
    admin_as_site = SiteClient(federation.sites[0].channel, federation.admin.metadata[0][1][7:], "admin")
    assert rpc_error(lambda: admin_as_site.join()).code() == Code.PERMISSION_DENIED


def test_a_site_cannot_fill_another_sites_slot(federation: Federation) -> None:
    site_a = federation.sites[0]
    error = rpc_error(lambda: site_a.submit(federation.run_id, 1, federation.base, make_update(1), site="site-b"))
    assert_refused(federation, error, Code.PERMISSION_DENIED, "SubmitUpdate")
    assert "own slot" in (error.details() or "")
    # Naming itself is fine.
    assert site_a.submit(federation.run_id, 1, federation.base, make_update(1), site="site-a").accepted


# --- protocol and round state -------------------------------------------------------------------------


def test_protocol_major_mismatch_names_both_versions(federation: Federation) -> None:
    error = rpc_error(lambda: federation.sites[0].join(protocol=(2, 3)))
    assert error.code() == Code.FAILED_PRECONDITION
    assert "2.3" in (error.details() or "") and "1.0" in (error.details() or "")
    assert ("Join", "FAILED_PRECONDITION", "site-a") in federation.refusals()
    assert federation.sites[0].join(protocol=(1, 7)).run_id == federation.run_id  # minor differences are fine


def test_stale_base_version_and_unopened_round_are_refused(federation: Federation) -> None:
    site_a = federation.sites[0]
    error = rpc_error(lambda: site_a.submit(federation.run_id, 1, federation.base + 99, make_update(1)))
    assert_refused(federation, error, Code.FAILED_PRECONDITION, "SubmitUpdate")
    assert "stale base version" in (error.details() or "")
    error = rpc_error(lambda: site_a.submit(federation.run_id, 2, federation.base, make_update(1)))
    assert_refused(federation, error, Code.FAILED_PRECONDITION, "SubmitUpdate")


def test_update_for_a_closed_round_is_refused(federation: Federation) -> None:
    site_a, site_b = federation.sites
    site_a.submit(federation.run_id, 1, federation.base, make_update(1))
    site_b.submit(federation.run_id, 1, federation.base, make_update(2))
    federation.admin.wait_for(lambda s: s.current_round == 2, federation.run_id)
    stored = federation.updates_stored()
    error = rpc_error(lambda: site_a.submit(federation.run_id, 1, federation.base, make_update(3)))
    assert error.code() == Code.FAILED_PRECONDITION and "closed" in (error.details() or "")
    assert federation.updates_stored() == stored
    assert ("SubmitUpdate", "FAILED_PRECONDITION", "site-a") in federation.refusals()
    # The very same bytes again are still acknowledged: a retry after a lost response must not fail.
    again = site_a.submit(federation.run_id, 1, federation.base, make_update(1))
    assert again.accepted and again.duplicate


# --- payloads -----------------------------------------------------------------------------------------


def _submit_payload(federation: Federation, payload: bytes, **header: object) -> grpc.RpcError:
    update = make_update(1)
    fields: dict[str, Any] = {"payload": payload, "sha256": hashlib.sha256(payload).hexdigest()}
    fields.update(header)
    return rpc_error(lambda: federation.sites[0].submit(federation.run_id, 1, federation.base, update, **fields))


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("nan", "NaN or Inf"),
        ("inf", "NaN or Inf"),
        ("wrong_shapes", "shape"),
        ("corrupt", "corrupt update"),
        ("sha_mismatch", "sha256 mismatch"),
        ("wrong_codec", "codec"),
        ("norm_bound", "norm"),
    ],
)
def test_bad_payloads_are_invalid_arguments(federation: Federation, case: str, needle: str) -> None:
    good = make_update(1)
    if case in ("nan", "inf"):
        error = _submit_payload(federation, with_non_finite(good.payload, case))
    elif case == "wrong_shapes":
        error = _submit_payload(federation, make_update(1, dim=12).payload)
    elif case == "corrupt":
        error = _submit_payload(federation, b"FMCU" + bytes(range(200)))
    elif case == "sha_mismatch":
        error = _submit_payload(federation, good.payload, sha256=hashlib.sha256(b"other").hexdigest())
    elif case == "wrong_codec":
        other = CodecConfig(quantization="fp16")
        error = _submit_payload(federation, make_update(1, codec=other).payload, codec=codec_config_to_proto(other))
    else:
        error = _submit_payload(federation, make_update(1, scale=1e3).payload)
    assert_refused(federation, error, Code.INVALID_ARGUMENT, "SubmitUpdate")
    assert needle in (error.details() or ""), error.details()


@pytest.fixture
def bounded_run(server_factory: Callable[..., RunningServer], database_url: str) -> Federation:
    server = server_factory(max_update_bytes=2048)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    admin = AdminStub(channel)
    site = SiteClient(channel, admin.enrol("site-a"), "site-a")
    run_id = admin.start(run_config(norm_bound=1.0))
    return Federation(server, admin, [site], run_id, site.poll(run_id).train.fam_version)


def test_oversize_uploads_are_refused_before_and_while_reading(bounded_run: Federation) -> None:
    site = bounded_run.sites[0]
    big = make_update(1, dim=64)  # a few KiB against a 2 KiB limit
    assert len(big.payload) > 2048
    error = rpc_error(lambda: site.submit(bounded_run.run_id, 1, bounded_run.base, big))
    assert_refused(bounded_run, error, Code.INVALID_ARGUMENT, "SubmitUpdate")
    assert "exceeds the limit" in (error.details() or "")
    # A stream longer than its header announced is cut off as soon as it passes the announced length.
    small = make_update(1)
    error = rpc_error(
        lambda: site.submit(bounded_run.run_id, 1, bounded_run.base, small, total_bytes=len(small.payload) - 10)
    )
    assert error.code() == Code.INVALID_ARGUMENT and "longer than the announced" in (error.details() or "")
    assert bounded_run.updates_stored() == 0


def test_header_must_come_first_and_once(federation: Federation) -> None:
    stub = federation.sites[0].stub
    meta = bearer(federation.sites[0].token)
    error = rpc_error(lambda: stub.SubmitUpdate(iter([federation_pb2.UpdateChunk(data=b"x")]), metadata=meta))
    assert error.code() == Code.INVALID_ARGUMENT
    update = make_update(1)
    header = federation_pb2.UpdateHeader(
        run_id=federation.run_id,
        round=1,
        base_version=federation.base,
        num_samples=1,
        sha256=update.sha256,
        total_bytes=len(update.payload),
    )
    twice = [*upload(header, update.payload, 500), federation_pb2.UpdateChunk(header=header)]
    assert rpc_error(lambda: stub.SubmitUpdate(iter(twice), metadata=meta)).code() == Code.INVALID_ARGUMENT
    assert federation.updates_stored() == 0


# --- idempotency --------------------------------------------------------------------------------------


def test_submission_is_idempotent_per_round_and_site(federation: Federation) -> None:
    site_a = federation.sites[0]
    update = make_update(1)
    first = site_a.submit(federation.run_id, 1, federation.base, update)
    again = site_a.submit(federation.run_id, 1, federation.base, update, chunk_bytes=333)
    assert (first.accepted, first.duplicate) == (True, False)
    assert (again.accepted, again.duplicate) == (True, True)
    error = rpc_error(lambda: site_a.submit(federation.run_id, 1, federation.base, make_update(2)))
    assert error.code() == Code.ALREADY_EXISTS
    assert federation.updates_stored() == 1
