"""The database schema as SQLAlchemy 2.x typed ORM classes. Migrations in ``aggregator_service/migrations``
create exactly this (tests/aggregator/test_migrations.py compares them).

States are stored as short strings rather than native enum types so that adding a state later is a code
change, not a PostgreSQL type migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones: stored naive, as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}  # noqa: RUF012 - read by SQLAlchemy


class SiteRow(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # After `sites rotate`: the replaced token's hash, accepted until previous_token_expires_at.
    previous_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    previous_token_expires_at: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    enrolled_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    software_version: Mapped[str] = mapped_column(String(64), default="")
    site_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_samples: Mapped[int | None] = mapped_column(BigInteger)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(16))
    # True while RUNNING, NULL otherwise: the unique constraint allows one running run (NULLs never clash).
    active: Mapped[bool | None] = mapped_column(Boolean, unique=True)
    config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    message: Mapped[str] = mapped_column(Text, default="")
    latest_version: Mapped[int] = mapped_column(BigInteger, default=0)
    current_round: Mapped[int] = mapped_column(Integer, default=0)


class RoundRow(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime]
    deadline: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    input_version: Mapped[int] = mapped_column(ForeignKey("fam_versions.id"))
    output_version: Mapped[int | None] = mapped_column(ForeignKey("fam_versions.id"))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message: Mapped[str] = mapped_column(Text, default="")


class FamVersionRow(Base):
    __tablename__ = "fam_versions"
    __table_args__ = (UniqueConstraint("run_id", "round"),)  # one version per round: no double close

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    round: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[int | None] = mapped_column(ForeignKey("fam_versions.id"))
    format: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # ~2 MiB; read only when asked for
    created_at: Mapped[datetime]


class UpdateRow(Base):
    __tablename__ = "updates"
    __table_args__ = (UniqueConstraint("round_id", "site_id"),)  # one slot per (round, site)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    base_version: Mapped[int] = mapped_column(BigInteger)
    num_samples: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Deferred: listing a round's updates must not read every payload (100 sites × ~100 KiB per round).
    payload: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    payload_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    # The site's privacy ledger (ε, δ, σ, C, q, steps) sent with the update; NULL without DP (§6.5).
    privacy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)


class BudgetSpentRow(Base):
    """A site that told the aggregator its privacy budget allows no further round of this run (not a fault)."""

    __tablename__ = "budget_spent"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    at: Mapped[datetime]


class MaskedInputRow(Base):
    """A site's masked vector in a secure round (docs/design.md §5.1, §6.4): uniform noise on its own, kept only
    until the round is unmasked and deleted in the transaction that commits (or abandons) the round."""

    __tablename__ = "masked_inputs"
    __table_args__ = (UniqueConstraint("round_id", "site_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]


class ContributionRow(Base):
    """Lineage: which accepted updates (and weights) went into a version; kept even if payloads are purged."""

    __tablename__ = "version_contributions"

    version_id: Mapped[int] = mapped_column(ForeignKey("fam_versions.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    update_id: Mapped[int] = mapped_column(ForeignKey("updates.id"))
    num_samples: Mapped[int] = mapped_column(BigInteger)
    payload_bytes: Mapped[int] = mapped_column(Integer)


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    run_id: Mapped[str | None] = mapped_column(String(32))
    round: Mapped[int | None] = mapped_column(Integer)
    site: Mapped[str | None] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class LeaderLeaseRow(Base):
    """The one row (id 1) saying which aggregator process leads, until when, and with which fencing token.

    Only PostgreSQL deployments use it (``aggregator_service/leadership.py``); times are the database's own
    clock, so the aggregators' clocks never need to agree.
    """

    __tablename__ = "leader_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    token: Mapped[int] = mapped_column(BigInteger)  # +1 at every change of leader: the fencing token
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]
