"""Database engines: SQLite in WAL mode with explicit write locking, or PostgreSQL; migrations on start."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_LOCK_ID = 0x46_4D_43_4D  # "FMCM": the advisory lock serialising migrations on PostgreSQL
SQLITE_BUSY_TIMEOUT_S = 30.0  # writers queue behind each other this long before "database is locked"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engines(url: str, sqlite_synchronous: str = "FULL", pool_size: int = 16) -> tuple[Engine, Engine]:
    """``(write_engine, read_engine)`` for ``url``; the same engine twice except on SQLite.

    pysqlite starts transactions lazily and upgrades a reader to a writer on its first write; in WAL mode
    that upgrade fails at once with "database is locked" when another writer committed meanwhile, and the
    busy timeout does not help. So on SQLite writes go through an engine that opens every transaction with
    ``BEGIN IMMEDIATE`` (writers queue on the busy timeout instead), and reads through one that does not
    (WAL readers never block).
    """
    if not is_sqlite(url):
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        return engine, engine
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    write = _sqlite_engine(url, sqlite_synchronous, "BEGIN IMMEDIATE", pool_size)
    read = _sqlite_engine(url, sqlite_synchronous, "BEGIN", pool_size)
    return write, read


def _sqlite_engine(url: str, synchronous: str, begin: str, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        pool_size=pool_size,
        max_overflow=pool_size,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


def upgrade_to_head(engine: Engine) -> None:
    """Apply every migration not yet applied (``alembic upgrade head``), configured in code."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Two aggregators (active/standby) starting together must not run the same migration twice:
            # the second waits here, then finds the schema current. Released with the transaction.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
