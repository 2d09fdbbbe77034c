"""Persistence: the ``Store`` interface (``base``) and its SQLAlchemy implementation (``sql``)."""

from aggregator_service.store.base import RoundState, RunState, Store
from aggregator_service.store.sql import SqlStore

__all__ = ["RoundState", "RunState", "SqlStore", "Store"]
