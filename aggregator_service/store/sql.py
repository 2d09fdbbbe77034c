"""``Store`` on SQLAlchemy: SQLite (WAL, the default) or PostgreSQL.

Every method runs in one transaction. Methods that change a round lock its row (``SELECT ... FOR UPDATE``
on PostgreSQL; on SQLite the write engine's ``BEGIN IMMEDIATE`` already serialises writers), so a
submission and the round's closing can never interleave: an update is either in the round's snapshot when
it starts aggregating, or refused because the round is no longer OPEN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from aggregator_service.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied, Unavailable
from aggregator_service.store.base import (
    AuditEntry,
    AuditRecord,
    Contribution,
    MaskedInputRecord,
    NewUpdate,
    NewVersion,
    RoundRecord,
    RoundState,
    RunRecord,
    RunStart,
    RunState,
    SiteRecord,
    Store,
    UpdateRecord,
    VersionRecord,
)
from aggregator_service.store.engine import create_engines, upgrade_to_head
from aggregator_service.store.schema import (
    AuditRow,
    BudgetSpentRow,
    ContributionRow,
    FamVersionRow,
    MaskedInputRow,
    RoundRow,
    RunRow,
    SiteRow,
    UpdateRow,
)

_UNFINISHED = (RoundState.OPEN.value, RoundState.AGGREGATING.value)


@contextmanager
def _busy_is_unavailable() -> Iterator[None]:
    """SQLite's "database is locked" (a writer queued past the busy timeout) is load, not a bug: answer it as
    ``Unavailable``, which clients retry with backoff, instead of letting it reach them as INTERNAL."""
    try:
        yield
    except OperationalError as exc:
        if "database is locked" in str(exc.orig) or "database table is locked" in str(exc.orig):
            raise Unavailable("the database is busy; try again shortly") from exc
        raise


class SqlStore(Store):
    def __init__(self, write_engine: Engine, read_engine: Engine | None = None) -> None:
        self._write_engine = write_engine
        self._read_engine = read_engine or write_engine
        self._writer = sessionmaker(write_engine, expire_on_commit=False)
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)
        # Set by the leader (aggregator_service/leadership.py): run first in every write transaction; it
        # raises when this process no longer holds the lease, so a deposed leader can commit nothing.
        self._fence: Callable[[Session], None] | None = None

    def set_fence(self, fence: Callable[[Session], None] | None) -> None:
        self._fence = fence

    @property
    def write_engine(self) -> Engine:
        return self._write_engine

    @classmethod
    def open(cls, url: str, sqlite_synchronous: str = "FULL", migrate: bool = True) -> SqlStore:
        """Connect to ``url`` and, by default, bring the schema to the newest migration."""
        write, read = create_engines(url, sqlite_synchronous)
        if migrate:
            upgrade_to_head(write)
        return cls(write, read)

    @property
    def dialect(self) -> str:
        return self._write_engine.dialect.name

    def close(self) -> None:
        self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            self._read_engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with _busy_is_unavailable(), self._writer.begin() as session:
            fence = self._fence
            if fence is not None:
                fence(session)
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with _busy_is_unavailable(), self._reader.begin() as session:
            yield session

    # --- sites -----------------------------------------------------------------------------------------
    def add_site(
        self, name: str, description: str, token_hash: str, now: datetime, max_samples: int | None = None
    ) -> SiteRecord:
        try:
            with self._write() as session:
                if session.scalar(select(SiteRow.id).where(SiteRow.name == name)) is not None:
                    raise AlreadyExists(f"site {name!r} is already enrolled (names are never reused)")
                row = SiteRow(
                    name=name,
                    description=description,
                    token_hash=token_hash,
                    enabled=True,
                    enrolled_at=now,
                    software_version="",
                    site_info={},
                    max_samples=max_samples,
                )
                session.add(row)
                session.flush()
                return _site(row)
        except IntegrityError as exc:  # a concurrent enrolment of the same name won the race
            raise AlreadyExists(f"site {name!r} is already enrolled") from exc

    def site_by_token_hash(self, token_hash: str, now: datetime | None = None) -> SiteRecord | None:
        now = now or datetime.now(UTC)
        in_grace = (SiteRow.previous_token_hash == token_hash) & (SiteRow.previous_token_expires_at > now)
        with self._read() as session:
            row = session.scalar(select(SiteRow).where(or_(SiteRow.token_hash == token_hash, in_grace)))
            return None if row is None else _site(row)

    def rotate_site_token(self, name: str, token_hash: str, grace_until: datetime, now: datetime) -> SiteRecord:
        with self._write() as session:
            row = session.scalar(select(SiteRow).where(SiteRow.name == name).with_for_update())
            if row is None:
                raise NotFound(f"no site named {name!r}")
            if not row.enabled:
                raise FailedPrecondition(f"site {name!r} is revoked; a revoked site's token cannot be rotated")
            # Only one previous token is kept: rotating twice inside a grace period ends the older one now.
            row.previous_token_hash = row.token_hash if grace_until > now else None
            row.previous_token_expires_at = grace_until if grace_until > now else None
            row.token_hash = token_hash
            session.flush()
            return _site(row)

    def get_site(self, name: str) -> SiteRecord | None:
        with self._read() as session:
            row = session.scalar(select(SiteRow).where(SiteRow.name == name))
            return None if row is None else _site(row)

    def list_sites(self) -> list[SiteRecord]:
        with self._read() as session:
            return [_site(row) for row in session.scalars(select(SiteRow).order_by(SiteRow.name))]

    def count_enabled_sites(self) -> int:
        with self._read() as session:
            return int(session.scalar(select(func.count()).select_from(SiteRow).where(SiteRow.enabled)) or 0)

    def revoke_site(self, name: str, now: datetime) -> tuple[SiteRecord, list[int]]:
        with self._write() as session:
            row = session.scalar(select(SiteRow).where(SiteRow.name == name).with_for_update())
            if row is None:
                raise NotFound(f"no site named {name!r}")
            if row.enabled:
                row.enabled = False
                row.revoked_at = now
            open_rounds = select(RoundRow.id).where(RoundRow.state == RoundState.OPEN.value)
            ids = list(
                session.scalars(
                    select(UpdateRow.id).where(UpdateRow.site_id == row.id, UpdateRow.round_id.in_(open_rounds))
                )
            )
            if ids:
                session.execute(delete(UpdateRow).where(UpdateRow.id.in_(ids)))
            session.flush()
            return _site(row), ids

    def touch_site(
        self,
        site_id: int,
        now: datetime,
        software_version: str | None = None,
        site_info: Mapping[str, str] | None = None,
    ) -> None:
        values: dict[str, Any] = {"last_seen": now}
        if software_version is not None:
            values["software_version"] = software_version[:64]
        if site_info is not None:
            values["site_info"] = dict(site_info)
        with self._write() as session:
            session.execute(update(SiteRow).where(SiteRow.id == site_id).values(**values))

    # --- runs and rounds -------------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        name: str,
        config: Mapping[str, Any],
        initial: NewVersion,
        now: datetime,
        first_deadline: datetime,
    ) -> RunStart:
        try:
            with self._write() as session:
                running = session.scalar(select(RunRow.id).where(RunRow.active.is_(True)))
                if running is not None:
                    raise FailedPrecondition(f"run {running} is still running; stop it first")
                if initial.parent_version is not None and session.get(FamVersionRow, initial.parent_version) is None:
                    raise NotFound(f"no FAM version {initial.parent_version}")
                run = RunRow(
                    id=run_id,
                    name=name,
                    state=RunState.RUNNING.value,
                    active=True,
                    config=dict(config),
                    created_at=now,
                    message="",
                    latest_version=0,
                    current_round=1,
                )
                session.add(run)
                session.flush()
                version = _version_row(run_id, 0, initial, now)
                session.add(version)
                session.flush()
                first = RoundRow(
                    run_id=run_id,
                    number=1,
                    state=RoundState.OPEN.value,
                    opened_at=now,
                    deadline=first_deadline,
                    input_version=version.id,
                    metrics={},
                    message="",
                )
                session.add(first)
                run.latest_version = version.id
                session.flush()
                return RunStart(_run(run), version.id, _round(first))
        except IntegrityError as exc:  # another StartRun committed between our check and insert
            raise FailedPrecondition("another run was started concurrently") from exc

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._read() as session:
            row = session.get(RunRow, run_id)
            return None if row is None else _run(row)

    def active_run(self) -> RunRecord | None:
        with self._read() as session:
            row = session.scalar(select(RunRow).where(RunRow.active.is_(True)))
            return None if row is None else _run(row)

    def latest_run(self) -> RunRecord | None:
        with self._read() as session:
            row = session.scalar(select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(1))
            return None if row is None else _run(row)

    def list_runs(self) -> list[RunRecord]:
        with self._read() as session:
            rows = session.scalars(select(RunRow).order_by(RunRow.created_at.desc(), RunRow.id.desc()))
            return [_run(row) for row in rows]

    def finish_run(self, run_id: str, state: RunState, message: str, now: datetime) -> RunRecord:
        with self._write() as session:
            run = session.scalar(select(RunRow).where(RunRow.id == run_id).with_for_update())
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            if run.state != RunState.RUNNING.value:
                return _run(run)
            run.state = state.value
            run.active = None
            run.finished_at = now
            run.message = message
            unfinished = select(RoundRow.id).where(RoundRow.run_id == run_id, RoundRow.state.in_(_UNFINISHED))
            session.execute(delete(MaskedInputRow).where(MaskedInputRow.round_id.in_(unfinished)))
            session.execute(
                update(RoundRow)
                .where(RoundRow.run_id == run_id, RoundRow.state.in_(_UNFINISHED))
                .values(state=RoundState.ABANDONED.value, closed_at=now, message=message)
            )
            session.flush()
            return _run(run)

    def current_round(self, run_id: str) -> RoundRecord | None:
        with self._read() as session:
            row = session.scalar(
                select(RoundRow).where(RoundRow.run_id == run_id).order_by(RoundRow.number.desc()).limit(1)
            )
            return None if row is None else _round(row)

    def get_round(self, run_id: str, number: int) -> RoundRecord | None:
        with self._read() as session:
            row = session.scalar(select(RoundRow).where(RoundRow.run_id == run_id, RoundRow.number == number))
            return None if row is None else _round(row)

    def list_rounds(self, run_id: str) -> list[RoundRecord]:
        with self._read() as session:
            rows = session.scalars(select(RoundRow).where(RoundRow.run_id == run_id).order_by(RoundRow.number))
            return [_round(row) for row in rows]

    def count_closed_rounds(self, run_id: str) -> int:
        with self._read() as session:
            query = select(func.count()).where(RoundRow.run_id == run_id, RoundRow.state == RoundState.CLOSED.value)
            return int(session.scalar(query) or 0)

    def begin_aggregation(self, round_id: int) -> bool:
        with self._write() as session:
            result = session.execute(
                update(RoundRow)
                .where(RoundRow.id == round_id, RoundRow.state == RoundState.OPEN.value)
                .values(state=RoundState.AGGREGATING.value)
            )
            return _rowcount(result) == 1

    def commit_round(
        self,
        round_id: int,
        version: NewVersion,
        update_ids: Sequence[int],
        metrics: Mapping[str, float],
        now: datetime,
        next_deadline: datetime | None,
    ) -> tuple[int, RoundRecord | None]:
        with self._write() as session:
            current = session.scalar(select(RoundRow).where(RoundRow.id == round_id).with_for_update())
            if current is None:
                raise NotFound(f"no round with id {round_id}")
            if current.state != RoundState.AGGREGATING.value:
                raise FailedPrecondition(f"round {current.number} is {current.state}, not AGGREGATING")
            updates = session.execute(
                select(
                    UpdateRow.id, UpdateRow.round_id, UpdateRow.site_id, UpdateRow.num_samples, UpdateRow.payload_bytes
                ).where(UpdateRow.id.in_(list(update_ids)))
            ).all()
            if len(updates) != len(set(update_ids)) or any(u.round_id != round_id for u in updates):
                raise FailedPrecondition(f"the updates to commit do not all belong to round {current.number}")
            new = _version_row(current.run_id, current.number, version, now)
            session.add(new)
            session.flush()
            if updates:  # one executemany, not 100 ORM objects: this runs inside the round-close latency
                session.execute(
                    insert(ContributionRow),
                    [
                        {
                            "version_id": new.id,
                            "site_id": u.site_id,
                            "update_id": u.id,
                            "num_samples": u.num_samples,
                            "payload_bytes": u.payload_bytes,
                        }
                        for u in updates
                    ],
                )
            # Secure rounds: the masked inputs go with the commit that holds their sum (docs/design.md §6.4).
            session.execute(delete(MaskedInputRow).where(MaskedInputRow.round_id == round_id))
            current.state = RoundState.CLOSED.value
            current.closed_at = now
            current.output_version = new.id
            current.metrics = dict(metrics)
            run = session.get_one(RunRow, current.run_id)
            run.latest_version = new.id
            following: RoundRow | None = None
            if next_deadline is None:
                run.state = RunState.COMPLETED.value
                run.active = None
                run.finished_at = now
                run.message = f"completed after round {current.number}"
            else:
                following = _next_round(current, new.id, now, next_deadline)
                session.add(following)
                run.current_round = following.number
            session.flush()
            return new.id, None if following is None else _round(following)

    def abandon_round(
        self,
        round_id: int,
        reason: str,
        now: datetime,
        reopen_deadline: datetime | None,
        from_states: Sequence[RoundState] = (RoundState.OPEN,),
    ) -> bool:
        with self._write() as session:
            current = session.scalar(select(RoundRow).where(RoundRow.id == round_id).with_for_update())
            if current is None or current.state not in {state.value for state in from_states}:
                return False
            session.execute(delete(MaskedInputRow).where(MaskedInputRow.round_id == round_id))
            current.state = RoundState.ABANDONED.value
            current.closed_at = now
            current.message = reason
            if reopen_deadline is not None:
                following = _next_round(current, current.input_version, now, reopen_deadline)
                session.add(following)
                session.get_one(RunRow, current.run_id).current_round = following.number
            return True

    # --- masked inputs ---------------------------------------------------------------------------------
    def add_masked_input(self, round_id: int, site_id: int, data: bytes, sha256: str, now: datetime) -> bool:
        with self._write() as session:
            current = session.scalar(select(RoundRow).where(RoundRow.id == round_id).with_for_update())
            if current is None:
                raise NotFound(f"no round with id {round_id}")
            existing = session.scalar(
                select(MaskedInputRow.sha256).where(
                    MaskedInputRow.round_id == round_id, MaskedInputRow.site_id == site_id
                )
            )
            if existing is not None:
                if existing == sha256:
                    return True
                raise AlreadyExists("this round already holds a different masked input from this site")
            if current.state != RoundState.OPEN.value:
                raise FailedPrecondition(f"round {current.number} is {current.state}: it accepts no masked input")
            session.add(
                MaskedInputRow(
                    round_id=round_id, site_id=site_id, data=data, size_bytes=len(data), sha256=sha256, received_at=now
                )
            )
            return False

    def masked_inputs(self, round_id: int) -> list[MaskedInputRecord]:
        with self._read() as session:
            rows = session.execute(
                select(SiteRow.name, MaskedInputRow.data, MaskedInputRow.sha256, MaskedInputRow.received_at)
                .join(SiteRow, SiteRow.id == MaskedInputRow.site_id)
                .where(MaskedInputRow.round_id == round_id)
                .order_by(SiteRow.name)
            ).all()
            return [MaskedInputRecord(r.name, r.data, r.sha256, r.received_at) for r in rows]

    # --- updates ---------------------------------------------------------------------------------------
    def add_update(self, update: NewUpdate) -> tuple[UpdateRecord, bool]:
        try:
            with self._write() as session:
                return self._add_update(session, update)
        except IntegrityError as exc:  # only reachable if the round lock was bypassed; keep the contract
            raise AlreadyExists("this round already holds an update from this site") from exc

    def _add_update(self, session: Session, update: NewUpdate) -> tuple[UpdateRecord, bool]:
        current = session.scalar(select(RoundRow).where(RoundRow.id == update.round_id).with_for_update())
        if current is None:
            raise NotFound(f"no round with id {update.round_id}")
        # FOR SHARE: a concurrent revocation either commits first (we see it) or waits for us (and then
        # deletes this update with the site's other open-round updates).
        site = session.scalar(select(SiteRow).where(SiteRow.id == update.site_id).with_for_update(read=True))
        if site is None or not site.enabled:
            raise PermissionDenied("the site's credential was revoked")
        existing = session.scalar(
            select(UpdateRow).where(UpdateRow.round_id == update.round_id, UpdateRow.site_id == update.site_id)
        )
        if existing is not None:
            if existing.sha256 == update.sha256:
                return _update(existing, site.name), True
            raise AlreadyExists(
                f"round {current.number} already holds a different update from site {site.name!r} "
                f"(sha256 {existing.sha256[:12]}…); a slot is written once"
            )
        if current.state != RoundState.OPEN.value:
            raise FailedPrecondition(f"round {current.number} is {current.state.lower()}: it accepts no updates")
        if update.base_version != current.input_version:
            raise FailedPrecondition(
                f"stale base version {update.base_version}: round {current.number} trains from version "
                f"{current.input_version}"
            )
        row = UpdateRow(
            round_id=update.round_id,
            site_id=update.site_id,
            base_version=update.base_version,
            num_samples=update.num_samples,
            metrics=dict(update.metrics),
            payload=update.payload,
            payload_bytes=len(update.payload),
            sha256=update.sha256,
            received_at=update.received_at,
            privacy=None if update.privacy is None else dict(update.privacy),
        )
        session.add(row)
        site.last_seen = update.received_at
        session.flush()
        return _update(row, site.name), False

    def list_updates(self, round_id: int) -> list[UpdateRecord]:
        with self._read() as session:
            rows = session.execute(
                select(UpdateRow, SiteRow.name)
                .join(SiteRow, SiteRow.id == UpdateRow.site_id)
                .where(UpdateRow.round_id == round_id)
                .order_by(SiteRow.name)
            )
            return [_update(row, name) for row, name in rows]

    def site_update(self, round_id: int, site_id: int) -> UpdateRecord | None:
        with self._read() as session:
            found = session.execute(
                select(UpdateRow, SiteRow.name)
                .join(SiteRow, SiteRow.id == UpdateRow.site_id)
                .where(UpdateRow.round_id == round_id, UpdateRow.site_id == site_id)
            ).first()
            return None if found is None else _update(found[0], found[1])

    def mark_budget_spent(self, run_id: str, site_id: int, now: datetime) -> bool:
        with self._write() as session:
            if session.get(RunRow, run_id) is None:
                raise NotFound(f"no run {run_id!r}")
            if session.get(BudgetSpentRow, (run_id, site_id)) is not None:
                return False
            session.add(BudgetSpentRow(run_id=run_id, site_id=site_id, at=now))
            return True

    def budget_spent_sites(self, run_id: str) -> dict[str, datetime]:
        with self._read() as session:
            rows = session.execute(
                select(SiteRow.name, BudgetSpentRow.at)
                .join(SiteRow, SiteRow.id == BudgetSpentRow.site_id)
                .where(BudgetSpentRow.run_id == run_id)
            )
            return {name: at for name, at in rows}

    def update_payloads(self, update_ids: Sequence[int]) -> dict[int, bytes]:
        if not update_ids:
            return {}
        with self._read() as session:
            rows = session.execute(select(UpdateRow.id, UpdateRow.payload).where(UpdateRow.id.in_(list(update_ids))))
            return {int(update_id): bytes(payload) for update_id, payload in rows}

    # --- FAM versions ----------------------------------------------------------------------------------
    def get_version(self, version: int) -> VersionRecord | None:
        with self._read() as session:
            row = session.get(FamVersionRow, version)
            if row is None:
                return None
            return _version(row, self._contributions(session, [row.id]).get(row.id, ()))

    def version_data(self, version: int) -> bytes | None:
        with self._read() as session:
            data = session.scalar(select(FamVersionRow.data).where(FamVersionRow.id == version))
            return None if data is None else bytes(data)

    def list_versions(self, run_id: str) -> list[VersionRecord]:
        with self._read() as session:
            rows = list(
                session.scalars(select(FamVersionRow).where(FamVersionRow.run_id == run_id).order_by(FamVersionRow.id))
            )
            lineage = self._contributions(session, [row.id for row in rows])
            return [_version(row, lineage.get(row.id, ())) for row in rows]

    @staticmethod
    def _contributions(session: Session, version_ids: list[int]) -> dict[int, tuple[Contribution, ...]]:
        if not version_ids:
            return {}
        rows = session.execute(
            select(ContributionRow, SiteRow.name)
            .join(SiteRow, SiteRow.id == ContributionRow.site_id)
            .where(ContributionRow.version_id.in_(version_ids))
            .order_by(SiteRow.name)
        )
        found: dict[int, list[Contribution]] = {}
        for row, name in rows:
            found.setdefault(row.version_id, []).append(
                Contribution(name, row.update_id, row.num_samples, row.payload_bytes)
            )
        return {key: tuple(value) for key, value in found.items()}

    # --- audit -----------------------------------------------------------------------------------------
    def add_audit(self, entry: AuditEntry) -> None:
        self.add_audit_batch([entry])

    def add_audit_batch(self, entries: list[AuditEntry]) -> None:
        with self._write() as session:
            session.add_all(
                AuditRow(
                    at=entry.at,
                    actor=entry.actor[:200],
                    action=entry.action[:64],
                    outcome=entry.outcome[:16],
                    code=entry.code[:32],
                    detail=entry.detail,
                    run_id=entry.run_id,
                    round=entry.round,
                    site=None if entry.site is None else entry.site[:64],
                    count=min(entry.count, (1 << 31) - 1),
                )
                for entry in entries
            )

    def prune_audit(self, before: datetime) -> int:
        with self._write() as session:
            return _rowcount(session.execute(delete(AuditRow).where(AuditRow.at < before)))

    def list_audit(self, limit: int = 100, outcome: str | None = None, run_id: str | None = None) -> list[AuditRecord]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if outcome is not None:
            query = query.where(AuditRow.outcome == outcome)
        if run_id is not None:
            query = query.where(AuditRow.run_id == run_id)
        with self._read() as session:
            return [
                AuditRecord(
                    at=row.at,
                    actor=row.actor,
                    action=row.action,
                    outcome=row.outcome,
                    code=row.code,
                    detail=row.detail,
                    run_id=row.run_id,
                    round=row.round,
                    site=row.site,
                    count=row.count,
                    id=row.id,
                )
                for row in session.scalars(query)
            ]


# --- row → record -------------------------------------------------------------------------------------


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0))


def _next_round(current: RoundRow, input_version: int, now: datetime, deadline: datetime) -> RoundRow:
    return RoundRow(
        run_id=current.run_id,
        number=current.number + 1,
        state=RoundState.OPEN.value,
        opened_at=now,
        deadline=deadline,
        input_version=input_version,
        metrics={},
        message="",
    )


def _version_row(run_id: str, round_number: int, version: NewVersion, now: datetime) -> FamVersionRow:
    return FamVersionRow(
        run_id=run_id,
        round=round_number,
        parent_version=version.parent_version,
        format=version.format,
        sha256=version.sha256,
        size_bytes=len(version.data),
        data=version.data,
        created_at=now,
    )


def _site(row: SiteRow) -> SiteRecord:
    return SiteRecord(
        id=row.id,
        name=row.name,
        description=row.description,
        enabled=row.enabled,
        enrolled_at=row.enrolled_at,
        revoked_at=row.revoked_at,
        last_seen=row.last_seen,
        software_version=row.software_version,
        site_info={str(k): str(v) for k, v in (row.site_info or {}).items()},
        previous_token_expires_at=row.previous_token_expires_at,
        max_samples=row.max_samples,
    )


def _run(row: RunRow) -> RunRecord:
    return RunRecord(
        id=row.id,
        name=row.name,
        state=RunState(row.state),
        config=dict(row.config),
        created_at=row.created_at,
        finished_at=row.finished_at,
        message=row.message,
        latest_version=row.latest_version,
        current_round=row.current_round,
    )


def _round(row: RoundRow) -> RoundRecord:
    return RoundRecord(
        id=row.id,
        run_id=row.run_id,
        number=row.number,
        state=RoundState(row.state),
        opened_at=row.opened_at,
        deadline=row.deadline,
        closed_at=row.closed_at,
        input_version=row.input_version,
        output_version=row.output_version,
        metrics={str(k): float(v) for k, v in (row.metrics or {}).items()},
        message=row.message,
    )


def _update(row: UpdateRow, site: str) -> UpdateRecord:
    return UpdateRecord(
        id=row.id,
        round_id=row.round_id,
        site=site,
        base_version=row.base_version,
        num_samples=row.num_samples,
        metrics={str(k): float(v) for k, v in (row.metrics or {}).items()},
        payload_bytes=row.payload_bytes,
        sha256=row.sha256,
        received_at=row.received_at,
        privacy=None if row.privacy is None else dict(row.privacy),
    )


def _version(row: FamVersionRow, contributions: tuple[Contribution, ...]) -> VersionRecord:
    return VersionRecord(
        version=row.id,
        run_id=row.run_id,
        round=row.round,
        parent_version=row.parent_version,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        format=row.format,
        created_at=row.created_at,
        contributions=contributions,
    )
