"""What every handler gets: the store, the admin credential, limits, metrics, wake-ups and caches."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aggregator_service.metrics import Metrics
from aggregator_service.notifier import Notifier
from aggregator_service.refusals import RefusalCounter
from aggregator_service.secure_rounds import SecureRegistry
from aggregator_service.site_limits import IdleWatch, SiteSlots
from aggregator_service.store.base import Store
from fedmedclip.federation.aggregate import SiteUpdate
from fedmedclip.federation.arrays import Array


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Limits:
    max_update_bytes: int = 16 << 20
    chunk_bytes: int = 256 << 10
    poll_wait_cap_s: float = 20.0
    max_long_polls: int = 32  # long polls beyond this answer "wait" at once instead of holding a thread
    poll_retry_s: float = 1.0  # retry_after of a wait task
    touch_interval_s: float = 15.0  # last_seen is written at most this often per site (except Join)
    max_metrics: int = 32  # metric keys per update
    max_metric_name: int = 64
    site_token_grace_s: float = 86_400.0  # `sites rotate`: how long a replaced token keeps working by default
    max_site_info_chars: int = 256  # each field a site tells about itself (software version, platform...)
    max_calls_per_site: int = 8  # Federation calls one site may have in flight (long polls included)
    busy_retry_s: float = 2.0  # the retry hint of a RESOURCE_EXHAUSTED refusal of a per-site limit
    stream_idle_timeout_s: float = 30.0  # a stream that moves no message for this long is cancelled
    audit_max_keys: int = 10_000  # distinct refusal keys counted per audit window before the overflow key


class Slots:
    """A counted limit without blocking: ``try_take`` fails at once when all slots are in use."""

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self.capacity = capacity
        self._used = 0

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._used

    def try_take(self) -> bool:
        with self._lock:
            if self._used >= self.capacity:
                return False
            self._used += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._used = max(self._used - 1, 0)


class PendingUpdates:
    """Decoded updates of unfinished rounds, kept from submission to aggregation.

    Decoding is the expensive part of an update; keeping the result means closing a round costs only the
    averaging. After a restart the cache is empty and the round's updates are decoded from the database.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_round: dict[int, dict[int, SiteUpdate]] = {}
        self._last_accept: dict[int, float] = {}

    def put(self, round_id: int, update_id: int, update: SiteUpdate) -> None:
        with self._lock:
            self._by_round.setdefault(round_id, {})[update_id] = update
            self._last_accept[round_id] = time.perf_counter()

    def get(self, round_id: int) -> dict[int, SiteUpdate]:
        with self._lock:
            return dict(self._by_round.get(round_id, {}))

    def last_accept(self, round_id: int) -> float | None:
        """``perf_counter()`` time the round's latest update was accepted by this process, if it was."""
        with self._lock:
            return self._last_accept.get(round_id)

    def discard(self, update_ids: list[int]) -> None:
        with self._lock:
            for updates in self._by_round.values():
                for update_id in update_ids:
                    updates.pop(update_id, None)

    def forget_round(self, round_id: int) -> None:
        with self._lock:
            self._by_round.pop(round_id, None)
            self._last_accept.pop(round_id, None)


class FamCache:
    """The few newest FAM versions, as bytes and as tensors: every site downloads the same one."""

    def __init__(self, capacity: int = 3) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._bytes: OrderedDict[int, bytes] = OrderedDict()
        self._states: OrderedDict[int, dict[str, Array]] = OrderedDict()

    def get_bytes(self, version: int) -> bytes | None:
        with self._lock:
            data = self._bytes.get(version)
            if data is not None:
                self._bytes.move_to_end(version)
            return data

    def put_bytes(self, version: int, data: bytes) -> None:
        with self._lock:
            self._bytes[version] = data
            self._bytes.move_to_end(version)
            while len(self._bytes) > self._capacity:
                self._bytes.popitem(last=False)

    def get_state(self, version: int) -> dict[str, Array] | None:
        with self._lock:
            state = self._states.get(version)
            return None if state is None else dict(state)

    def put_state(self, version: int, state: dict[str, Array]) -> None:
        with self._lock:
            self._states[version] = dict(state)
            self._states.move_to_end(version)
            while len(self._states) > self._capacity:
                self._states.popitem(last=False)


@dataclass
class Services:
    store: Store
    admin_token: str
    limits: Limits = field(default_factory=Limits)
    metrics: Metrics = field(default_factory=Metrics)
    notifier: Notifier = field(default_factory=Notifier)
    clock: Callable[[], datetime] = utc_now
    pending: PendingUpdates = field(default_factory=PendingUpdates)
    models: FamCache = field(default_factory=FamCache)
    # Set while this process may serve: always on SQLite; on PostgreSQL only while it holds the leader lease.
    leading: threading.Event = field(default_factory=threading.Event)
    secure: SecureRegistry = field(default_factory=SecureRegistry)  # secure rounds' key phases, memory only
    long_polls: Slots = field(init=False)
    site_slots: SiteSlots = field(init=False)
    refusals: RefusalCounter = field(init=False)
    idle_watch: IdleWatch = field(init=False)
    _touched: dict[int, float] = field(default_factory=dict, init=False)
    _touch_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.long_polls = Slots(self.limits.max_long_polls)
        self.leading.set()
        self.refusals = RefusalCounter(self.limits.audit_max_keys)
        self.site_slots = SiteSlots(self.limits.max_calls_per_site, self.limits.busy_retry_s)
        self.idle_watch = IdleWatch(self.limits.stream_idle_timeout_s)

    def should_touch(self, site_id: int) -> bool:
        """Rate-limit ``last_seen`` writes: a poll every second must not become a write every second."""
        now = time.monotonic()
        with self._touch_lock:
            last = self._touched.get(site_id)
            if last is not None and now - last < self.limits.touch_interval_s:
                return False
            self._touched[site_id] = now
            return True
