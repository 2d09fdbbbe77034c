"""Wake-ups for whoever waits on the federation's state: the round engine and long-polling sites."""

from __future__ import annotations

import threading


class Notifier:
    """A generation counter under a condition: waiters sleep until it moves (or time runs out).

    Callers read ``generation`` *before* checking the state they wait on, then ``wait(since=...)``: a change
    that happens between the check and the wait is not missed.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self._closed = False

    @property
    def generation(self) -> int:
        with self._condition:
            return self._generation

    @property
    def closed(self) -> bool:
        return self._closed

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, since: int, timeout: float) -> int:
        """Block until the generation differs from ``since``, ``close()`` was called, or ``timeout`` s."""
        with self._condition:
            self._condition.wait_for(lambda: self._generation != since or self._closed, timeout=max(timeout, 0.0))
            return self._generation

    def close(self) -> None:
        """Release every waiter now and from now on (shutdown: long polls answer at once)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
