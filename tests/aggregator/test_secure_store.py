"""Masked inputs in the store (docs/design.md §5.1, §6.4): kept only while their round is open, deleted in the
transaction that commits, abandons or stops it; one slot per site and round. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator_service.errors import AlreadyExists, FailedPrecondition
from aggregator_service.store.base import NewVersion, RoundState, RunState
from aggregator_service.store.sql import SqlStore

pytestmark = pytest.mark.both_backends

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(minutes=10)


def opened(store: SqlStore) -> tuple[int, int, int]:
    site_a = store.add_site("site-a", "", "a" * 64, T0).id
    site_b = store.add_site("site-b", "", "b" * 64, T0).id
    started = store.create_run("run-1", "t", {"embed_dim": 4}, NewVersion(b"v1", "00" * 32, None), T0, LATER)
    return started.first_round.id, site_a, site_b


def test_a_commit_deletes_the_rounds_masked_inputs(store: SqlStore) -> None:
    round_id, site_a, site_b = opened(store)
    assert store.add_masked_input(round_id, site_a, b"\x01" * 8, "11" * 32, T0) is False
    assert store.add_masked_input(round_id, site_a, b"\x01" * 8, "11" * 32, T0) is True  # the same bytes again
    with pytest.raises(AlreadyExists):
        store.add_masked_input(round_id, site_a, b"\x02" * 8, "22" * 32, T0)
    store.add_masked_input(round_id, site_b, b"\x03" * 8, "33" * 32, T0)
    assert [(m.site, m.data) for m in store.masked_inputs(round_id)] == [
        ("site-a", b"\x01" * 8),
        ("site-b", b"\x03" * 8),
    ]
    assert store.begin_aggregation(round_id)
    late = store.add_site("site-c", "", "c" * 64, T0).id
    with pytest.raises(FailedPrecondition):
        store.add_masked_input(round_id, late, b"\x04" * 8, "44" * 32, T0)
    store.commit_round(round_id, NewVersion(b"v2", "55" * 32, 1), [], {}, LATER, LATER + timedelta(minutes=1))
    assert store.masked_inputs(round_id) == []


def test_abandoning_or_stopping_deletes_them_too(store: SqlStore) -> None:
    round_id, site_a, _ = opened(store)
    store.add_masked_input(round_id, site_a, b"\x01", "11" * 32, T0)
    assert store.begin_aggregation(round_id)
    assert not store.abandon_round(round_id, "x", T0, LATER)  # OPEN only by default
    assert store.abandon_round(round_id, "restart", T0, LATER, from_states=(RoundState.OPEN, RoundState.AGGREGATING))
    assert store.masked_inputs(round_id) == []
    following = store.current_round("run-1")
    assert following is not None and following.number == 2
    store.add_masked_input(following.id, site_a, b"\x02", "22" * 32, T0)
    store.finish_run("run-1", RunState.STOPPED, "stopped", LATER)
    assert store.masked_inputs(following.id) == []
