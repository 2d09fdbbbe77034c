"""Per-site concurrency limits and the idle-stream watchdog: no single site can hold the worker pool.

Every authenticated Federation call takes one of its site's ``max_calls_per_site`` slots for its duration;
an upload also takes the site's single upload slot and a download its single download slot. A call that
finds its slot taken is refused at once with ``RESOURCE_EXHAUSTED`` and a retry hint, before it reads or
writes anything, so a site opening 80 streams costs the server 80 short refusals, not 80 threads.

A stream that stops moving (a client that sent a header and then nothing, or stopped reading a download)
would still hold its thread; ``IdleWatch`` cancels any watched stream that has not moved for
``idle_timeout_s``, which wakes its thread with a cancelled-call error (the client sees ``CANCELLED``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import TypeVar

from aggregator_service.errors import ResourceExhausted

_T = TypeVar("_T")

UPLOAD = "upload"
DOWNLOAD = "download"
CALL = "call"


class SiteSlots:
    """Counts of each site's calls in flight, by kind; ``hold`` refuses instead of waiting."""

    def __init__(self, max_calls_per_site: int, retry_after_s: float) -> None:
        self._caps = {CALL: max_calls_per_site, UPLOAD: 1, DOWNLOAD: 1}
        self._retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._used: Counter[tuple[str, str]] = Counter()

    def in_use(self, site: str, kind: str) -> int:
        with self._lock:
            return self._used[(site, kind)]

    def _take(self, site: str, kind: str) -> bool:
        with self._lock:
            if self._used[(site, kind)] >= self._caps[kind]:
                return False
            self._used[(site, kind)] += 1
            return True

    def _give_back(self, site: str, kind: str) -> None:
        with self._lock:
            self._used[(site, kind)] -= 1
            if self._used[(site, kind)] <= 0:
                del self._used[(site, kind)]

    @contextmanager
    def hold(self, site: str, kind: str) -> Iterator[None]:
        if not self._take(site, kind):
            what = "calls" if kind == CALL else f"{kind} streams"
            raise ResourceExhausted(
                f"site {site!r} already has {self._caps[kind]} {what} in flight (the limit); retry after "
                f"{self._retry_after_s:g} s",
                self._retry_after_s,
            )
        try:
            yield
        finally:
            self._give_back(site, kind)


class IdleWatch:
    """Cancels streams that have not moved for ``idle_timeout_s``; one daemon thread checks them all."""

    def __init__(self, idle_timeout_s: float, check_every_s: float | None = None) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._check_every_s = check_every_s or min(max(idle_timeout_s / 5, 0.05), 1.0)
        self._lock = threading.Lock()
        self._streams: dict[int, tuple[float, Callable[[], object]]] = {}
        self._cancelled: set[int] = set()
        self._next_id = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-stream-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def watch(
        self, items: Iterator[_T], cancel: Callable[[], object], client_sends: bool = True
    ) -> Generator[_T, None, None]:
        """``items`` unchanged, with ``cancel`` called if the client keeps it waiting for the idle timeout.

        ``client_sends``: the client produces ``items`` (an upload), so the clock runs while the next item is
        awaited; otherwise the client receives them (a download) and it runs while an item is being taken.
        Time the server itself spends (checking a header, reading the database) never counts.
        """
        with self._lock:
            key = self._next_id
            self._next_id += 1
        iterator = iter(items)
        try:
            while True:
                self._mark(key, cancel, running=client_sends)
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                self._mark(key, cancel, running=not client_sends)
                yield item
        finally:
            with self._lock:
                self._streams.pop(key, None)
                self._cancelled.discard(key)

    def _mark(self, key: int, cancel: Callable[[], object], *, running: bool) -> None:
        with self._lock:
            if running and key not in self._cancelled:  # a stream is cancelled once
                self._streams[key] = (time.monotonic(), cancel)
            else:
                self._streams.pop(key, None)

    def _run(self) -> None:
        while not self._stopped.wait(self._check_every_s):
            cutoff = time.monotonic() - self.idle_timeout_s
            with self._lock:
                stale = [key for key, (moved, _) in self._streams.items() if moved < cutoff]
                cancels = [self._streams.pop(key)[1] for key in stale]
                self._cancelled.update(stale)
            for cancel in cancels:
                cancel()
