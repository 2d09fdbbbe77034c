"""Active/standby on PostgreSQL: a lease row with a fencing token decides which aggregator process leads.

docs/design.md §4.7. Several aggregator processes share one database; exactly one leads and serves, the
others report NOT_SERVING and refuse every RPC with UNAVAILABLE until they win the lease.

- **The lease** is the single row of ``leader_lease``: holder, fencing token, expiry. Times are the
  database's clock (``clock_timestamp()``), so the hosts' clocks never need to agree. A standby takes the
  row only once it has expired, and every change of holder adds one to the token. The leader renews it every
  ``ttl / 3``; a leader that cannot renew in time steps down by itself.
- **Fencing**: every write transaction of the leader's store first locks the lease row ``FOR SHARE`` and
  checks that it still carries this process's token and has not expired. A leader paused past its lease (a
  long GC, SIGSTOP, a VM migration) therefore commits nothing once it resumes: its writes see a new token or
  an expired lease and fail with UNAVAILABLE. The share lock makes a takeover wait for the writes already
  past the check, so no write checked under the old token can commit after the new leader starts.
- A write transaction of a paused leader would hold that share lock for ever; each one therefore sets
  ``idle_in_transaction_session_timeout`` to the lease's length, and PostgreSQL ends it. A standby's takeover
  waits at most a couple of seconds (``lock_timeout``) and tries again.

SQLite has no equivalent: a SQLite aggregator is single-process, enforced by an exclusive lock on a file
next to the database (``hold_sqlite_lock``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from aggregator_service.errors import Unavailable
from aggregator_service.logs import event
from aggregator_service.settings import ConfigError

log = logging.getLogger("aggregator_service.leadership")
_T = TypeVar("_T")

NOT_LEADER = "this aggregator is a standby (not the leader); retry, or use another aggregator address"
DEPOSED = "this aggregator lost its leadership lease; its write was refused (retry on the current leader)"

_ACQUIRE = text(
    """
    INSERT INTO leader_lease (id, holder, token, acquired_at, expires_at)
    VALUES (1, :holder, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => :ttl))
    ON CONFLICT (id) DO UPDATE
        SET holder = EXCLUDED.holder, token = leader_lease.token + 1,
            acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
        WHERE leader_lease.expires_at < clock_timestamp()
    RETURNING token
    """
)
# A plain read first: the upsert locks the row even when its WHERE fails, which would queue the leader's
# fenced writes behind a standby's every look.
_EXPIRED = text("SELECT expires_at < clock_timestamp() FROM leader_lease WHERE id = 1")
_RENEW = text(
    """
    UPDATE leader_lease SET expires_at = clock_timestamp() + make_interval(secs => :ttl)
    WHERE id = 1 AND token = :token AND holder = :holder AND expires_at > clock_timestamp()
    RETURNING token
    """
)
_RELEASE = text("UPDATE leader_lease SET expires_at = clock_timestamp() WHERE id = 1 AND token = :token")
_FENCE = text(
    """
    SELECT set_config('idle_in_transaction_session_timeout', :idle_ms, true)
    FROM leader_lease
    WHERE id = 1 AND token = :token AND holder = :holder AND expires_at > clock_timestamp()
    FOR SHARE
    """
)


def new_holder_id() -> str:
    """Unique per process start: the host, the pid and randomness (pids are reused across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Lease:
    """The lease row's operations; each runs in its own short transaction on ``engine``."""

    engine: Engine
    holder: str
    ttl_s: float
    takeover_lock_timeout_ms: int = 2000

    def acquire(self) -> int | None:
        """The new fencing token if the lease was free (absent or expired), else ``None``."""
        with self.engine.connect() as connection:
            expired = connection.execute(_EXPIRED).scalar()
        if expired is False:
            return None  # held and valid: nothing to try
        try:
            with self.engine.begin() as connection:
                # A paused leader's open write may hold the row; do not queue behind it for ever.
                connection.execute(text(f"SET LOCAL lock_timeout = {int(self.takeover_lock_timeout_ms)}"))
                token = connection.execute(_ACQUIRE, {"holder": self.holder, "ttl": self.ttl_s}).scalar()
        except OperationalError as exc:
            if "lock timeout" in str(exc).lower() or "canceling statement" in str(exc).lower():
                return None
            raise
        return None if token is None else int(token)

    def renew(self, token: int) -> bool:
        with self.engine.begin() as connection:
            row = connection.execute(_RENEW, {"holder": self.holder, "token": token, "ttl": self.ttl_s}).scalar()
        return row is not None

    def release(self, token: int) -> None:
        """Expire the lease now (graceful shutdown), so a standby takes over at its next look."""
        with self.engine.begin() as connection:
            connection.execute(_RELEASE, {"token": token})

    def fence(self, token: int) -> Callable[[Session], None]:
        """The store's write fence for ``token``: raises ``Unavailable`` once the lease is not ours."""
        params = {"holder": self.holder, "token": token, "idle_ms": str(int(self.ttl_s * 1000))}

        def check(session: Session) -> None:
            if session.execute(_FENCE, params).first() is None:
                event(log, "write refused: the lease is no longer ours", logging.WARNING, token=token)
                raise Unavailable(DEPOSED)

        return check


def refuse_writes(_session: Session) -> None:
    """The store's fence while standing by: a standby writes nothing."""
    event(log, "write refused: this process is not the leader", logging.WARNING)
    raise Unavailable(NOT_LEADER)


@dataclass
class Elector:
    """A thread that campaigns for the lease, renews it while leading, and steps down when it is lost.

    ``on_lead(token)`` runs when this process becomes leader (before it reports SERVING); ``on_lose()`` when
    it stops leading. Both run on the elector's thread, one at a time.
    """

    lease: Lease
    on_lead: Callable[[int], None]
    on_lose: Callable[[], None]
    poll_s: float = 1.0
    token: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _waiting_since: float = 0.0
    _valid_until: float = 0.0

    @property
    def renew_every_s(self) -> float:
        return self.lease.ttl_s / 3

    def start(self) -> None:
        """Try for the lease once now (a fresh database, or a released lease, serves at once), then campaign
        and renew on a thread."""
        self._waiting_since = time.monotonic()
        self._campaign()
        self._thread = threading.Thread(target=self._run, name="leader-elector", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; a leader steps down and, with ``release``, frees the lease for a standby now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease.ttl_s + 5)
        token = self.token
        if token is not None:
            self._lose("shutting down")
            if release:
                try:
                    self.lease.release(token)
                    event(log, "leadership released", token=token)
                except DBAPIError:
                    log.warning("could not release the lease; a standby takes over when it expires")

    def _campaign(self) -> bool:
        """One attempt at the lease; on success, take over. True when this process now leads."""
        token = self._try(self.lease.acquire)
        if token is None or self._stop.is_set():
            return False
        self._valid_until = time.monotonic() + self.lease.ttl_s
        self.token = token
        try:
            self.on_lead(token)
        except Exception:  # e.g. the database went away while resuming: hand the lease back
            log.exception("could not take over as leader; standing by")
            self._lose("taking over failed")
            self._try(partial(self.lease.release, token))
            return False
        event(
            log,
            "leadership acquired",
            token=token,
            holder=self.lease.holder,
            waited_s=round(time.monotonic() - self._waiting_since, 2),
        )
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.token is None:
                if not self._campaign():
                    self._stop.wait(self.poll_s)
                continue
            if self._stop.wait(self.renew_every_s):
                break
            started = time.monotonic()
            renewed = self._try(partial(self.lease.renew, self.token))
            if renewed:
                self._valid_until = started + self.lease.ttl_s
            elif renewed is False or time.monotonic() >= self._valid_until:
                self._lose("the lease was lost or expired" if renewed is False else "the lease could not be renewed")
                self._waiting_since = time.monotonic()

    def _lose(self, reason: str) -> None:
        token, self.token = self.token, None
        self.on_lose()
        event(log, "leadership lost; standing by", logging.WARNING, token=token, reason=reason)

    def _try(self, call: Callable[[], _T]) -> _T | None:
        """``call()``, or ``None`` when the database cannot be reached (logged; the loop retries)."""
        try:
            return call()
        except DBAPIError as exc:
            log.warning("lease operation failed: %s", str(exc).splitlines()[0])
            return None


def hold_sqlite_lock(database: str) -> IO[bytes]:
    """An exclusive lock on ``DATABASE.lock`` for this process's life, or ``ConfigError`` naming the holder.

    SQLite aggregators are single-process: two would both run the round engine. The OS releases the lock
    when the process dies, however it dies, so a crash never leaves a stale lock behind.
    """
    path = Path(database).expanduser().resolve()
    lock_path = path.with_name(path.name + ".lock")
    handle = lock_path.open("a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode("utf-8", "replace").strip() or "unknown"
        handle.close()
        raise ConfigError(
            f"another aggregator process ({holder}) is using the SQLite database {path}; SQLite is single-process. "
            "Stop that process, or use PostgreSQL (database_url postgresql+psycopg://...) to run several "
            "aggregators in active/standby."
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}".encode())
    handle.flush()
    return handle
