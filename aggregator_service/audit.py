"""The audit log's writers: an admin's successful action (one row each, written at once) and refused
requests (counted, written in batches off the request path).

Refusals are audited by the transport, in one place, so no handler can forget one. They are what a flood
consists of, so each one only bumps a counter in memory, keyed by peer (host, not port), action, status
code and the run/round/site it concerned, within a time window (``audit_window_s``). A background thread
writes each window's counters as one row per key (``count`` holds the number of calls, ``detail`` the latest
reason), and deletes rows older than the retention. Anyone reading refusals calls ``flush_refusals`` first,
so a run's status never lags behind. Memory is bounded: past ``max_keys`` distinct keys in a window,
further refusals are counted under a single overflow key.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from aggregator_service.context import Services
from aggregator_service.errors import ServiceError
from aggregator_service.logs import event
from aggregator_service.refusals import RefusalKey
from aggregator_service.store.base import AuditEntry

log = logging.getLogger("aggregator_service")

ADMIN = "admin"  # the actor name of every Admin call


def peer_host(actor: str) -> str:
    """``anonymous ipv4:1.2.3.4:5678`` → ``anonymous ipv4:1.2.3.4``: a flood from new connections is one peer."""
    if not actor.startswith("anonymous "):
        return actor
    head, _, tail = actor.rpartition(":")
    return head if tail.isdigit() and head.count(":") >= 1 else actor


def record_refusal(
    svc: Services,
    action: str,
    actor: str,
    error: ServiceError,
    run_id: str | None = None,
    round_number: int | None = None,
    site: str | None = None,
) -> None:
    """Count a refused request for the audit log, and log it: at WARNING for a known caller (an enrolled
    site, attributable and revocable), at DEBUG for an anonymous one, whose flood must not become a flood of
    log lines (its counts reach the log at each flush)."""
    level = logging.DEBUG if actor.startswith("anonymous ") else logging.WARNING
    event(log, "request refused", level, action=action, actor=actor, code=error.code, detail=error.message, site=site)
    key = RefusalKey(peer_host(actor)[:200], action, error.code, run_id, round_number, site)
    svc.refusals.add(key, svc.clock(), error.message[:2000])


def flush_refusals(svc: Services) -> int:
    """Write the counted refusals as one row per key; returns the number of refusals written."""
    with svc.refusals.flush_lock:
        entries = svc.refusals.drain()
        if not entries:
            return 0
        try:
            svc.store.add_audit_batch(entries)
        except Exception:  # the refusals stood; only their record is lost, so say so loudly
            log.exception("could not write %d refusal rows to the audit log", len(entries))
            return 0
    total = sum(e.count for e in entries)
    event(log, "refusals recorded", logging.WARNING, rows=len(entries), refusals=total)
    return total


def prune_audit(svc: Services, retention_days: float) -> int:
    """Delete audit rows older than the retention; returns how many."""
    return svc.store.prune_audit(svc.clock() - timedelta(days=retention_days))


class AuditWriter:
    """The background thread: flushes refusals every ``window_s`` and prunes past the retention."""

    def __init__(self, svc: Services, window_s: float, retention_days: float) -> None:
        self._svc, self._window_s, self._retention_days = svc, window_s, retention_days
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)

    def start(self) -> AuditWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and write what is left."""
        self._stop.set()
        self._thread.join(timeout=30)
        flush_refusals(self._svc)

    def _run(self) -> None:
        while not self._stop.wait(self._window_s):
            try:
                flush_refusals(self._svc)
                pruned = prune_audit(self._svc, self._retention_days)
                if pruned:
                    event(log, "audit rows pruned", rows=pruned, retention_days=self._retention_days)
            except Exception:  # never let the writer die: the next window tries again
                log.exception("audit writer failed")


def audit_ok(svc: Services, action: str, detail: str, run_id: str | None = None, site: str | None = None) -> None:
    svc.store.add_audit(
        AuditEntry(at=svc.clock(), actor=ADMIN, action=action, outcome="ok", detail=detail, run_id=run_id, site=site)
    )
