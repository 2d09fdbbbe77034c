"""Leadership without killing processes (fast): the lease's fencing at the store, two in-process servers on
one PostgreSQL database, and SQLite's single-process rule (a second process on the file is refused).

PostgreSQL tests are skipped, saying so, when FEDMEDCLIP_TEST_POSTGRES_URL is unset (CI sets it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from aggregator_service.errors import Unavailable
from aggregator_service.leadership import Lease
from aggregator_service.server import RunningServer
from aggregator_service.settings import ConfigError
from aggregator_service.store.sql import SqlStore
from tests.aggregator.helpers import ADMIN_TOKEN, AdminStub, health_status, wait_serving

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, tzinfo=UTC)
postgres_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@postgres_only
def test_a_deposed_leaders_store_commits_nothing(store: SqlStore) -> None:
    old = Lease(store.write_engine, "old", ttl_s=1.0)
    token = old.acquire()
    assert token == 1
    store.set_fence(old.fence(token))
    store.add_site("site-a", "", "a" * 64, NOW)  # leading: writes go through

    time.sleep(1.2)  # the lease runs out unrenewed (a paused process); nobody has taken over yet
    with pytest.raises(Unavailable, match="lost its leadership lease"):
        store.add_site("site-b", "", "b" * 64, NOW)
    new = Lease(store.write_engine, "new", ttl_s=30.0)
    assert new.acquire() == 2  # a new holder: the token moves on
    assert old.renew(token) is False and old.acquire() is None
    with pytest.raises(Unavailable):
        store.revoke_site("site-a", NOW)
    assert [s.name for s in store.list_sites()] == ["site-a"] and store.get_site("site-a").enabled  # type: ignore[union-attr]

    store.set_fence(new.fence(2))
    store.add_site("site-b", "", "b" * 64, NOW)
    assert [s.name for s in store.list_sites()] == ["site-a", "site-b"]


@postgres_only
def test_a_paused_write_transaction_neither_blocks_the_takeover_for_ever_nor_commits(store: SqlStore) -> None:
    """A write past the fence holds the lease row: the takeover waits until PostgreSQL ends that transaction
    (idle for the lease's length), so nothing checked under the old token commits after it."""
    old = Lease(store.write_engine, "old", ttl_s=1.5)
    token = old.acquire()
    assert token is not None
    store.set_fence(old.fence(token))
    store.add_site("site-a", "before", "a" * 64, NOW)
    new = Lease(store.write_engine, "new", ttl_s=30.0, takeover_lock_timeout_ms=200)
    started = time.monotonic()
    took: list[float] = []

    def write_while_paused() -> None:
        with store._write() as session:
            session.execute(sa.text("UPDATE sites SET description = 'written by a paused leader'"))
            while new.acquire() is None:  # the old leader is "paused" here, its transaction open
                assert time.monotonic() - started < 10, "the takeover never happened"
            took.append(time.monotonic() - started)

    with pytest.raises(DBAPIError, match="idle-in-transaction"):  # its commit fails: PostgreSQL ended it
        write_while_paused()
    assert took[0] >= 1.4  # not before the paused transaction was ended (at the lease's length)
    assert store.get_site("site-a").description == "before"  # type: ignore[union-attr]


@postgres_only
def test_two_servers_one_leads_the_other_stands_by(server_factory: Callable[..., RunningServer]) -> None:
    first = server_factory(leader_lease_s=3.0)
    second = server_factory(leader_lease_s=3.0)
    with grpc.insecure_channel(f"127.0.0.1:{first.port}") as a, grpc.insecure_channel(f"127.0.0.1:{second.port}") as b:
        assert health_status(a) == "SERVING" and health_status(b) == "NOT_SERVING"
        assert health_status(b, "fedmedclip.rpc.v1.Admin") == "NOT_SERVING"
        AdminStub(a).enrol("site-a")
        with pytest.raises(grpc.RpcError) as refused:
            AdminStub(b).enrol("site-b")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert [s.name for s in first.svc.store.list_sites()] == ["site-a"]

        first.stop(grace_s=0)  # releases the lease
        assert wait_serving(b, timeout=5.0) < 5.0
        AdminStub(b).enrol("site-b")
        assert [s.name for s in second.svc.store.list_sites()] == ["site-a", "site-b"]


def test_sqlite_is_single_process(server_factory: Callable[..., RunningServer], tmp_path: Path) -> None:
    database = tmp_path / "aggregator.sqlite3"
    url = f"sqlite:///{database}"
    first = server_factory(database_url=url)
    with pytest.raises(ConfigError, match="SQLite is single-process"):
        server_factory(database_url=url)

    env = dict(os.environ)
    env.update(
        FEDMEDCLIP_AGGREGATOR_DATABASE_URL=url, FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN=ADMIN_TOKEN, HF_HUB_OFFLINE="1"
    )
    command = [sys.executable, "-m", "aggregator_service", "serve", "--port", "0", "--insecure-loopback"]
    second = subprocess.run(
        [*command, "--metrics-port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert second.returncode != 0
    assert f"pid {os.getpid()}" in second.stderr and "use PostgreSQL" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr

    first.stop(grace_s=0)  # the lock goes with the process (here: with the server)
    again = server_factory(database_url=url)
    assert again.port > 0


def test_sqlite_says_it_is_single_process_at_start(
    server_factory: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="aggregator_service.server"):
        server_factory()
    assert any("single-process mode" in r.getMessage() for r in caplog.records)
