"""In-memory counts of refused requests for the audit log (``audit`` writes them): bounded, lock-guarded."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import datetime

from aggregator_service.store.base import AuditEntry

OVERFLOW_ACTOR = "(other peers: key limit reached)"


@dataclass(frozen=True)
class RefusalKey:
    actor: str
    action: str
    code: str
    run_id: str | None
    round: int | None
    site: str | None


class RefusalCounter:
    """Refusals of the current window, by key; ``drain`` hands them over as audit entries."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._entries: dict[RefusalKey, AuditEntry] = {}
        self.flush_lock = threading.Lock()  # one flush at a time: the same window is never written twice

    def add(self, key: RefusalKey, at: datetime, detail: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None and len(self._entries) >= self._max_keys:
                key = RefusalKey(OVERFLOW_ACTOR, key.action, key.code, None, None, None)
                entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = AuditEntry(
                    at, key.actor, key.action, "refused", key.code, detail, key.run_id, key.round, key.site, 1
                )
            else:
                self._entries[key] = replace(entry, detail=detail, count=entry.count + 1)

    def drain(self) -> list[AuditEntry]:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        return entries

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(e.count for e in self._entries.values())
