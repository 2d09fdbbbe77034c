"""Alembic environment: always given a connection by ``store.engine.upgrade_to_head`` (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from aggregator_service.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running the alembic CLI by hand
    raise RuntimeError("run migrations through aggregator_service.store.engine.upgrade_to_head")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
