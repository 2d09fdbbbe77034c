"""Fixtures of the aggregator tests: stores on SQLite and PostgreSQL, in-process servers, site clients.

PostgreSQL: set FEDMEDCLIP_TEST_POSTGRES_URL (``scripts/ci/start_postgres.sh`` prints it). Each test gets
its own schema in that database, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
import sqlalchemy as sa

from aggregator_service.server import RunningServer, start_server
from aggregator_service.settings import AggregatorSettings
from aggregator_service.store.sql import SqlStore
from tests.aggregator.helpers import ADMIN_TOKEN, AdminStub, SiteClient

POSTGRES_ENV = "FEDMEDCLIP_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]


def _postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        pytest.skip(
            f"PostgreSQL variant skipped: {POSTGRES_ENV} is not set "
            f'(run `export {POSTGRES_ENV}="$(scripts/ci/start_postgres.sh)"`)'
        )
    return url


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the backend named by the test's ``backend`` parameter (default SQLite)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'aggregator.sqlite3'}"
        return
    base = _postgres_url()
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_backends`` run once per database backend (through ``database_url``)."""
    if metafunc.definition.get_closest_marker("both_backends") and "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", BACKENDS, indirect=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_backends: run the test against SQLite and PostgreSQL")


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    opened = SqlStore.open(database_url, sqlite_synchronous="NORMAL")
    try:
        yield opened
    finally:
        opened.close()


def make_settings(database_url: str, **overrides: Any) -> AggregatorSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "insecure_loopback": True,
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "metrics_port": None,
        "sqlite_synchronous": "NORMAL",
        "shutdown_grace_s": 2.0,
        "max_workers": 16,
    }
    values.update(overrides)
    return AggregatorSettings(**values)


@pytest.fixture
def server_factory(database_url: str) -> Iterator[Callable[..., RunningServer]]:
    """Start in-process servers on 127.0.0.1 port 0 (stopped at teardown); keyword args override settings."""
    started: list[RunningServer] = []

    def factory(**overrides: Any) -> RunningServer:
        running = start_server(make_settings(overrides.pop("database_url", database_url), **overrides))
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop(grace_s=0)


@pytest.fixture
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory()


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture
def admin(channel: grpc.Channel) -> AdminStub:
    return AdminStub(channel)


@pytest.fixture
def enrol(admin: AdminStub, channel: grpc.Channel) -> Callable[[str], SiteClient]:
    """Enrol a site over the Admin service and return a client holding its token."""

    def enrol_site(name: str) -> SiteClient:
        return SiteClient(channel, admin.enrol(name), name)

    return enrol_site
