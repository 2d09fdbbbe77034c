"""A background heartbeat: tells the aggregator what the site is doing, and learns when to drop a round.

The aggregator answers ``abandon_round`` when the round being worked on closed or the run stopped; the loop
then throws the round's work away instead of uploading it. A failed heartbeat is only logged: the main loop
owns connectivity and its retries.
"""

from __future__ import annotations

import logging
import threading

from fedmedclip.federation.messages import SiteActivity
from fedmedclip.logs import event
from hospital_agent.client import AggregatorError, FederationClient

log = logging.getLogger("hospital_agent.heartbeat")


class Heartbeat:
    def __init__(self, client: FederationClient, interval_s: float, stop: threading.Event) -> None:
        self._client = client
        self._interval = interval_s
        self._stop = stop
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._run_id = ""
        self._activity: SiteActivity = "idle"
        self._round = 0
        self._abandoned: set[tuple[str, int]] = set()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def set(self, run_id: str, activity: SiteActivity, round_number: int = 0) -> None:
        with self._lock:
            self._run_id, self._activity, self._round = run_id, activity, round_number

    def abandoned(self, run_id: str, round_number: int) -> bool:
        """Whether the aggregator said to stop working on this round."""
        with self._lock:
            return (run_id, round_number) in self._abandoned

    def _beat(self) -> None:
        while not self._closed.wait(self._interval) and not self._stop.is_set():
            with self._lock:
                run_id, activity, round_number = self._run_id, self._activity, self._round
            try:
                reply = self._client.heartbeat(run_id, activity, round_number)
            except AggregatorError as error:
                event(log, "heartbeat failed", logging.DEBUG, run=run_id or None, code=error.code)
                continue
            if reply.abandon_round and round_number > 0:
                with self._lock:
                    self._abandoned.add((run_id, round_number))
                event(log, "aggregator says: abandon round", logging.WARNING, run=run_id, round=round_number)
