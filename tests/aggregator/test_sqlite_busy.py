"""A SQLite writer queued past the busy timeout reaches the client as UNAVAILABLE (retried), never INTERNAL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import grpc
import pytest

from aggregator_service.server import RunningServer
from aggregator_service.store import engine
from fedmedclip.rpc.v1 import admin_pb2
from tests.aggregator.helpers import AdminStub, rpc_error


def test_a_locked_database_answers_unavailable_and_the_retry_succeeds(
    server_factory: Callable[..., RunningServer], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.2)  # read when the server's engines are built
    server = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin = AdminStub(channel)
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
        try:
            busy = rpc_error(lambda: admin("EnrolSite", admin_pb2.EnrolSiteRequest(site="site-a")))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert busy.code() == grpc.StatusCode.UNAVAILABLE, busy.details()
        assert "database is busy" in (busy.details() or "")
        assert admin.enrol("site-a")  # the same call, retried once the lock is gone
