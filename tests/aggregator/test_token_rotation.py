"""Site token rotation: the new token works at once, the old one until its grace period ends, then never.

Handler level with a controlled clock (both backends), then over a real socket with the operator CLI.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from typer.testing import CliRunner

from aggregator_service import admin_handlers
from aggregator_service.auth import authenticate_site
from aggregator_service.cli import app
from aggregator_service.context import Limits, Services
from aggregator_service.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from aggregator_service.server import RunningServer
from aggregator_service.store.sql import SqlStore
from fedmedclip.rpc.v1 import admin_pb2
from tests.aggregator.helpers import ADMIN_TOKEN, AdminStub, SiteClient, rpc_error

T0 = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.both_backends
def test_old_token_works_through_the_grace_period_then_stops(store: SqlStore) -> None:
    clock = Clock()
    svc = Services(store=store, admin_token=ADMIN_TOKEN, clock=clock, limits=Limits(site_token_grace_s=3600))
    old = admin_handlers.enrol_site(svc, "site-a", "").token

    reply = admin_handlers.rotate_site_token(svc, "site-a", None)  # the configured default: one hour
    assert reply.token != old and reply.token.startswith("fmc_")
    assert reply.previous_token_expires_at == T0 + timedelta(hours=1)
    assert authenticate_site(svc, reply.token).name == "site-a"
    clock.now = T0 + timedelta(minutes=59)
    assert authenticate_site(svc, old).name == "site-a"  # mid-grace: both tokens work
    assert authenticate_site(svc, reply.token).name == "site-a"
    clock.now = T0 + timedelta(hours=1)
    with pytest.raises(Unauthenticated):
        authenticate_site(svc, old)
    assert authenticate_site(svc, reply.token).name == "site-a"
    audit = [(a.action, a.site) for a in store.list_audit()]
    assert ("RotateSiteToken", "site-a") in audit


@pytest.mark.both_backends
def test_rotating_again_ends_the_oldest_token_and_zero_grace_ends_it_now(store: SqlStore) -> None:
    clock = Clock()
    svc = Services(store=store, admin_token=ADMIN_TOKEN, clock=clock)
    first = admin_handlers.enrol_site(svc, "site-a", "").token
    second = admin_handlers.rotate_site_token(svc, "site-a", 600).token
    third = admin_handlers.rotate_site_token(svc, "site-a", 600).token
    with pytest.raises(Unauthenticated):
        authenticate_site(svc, first)  # only one replaced token is kept
    assert authenticate_site(svc, second).name == authenticate_site(svc, third).name == "site-a"

    reply = admin_handlers.rotate_site_token(svc, "site-a", 0)
    assert reply.previous_token_expires_at is None
    for stale in (second, third):
        with pytest.raises(Unauthenticated):
            authenticate_site(svc, stale)
    assert authenticate_site(svc, reply.token).name == "site-a"


def test_rotation_refusals(store: SqlStore) -> None:
    svc = Services(store=store, admin_token=ADMIN_TOKEN, clock=Clock())
    token = admin_handlers.enrol_site(svc, "site-a", "").token
    with pytest.raises(NotFound, match="no site named 'ghost'"):
        admin_handlers.rotate_site_token(svc, "ghost", 10)
    with pytest.raises(InvalidArgument, match="grace period"):
        admin_handlers.rotate_site_token(svc, "site-a", -1)
    with pytest.raises(InvalidArgument, match="grace period"):
        admin_handlers.rotate_site_token(svc, "site-a", 1e9)
    admin_handlers.rotate_site_token(svc, "site-a", 3600)
    admin_handlers.revoke_site(svc, "site-a", "left the consortium")
    with pytest.raises(FailedPrecondition, match="revoked"):
        admin_handlers.rotate_site_token(svc, "site-a", 10)
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate_site(svc, token)  # revocation ends the token in its grace period too


def test_rotate_over_a_real_socket(
    server: RunningServer, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI prints the new token once; both tokens work over gRPC until the grace ends, then only the new."""
    admin = AdminStub(channel)
    old = SiteClient(channel, admin.enrol("site-a"), "site-a")
    assert old.join().site == "site-a"

    monkeypatch.setenv("FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN", ADMIN_TOKEN)
    target = ["--server", f"127.0.0.1:{server.port}", "--insecure-loopback"]
    result = CliRunner().invoke(app, ["sites", "rotate", "site-a", "--grace", "2", *target])
    assert result.exit_code == 0, result.output
    assert "the old token works until" in result.output and "cannot be shown again" in result.output
    new = SiteClient(channel, result.output.split()[-1], "site-a")
    assert new.token.startswith("fmc_") and new.token != old.token

    assert new.join().site == "site-a"
    assert old.join().site == "site-a"  # in its grace period
    deadline = time.monotonic() + 10
    while (code := _join_code(old)) == "OK":
        assert time.monotonic() < deadline, "the old token still works 10 s after a 2 s grace period"
        time.sleep(0.2)
    assert code == "UNAUTHENTICATED"
    assert new.join().site == "site-a"

    refused = rpc_error(
        lambda: admin("RotateSiteToken", admin_pb2.RotateSiteTokenRequest(site="site-a", grace_seconds=-5))
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    unknown = CliRunner().invoke(app, ["sites", "rotate", "ghost", *target])
    assert unknown.exit_code != 0 and "no site named 'ghost'" in unknown.output
    as_site = rpc_error(
        lambda: AdminStub(channel, new.token)("RotateSiteToken", admin_pb2.RotateSiteTokenRequest(site="a"))
    )
    assert as_site.code() == grpc.StatusCode.PERMISSION_DENIED


def _join_code(site: SiteClient) -> str:
    try:
        site.join()
    except grpc.RpcError as exc:
        return exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
    return "OK"


def test_rotate_checks_its_text_like_every_admin_rpc(channel: grpc.Channel) -> None:
    """An oversized site name is refused by field name before any lookup, as on EnrolSite or RevokeSite."""
    admin = AdminStub(channel)
    refused = rpc_error(lambda: admin("RotateSiteToken", admin_pb2.RotateSiteTokenRequest(site="x" * 5000)))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "field site has 5000 characters" in (refused.details() or "")
