"""The privacy ledger over real gRPC: stored with the update, shown by `runs status`, hostile values refused;
a site's "budget spent" heartbeat is recorded once, shown as such (not missing), and not waited for."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from typer.testing import CliRunner

from aggregator_service.cli import app
from aggregator_service.server import RunningServer
from fedmedclip.rpc.v1 import admin_pb2, common_pb2, federation_pb2
from tests.aggregator.helpers import ADMIN_TOKEN, AdminStub, SiteClient, bearer, make_update, rpc_error, run_config

LEDGER = common_pb2.PrivacyLedger(
    epsilon=1.234, delta=1e-5, sigma=1.1, clip_norm=1.0, sample_rate=0.25, steps=4, rounds=1, target_epsilon=3.0
)


def _budget_spent(site: SiteClient, run_id: str) -> None:
    request = federation_pb2.HeartbeatRequest(run_id=run_id, activity=federation_pb2.SITE_ACTIVITY_BUDGET_SPENT)
    site.stub.Heartbeat(request, metadata=bearer(site.token), timeout=10)


def test_ledger_is_stored_and_shown_and_a_spent_budget_is_not_a_fault(
    server: RunningServer,
    admin: AdminStub,
    enrol: Callable[[str], SiteClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private, spent, silent = enrol("site-a"), enrol("site-b"), enrol("site-c")
    # Two rounds, quorum 1: round 1 waits for every enabled site that can still contribute.
    run_id = admin.start(run_config(min_sites=1, rounds=2, round_timeout_s=600.0))
    base = private.poll(run_id).train.fam_version
    bad = common_pb2.PrivacyLedger(epsilon=-1.0, delta=1e-5, sample_rate=0.25)
    error = rpc_error(lambda: private.submit(run_id, 1, base, make_update(1), privacy=bad))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "privacy" in (error.details() or "")
    assert private.submit(run_id, 1, base, make_update(1), privacy=LEDGER).accepted
    _budget_spent(spent, run_id)
    _budget_spent(spent, run_id)  # repeated by every heartbeat: recorded once
    assert admin.status(run_id).rounds[0].state == admin_pb2.ROUND_STATE_OPEN  # still waits for site-c
    assert silent.submit(run_id, 1, base, make_update(2)).accepted  # no ledger: a site without DP
    # site-b is not waited for: the round closes with the two updates it can get.
    status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED, run_id)
    parts = {p.site: p for p in status.rounds[0].participants}
    assert parts["site-a"].privacy == LEDGER and not parts["site-c"].HasField("privacy")
    assert parts["site-b"].state == admin_pb2.PARTICIPATION_STATE_BUDGET_SPENT
    assert parts["site-b"].message == "privacy budget spent"

    monkeypatch.setenv("FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("COLUMNS", "250")
    shown = CliRunner().invoke(
        app, ["runs", "status", run_id, "--server", f"127.0.0.1:{server.port}", "--insecure-loopback"]
    )
    assert shown.exit_code == 0, shown.output
    rows = {tuple(line.split()[:2]): line for line in shown.output.splitlines() if line[:1].isdigit()}
    assert "1.23 (1.0e-05)" in rows[("1", "site-a")] and "budget_spent" in rows[("1", "site-b")], shown.output
    assert "budget_spent" in rows[("2", "site-b")] and "missing" in rows[("2", "site-c")]
