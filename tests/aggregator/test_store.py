"""The ``Store`` contract, one suite run against SQLite and PostgreSQL (``both_backends``)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from aggregator_service.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from aggregator_service.store.base import AuditEntry, NewUpdate, NewVersion, RoundState, RunStart, RunState
from aggregator_service.store.schema import Base
from aggregator_service.store.sql import SqlStore

pytestmark = pytest.mark.both_backends

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


def version(tag: bytes = b"v", parent: int | None = None) -> NewVersion:
    return NewVersion(tag * 10, "ab" * 32, parent)


def start(store: SqlStore, run_id: str = "run-1") -> RunStart:
    return store.create_run(run_id, "test", {"embed_dim": 4}, version(), T0, LATER)


def add_update(store: SqlStore, round_id: int, site_id: int, base: int, sha: str = "11" * 32) -> tuple[int, bool]:
    record, duplicate = store.add_update(
        NewUpdate(round_id, site_id, base, 7, {"loss": 0.25}, b"payload-" + sha.encode(), sha, T0)
    )
    return record.id, duplicate


def test_migrations_create_exactly_the_orm_schema(store: SqlStore) -> None:
    with store._write_engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_sites_enrol_lookup_revoke(store: SqlStore) -> None:
    site = store.add_site("site-a", "Hospital A", "h" * 64, T0)
    assert site.enabled and site.enrolled_at == T0 and site.enrolled_at.tzinfo is not None
    with pytest.raises(AlreadyExists):
        store.add_site("site-a", "", "x" * 64, T0)
    store.add_site("site-b", "", "g" * 64, T0)
    assert store.site_by_token_hash("h" * 64) == site
    assert store.site_by_token_hash("z" * 64) is None
    assert [s.name for s in store.list_sites()] == ["site-a", "site-b"]
    store.touch_site(site.id, LATER, software_version="0.1.0", site_info={"device": "cpu"})
    touched = store.get_site("site-a")
    assert touched is not None and touched.last_seen == LATER and touched.site_info == {"device": "cpu"}
    revoked, discarded = store.revoke_site("site-a", LATER)
    assert not revoked.enabled and revoked.revoked_at == LATER and discarded == []
    assert store.count_enabled_sites() == 1
    with pytest.raises(NotFound):
        store.revoke_site("nobody", LATER)


def test_one_running_run_with_initial_version_and_open_round(store: SqlStore) -> None:
    started = start(store)
    assert started.run.state == RunState.RUNNING and started.first_round.number == 1
    assert started.first_round.state == RoundState.OPEN and started.first_round.input_version == started.initial_version
    initial = store.get_version(started.initial_version)
    assert initial is not None and (initial.round, initial.parent_version, initial.size_bytes) == (0, None, 10)
    assert store.version_data(started.initial_version) == b"v" * 10
    with pytest.raises(FailedPrecondition):
        start(store, "run-2")
    assert store.active_run() == started.run == store.latest_run()
    store.finish_run("run-1", RunState.STOPPED, "enough", LATER)
    assert store.active_run() is None
    second = store.create_run("run-2", "", {}, version(b"w", parent=started.initial_version), LATER, LATER)
    assert store.get_version(second.initial_version).parent_version == started.initial_version  # type: ignore[union-attr]
    assert [r.id for r in store.list_runs()] == ["run-2", "run-1"]


def test_updates_fill_each_slot_once(store: SqlStore) -> None:
    site = store.add_site("site-a", "", "h" * 64, T0)
    started = start(store)
    round_id, base = started.first_round.id, started.initial_version
    update_id, duplicate = add_update(store, round_id, site.id, base)
    assert not duplicate
    assert add_update(store, round_id, site.id, base) == (update_id, True)
    with pytest.raises(AlreadyExists):
        add_update(store, round_id, site.id, base, sha="22" * 32)
    other = store.add_site("site-b", "", "g" * 64, T0)
    with pytest.raises(FailedPrecondition, match="stale base version"):
        add_update(store, round_id, other.id, base + 1)
    [record] = store.list_updates(round_id)
    assert (record.site, record.num_samples, record.metrics, record.payload_bytes) == ("site-a", 7, {"loss": 0.25}, 72)
    assert store.site_update(round_id, site.id) == record and store.site_update(round_id, other.id) is None
    assert store.update_payloads([update_id]) == {update_id: b"payload-" + b"11" * 32}
    store.revoke_site("site-b", T0)
    with pytest.raises(PermissionDenied):
        add_update(store, round_id, other.id, base)


def test_round_closes_once_with_its_version_and_lineage(store: SqlStore) -> None:
    a = store.add_site("site-a", "", "h" * 64, T0)
    b = store.add_site("site-b", "", "g" * 64, T0)
    started = start(store)
    first = started.first_round
    ids = [add_update(store, first.id, s.id, started.initial_version, sha=c * 32)[0] for s, c in ((a, "aa"), (b, "bb"))]
    assert store.begin_aggregation(first.id)
    assert not store.begin_aggregation(first.id)
    with pytest.raises(FailedPrecondition, match="aggregating"):
        add_update(store, first.id, store.add_site("site-c", "", "f" * 64, T0).id, started.initial_version)
    new, following = store.commit_round(first.id, version(b"n", first.input_version), ids, {"loss": 0.5}, LATER, LATER)
    assert following is not None and following.number == 2 and following.input_version == new
    with pytest.raises(FailedPrecondition):
        store.commit_round(first.id, version(b"x", first.input_version), ids, {}, LATER, LATER)
    closed = store.get_round("run-1", 1)
    assert closed is not None and closed.state == RoundState.CLOSED and closed.output_version == new
    assert closed.metrics == {"loss": 0.5} and closed.closed_at == LATER
    record = store.get_version(new)
    assert record is not None and (record.round, record.parent_version) == (1, started.initial_version)
    assert [(c.site, c.num_samples) for c in record.contributions] == [("site-a", 7), ("site-b", 7)]
    run = store.get_run("run-1")
    assert run is not None and (run.latest_version, run.current_round) == (new, 2)
    assert store.count_closed_rounds("run-1") == 1
    assert [v.version for v in store.list_versions("run-1")] == [started.initial_version, new]
    # The final round completes the run.
    assert store.begin_aggregation(following.id)
    final, nothing = store.commit_round(following.id, version(b"f", new), [], {}, LATER, None)
    assert nothing is None
    done = store.get_run("run-1")
    assert done is not None and done.state == RunState.COMPLETED and done.latest_version == final
    assert store.active_run() is None


def test_abandon_reopen_and_stop(store: SqlStore) -> None:
    started = start(store)
    assert store.abandon_round(started.first_round.id, "deadline passed", T0, LATER)
    assert not store.abandon_round(started.first_round.id, "again", T0, LATER)
    rounds = store.list_rounds("run-1")
    assert [(r.number, r.state, r.input_version) for r in rounds] == [
        (1, RoundState.ABANDONED, started.initial_version),
        (2, RoundState.OPEN, started.initial_version),
    ]
    assert store.begin_aggregation(rounds[1].id)
    stopped = store.finish_run("run-1", RunState.STOPPED, "operator", LATER)
    assert stopped.state == RunState.STOPPED and stopped.finished_at == LATER
    current = store.current_round("run-1")
    assert current is not None and current.state == RoundState.ABANDONED
    with pytest.raises(FailedPrecondition):  # a close racing with the stop loses
        store.commit_round(current.id, version(b"n"), [], {}, LATER, LATER)
    assert store.finish_run("run-1", RunState.FAILED, "late", LATER).state == RunState.STOPPED


def test_revocation_discards_only_open_round_updates(store: SqlStore) -> None:
    site = store.add_site("site-a", "", "h" * 64, T0)
    started = start(store)
    first = started.first_round
    update_id, _ = add_update(store, first.id, site.id, started.initial_version)
    assert store.begin_aggregation(first.id)
    new, following = store.commit_round(first.id, version(b"n"), [update_id], {}, LATER, LATER)
    assert following is not None
    second_id, _ = add_update(store, following.id, site.id, new)
    _, discarded = store.revoke_site("site-a", LATER)
    assert discarded == [second_id]
    assert store.list_updates(following.id) == [] and len(store.list_updates(first.id)) == 1


def test_concurrent_submissions_and_close_never_lose_or_double_an_update(store: SqlStore) -> None:
    sites = [store.add_site(f"site-{i:02d}", "", f"{i:064d}", T0) for i in range(12)]
    started = start(store)
    round_id, base = started.first_round.id, started.initial_version
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(len(sites) + 1)

    def submit(index: int) -> None:
        barrier.wait()
        try:
            add_update(store, round_id, sites[index].id, base, sha=f"{index:064x}")
            outcomes[sites[index].name] = "accepted"
        except FailedPrecondition:
            outcomes[sites[index].name] = "refused"

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(sites))]
    for thread in threads:
        thread.start()
    barrier.wait()
    assert store.begin_aggregation(round_id)  # races with the submissions
    snapshot = {u.site for u in store.list_updates(round_id)}
    for thread in threads:
        thread.join()
    accepted = {name for name, outcome in outcomes.items() if outcome == "accepted"}
    assert accepted == snapshot == {u.site for u in store.list_updates(round_id)}
    assert len(outcomes) == len(sites)


def test_audit_log_and_aware_timestamps(store: SqlStore) -> None:
    store.add_audit(AuditEntry(T0, "anonymous ipv4:1.2.3.4", "Join", "refused", "UNAUTHENTICATED", "no token"))
    store.add_audit(AuditEntry(LATER, "admin", "StartRun", "ok", run_id="run-1"))
    newest, oldest = store.list_audit()
    assert (newest.action, newest.at, newest.run_id) == ("StartRun", LATER, "run-1")
    assert oldest.at == T0 and oldest.at.tzinfo is not None
    assert [a.code for a in store.list_audit(outcome="refused")] == ["UNAUTHENTICATED"]
    assert [a.action for a in store.list_audit(run_id="run-1")] == ["StartRun"]


def test_privacy_ledger_and_budget_spent_are_stored_per_run_and_site(store: SqlStore) -> None:
    site = store.add_site("site-a", "", "h" * 64, T0)
    other = store.add_site("site-b", "", "g" * 64, T0)
    started = start(store)
    ledger = {"epsilon": 1.25, "delta": 1e-5, "sigma": 1.1, "clip_norm": 1.0, "sample_rate": 0.25, "steps": 8}
    record, _ = store.add_update(
        NewUpdate(started.first_round.id, site.id, started.initial_version, 7, {}, b"p", "33" * 32, T0, ledger)
    )
    assert record.privacy == ledger
    add_update(store, started.first_round.id, other.id, started.initial_version)
    by_site = {u.site: u.privacy for u in store.list_updates(started.first_round.id)}
    assert by_site == {"site-a": ledger, "site-b": None}
    assert store.budget_spent_sites("run-1") == {}
    assert store.mark_budget_spent("run-1", site.id, LATER) is True
    assert store.mark_budget_spent("run-1", site.id, LATER + timedelta(minutes=1)) is False  # recorded once
    assert store.budget_spent_sites("run-1") == {"site-a": LATER}
    with pytest.raises(NotFound):
        store.mark_budget_spent("no-such-run", site.id, LATER)
