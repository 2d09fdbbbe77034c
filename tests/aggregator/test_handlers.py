"""The aggregator's layers on their own: ``rounds.decide`` and the Federation/Admin handlers, called as plain
functions against the store (SQLite and PostgreSQL through ``both_backends``), with no gRPC server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator_service import admin_handlers, federation_handlers
from aggregator_service.audit import flush_refusals, record_refusal
from aggregator_service.auth import authenticate_admin, authenticate_site
from aggregator_service.context import Services
from aggregator_service.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from aggregator_service.rounds import RoundEngine, decide
from aggregator_service.store.base import SiteRecord
from aggregator_service.store.sql import SqlStore
from fedmedclip import PROTOCOL_VERSION
from fedmedclip.federation import messages as m
from fedmedclip.federation.codec import CodecConfig, EncodedUpdate
from fedmedclip.federation.fam_bytes import sha256_hex
from tests.aggregator.helpers import ADMIN_TOKEN, make_update, run_config

T0 = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


# --- rounds.decide: a pure function of counts, config and clock ------------------------------------------


@pytest.mark.parametrize(
    ("accepted", "enabled", "late_policy", "past_deadline", "expected"),
    [
        (0, 3, "accept_until_quorum", False, "wait"),
        (2, 3, "accept_until_quorum", False, "wait"),  # quorum reached, others may still come
        (3, 3, "accept_until_quorum", False, "close"),  # everyone is in
        (2, 3, "accept_until_quorum", True, "close"),  # deadline passed with quorum
        (1, 3, "accept_until_quorum", True, "wait"),  # no quorum: keep accepting late updates
        (1, 3, "reopen", True, "abandon"),  # no quorum: start the round over
        (2, 3, "reopen", True, "close"),
        (1, 1, "reopen", False, "wait"),  # below min_sites even though every enabled site is in
    ],
)
def test_decide(accepted: int, enabled: int, late_policy: str, past_deadline: bool, expected: str) -> None:
    config = run_config(min_sites=2, late_policy=late_policy)
    deadline = T0 + timedelta(minutes=10)
    now = deadline + timedelta(seconds=1) if past_deadline else deadline - timedelta(seconds=1)
    assert decide(accepted, enabled, config, deadline, now) == expected
    assert decide(accepted, enabled, config, deadline, deadline) == decide(  # the deadline itself counts as past
        accepted, enabled, config, deadline, deadline + timedelta(seconds=1)
    )


# --- handlers against the store -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(store: SqlStore, clock: Clock) -> Services:
    return Services(store=store, admin_token=ADMIN_TOKEN, clock=clock)


def enrol(svc: Services, name: str) -> tuple[SiteRecord, str]:
    reply = admin_handlers.enrol_site(svc, name, f"{name} hospital")
    assert reply.site.name == name and reply.site.enabled and reply.token.startswith("fmc_")
    return authenticate_site(svc, reply.token), reply.token


def header_for(task: m.TrainTask, run_id: str, update: EncodedUpdate, **overrides: object) -> m.UpdateHeader:
    values: dict[str, object] = {
        "run_id": run_id,
        "round": task.round,
        "base_version": task.fam_version,
        "num_samples": 50,
        "metrics": {"val_acc": 0.5},
        "codec": CodecConfig(),
        "sha256": update.sha256,
        "total_bytes": len(update.payload),
    }
    values.update(overrides)
    return m.UpdateHeader(**values)  # type: ignore[arg-type]


def chunks(payload: bytes, size: int = 1000) -> list[bytes]:
    return [payload[i : i + size] for i in range(0, len(payload), size)]


@pytest.mark.both_backends
def test_credentials(svc: Services) -> None:
    site, token = enrol(svc, "site-a")
    assert site.name == "site-a"
    with pytest.raises(PermissionDenied, match="admin credential cannot act as a site"):
        authenticate_site(svc, ADMIN_TOKEN)
    with pytest.raises(Unauthenticated, match="unknown site token"):
        authenticate_site(svc, "fmc_guess")
    with pytest.raises(PermissionDenied, match="site credentials cannot call Admin"):
        authenticate_admin(svc, token)
    authenticate_admin(svc, ADMIN_TOKEN)
    assert admin_handlers.revoke_site(svc, "site-a", "lost laptop").enabled is False
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate_site(svc, token)


@pytest.mark.both_backends
def test_a_round_from_join_to_a_new_version(svc: Services, clock: Clock) -> None:
    site_a, _ = enrol(svc, "site-a")
    site_b, _ = enrol(svc, "site-b")
    idle = federation_handlers.join(svc, site_a, m.JoinRequest(PROTOCOL_VERSION, "0.1.0"))
    assert idle == m.JoinReply("site-a", "", None, PROTOCOL_VERSION)

    config = run_config(min_sites=2, rounds=2)
    started = admin_handlers.start_run(svc, m.StartRunRequest(config, "unit"))
    joined = federation_handlers.join(svc, site_b, m.JoinRequest(PROTOCOL_VERSION, "0.1.0", m.SiteInfo(device="cpu")))
    assert (joined.run_id, joined.run_config) == (started.run_id, config)
    assert (
        next(
            s for s in admin_handlers.list_sites(svc, m.ListSitesRequest()).sites if s.name == "site-b"
        ).site_info.device
        == "cpu"
    )

    task = federation_handlers.poll_task(svc, site_a, m.PollTaskRequest(started.run_id, 0))
    assert isinstance(task, m.TrainTask) and (task.round, task.fam_version) == (1, started.initial_version)
    blob = federation_handlers.get_model(svc, task.fam_version)
    assert blob.header == m.ModelHeader(task.fam_version, sha256_hex(blob.data), len(blob.data))

    updates = {site_a.name: make_update(1), site_b.name: make_update(2)}
    for site in (site_a, site_b):
        update = updates[site.name]
        # An upper-case digest with spaces is the same digest: the handler normalises it.
        header = header_for(task, started.run_id, update, sha256=f" {update.sha256.upper()} ", site=site.name)
        reply = federation_handlers.submit_update(svc, site, header, chunks(update.payload))
        assert reply == m.SubmitReply(True, False, "accepted for round 1")
    again = federation_handlers.submit_update(
        svc, site_a, header_for(task, started.run_id, updates["site-a"]), chunks(updates["site-a"].payload)
    )
    assert again.duplicate and again.accepted
    # Already submitted: nothing to do until the round closes.
    assert isinstance(federation_handlers.poll_task(svc, site_a, m.PollTaskRequest(started.run_id)), m.WaitTask)

    assert decide(2, 2, config, task.deadline or T0, clock.now) == "close"
    RoundEngine(svc).step()
    status = admin_handlers.run_status(svc, started.run_id)
    closed = status.rounds[0]
    assert (status.state, status.current_round, closed.state) == (m.RunState.RUNNING, 2, m.RoundState.CLOSED)
    assert [(p.site, p.state, p.num_samples) for p in closed.participants] == [
        ("site-a", m.ParticipationState.ACCEPTED, 50),
        ("site-b", m.ParticipationState.ACCEPTED, 50),
    ]
    versions = admin_handlers.list_versions(svc, m.ListVersionsRequest(started.run_id)).versions
    assert [v.version for v in versions] == [started.initial_version, closed.output_version]
    assert {c.site for c in versions[-1].contributions} == {"site-a", "site-b"}
    assert versions[-1].parent_version == started.initial_version

    late = federation_handlers.heartbeat(svc, site_a, m.HeartbeatRequest(started.run_id, "training", 1))
    assert late == m.HeartbeatReply(clock.now, True)  # round 1 is closed: stop working on it
    current = federation_handlers.heartbeat(svc, site_a, m.HeartbeatRequest(started.run_id, "training", 2))
    assert current.abandon_round is False


@pytest.mark.both_backends
def test_refused_updates_store_nothing(svc: Services) -> None:
    site_a, _ = enrol(svc, "site-a")
    enrol(svc, "site-b")
    started = admin_handlers.start_run(svc, m.StartRunRequest(run_config(min_sites=2)))
    task = federation_handlers.poll_task(svc, site_a, m.PollTaskRequest(started.run_id))
    assert isinstance(task, m.TrainTask)
    update = make_update(3)
    refusals: list[tuple[m.UpdateHeader, list[bytes], type[Exception], str]] = [
        (header_for(task, started.run_id, update, site="site-b"), [], PermissionDenied, "its own slot"),
        (header_for(task, started.run_id, update, base_version=99), [], FailedPrecondition, "stale base version"),
        (header_for(task, started.run_id, update, sha256="xyz"), [], InvalidArgument, "64 lower-case hex"),
        (header_for(task, started.run_id, update, round=7), [], FailedPrecondition, "no round 7"),
        (header_for(task, "nope", update), [], NotFound, "no run 'nope'"),
        (header_for(task, started.run_id, update), [update.payload, b"x"], InvalidArgument, "longer than"),
        (header_for(task, started.run_id, update), [update.payload[:-1]], InvalidArgument, "ended after"),
        (
            header_for(task, started.run_id, update, metrics={"loss": float("nan")}),
            [],
            InvalidArgument,
            "must be finite",
        ),
        (
            header_for(task, started.run_id, update, codec=CodecConfig(quantization="fp16")),
            [update.payload],
            InvalidArgument,
            "header announces codec",
        ),
    ]
    for header, body, error, message in refusals:
        with pytest.raises(error, match=message):
            federation_handlers.submit_update(svc, site_a, header, body)
    current = svc.store.current_round(started.run_id)
    assert current is not None and svc.store.list_updates(current.id) == []


@pytest.mark.both_backends
def test_stop_run_ends_polls_and_is_audited(svc: Services) -> None:
    site, _ = enrol(svc, "site-a")
    started = admin_handlers.start_run(svc, m.StartRunRequest(run_config()))
    assert admin_handlers.stop_run(svc, started.run_id, "maintenance") == m.RunState.STOPPED
    task = federation_handlers.poll_task(svc, site, m.PollTaskRequest(started.run_id))
    assert task == m.DoneTask(started.initial_version, "maintenance")
    status = admin_handlers.run_status(svc, "")
    assert (status.run_id, status.state, status.rounds[0].state) == (
        started.run_id,
        m.RunState.STOPPED,
        m.RoundState.ABANDONED,
    )
    with pytest.raises(NotFound):
        admin_handlers.stop_run(svc, "nope", "")
    error = FailedPrecondition("round 1 is closed: it accepts no updates")
    record_refusal(svc, "SubmitUpdate", "site-a", error, started.run_id, 1, "site-a")
    flush_refusals(svc)
    audit = {(a.action, a.outcome) for a in svc.store.list_audit()}
    assert {("EnrolSite", "ok"), ("StartRun", "ok"), ("StopRun", "ok"), ("SubmitUpdate", "refused")} <= audit
    # A refused update shows in the round's participation with its reason.
    part = admin_handlers.run_status(svc, started.run_id).rounds[0].participants[0]
    assert (part.state, part.message) == (m.ParticipationState.REJECTED, error.message)


@pytest.mark.both_backends
def test_start_run_from_a_version_that_does_not_fit(svc: Services) -> None:
    started = admin_handlers.start_run(svc, m.StartRunRequest(run_config()))
    admin_handlers.stop_run(svc, started.run_id, "")
    with pytest.raises(FailedPrecondition, match="does not fit embed_dim 32"):
        admin_handlers.start_run(svc, m.StartRunRequest(run_config(embed_dim=32), initial_version=1))
    with pytest.raises(NotFound, match="no FAM version 99"):
        admin_handlers.start_run(svc, m.StartRunRequest(run_config(), initial_version=99))
    again = admin_handlers.start_run(svc, m.StartRunRequest(run_config(), initial_version=started.initial_version))
    first = admin_handlers.list_versions(svc, m.ListVersionsRequest(again.run_id)).versions[
        0
    ]  # a copy of the old FAM, with its lineage
    original = admin_handlers.list_versions(svc, m.ListVersionsRequest(started.run_id)).versions[0]
    assert (first.parent_version, first.sha256) == (started.initial_version, original.sha256)
