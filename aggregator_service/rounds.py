"""Round life: OPEN → AGGREGATING → CLOSED (new FAM version committed with the closing), or ABANDONED.

One engine thread per server decides when the active run's round closes and does the closing, so rounds
close one at a time; the store's state checks keep that true even with a second server on the database.
A round closes once it has quorum (``min_sites`` accepted updates) and either every enabled site reported
or its deadline passed. Past the deadline without quorum, the run's late policy decides: keep accepting
until quorum, or abandon the round and reopen a new one from the same FAM version.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Literal

import numpy as np

from aggregator_service import secure_rounds
from aggregator_service.context import Services
from aggregator_service.errors import FailedPrecondition
from aggregator_service.logs import event
from aggregator_service.metrics import record_round_closed
from aggregator_service.store.base import (
    NewVersion,
    RoundRecord,
    RoundState,
    RunRecord,
    RunState,
    Store,
    UpdateRecord,
)
from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.arrays import Array
from fedmedclip.federation.codec import decode_update
from fedmedclip.federation.errors import FederationError
from fedmedclip.federation.fam_bytes import fam_from_bytes, fam_to_bytes, sha256_hex
from fedmedclip.federation.robust import capped_samples
from fedmedclip.federation.run_config import RunConfig

log = logging.getLogger("aggregator_service.rounds")

Decision = Literal["wait", "close", "abandon"]
IDLE_CHECK_S = 1.0  # how often the engine looks at the clock when nothing wakes it


def weighted_metrics(updates: list[UpdateRecord], max_samples: int | None = None) -> dict[str, float]:
    """Sample-weighted mean of each metric over the updates that reported it (weights capped like the FAM's)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for update in updates:
        weight = capped_samples(update.num_samples, max_samples)
        for key, value in update.metrics.items():
            sums[key] = sums.get(key, 0.0) + value * weight
            weights[key] = weights.get(key, 0.0) + weight
    return {key: sums[key] / weights[key] for key in sorted(sums) if weights[key] > 0}


def decide(accepted: int, enabled_sites: int, config: RunConfig, deadline: datetime, now: datetime) -> Decision:
    """What an OPEN round should do now; a pure function of its counts, its config and the clock."""
    past_deadline = now >= deadline
    if accepted >= config.min_sites and (accepted >= enabled_sites or past_deadline):
        return "close"
    if past_deadline and config.late_policy == "reopen":
        return "abandon"
    return "wait"


class RoundEngine:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set, sleeping until woken (a submission, an admin action) or a deadline."""
        while not stop.is_set():
            generation = self.svc.notifier.generation
            try:
                sleep_s = self.step()
            except Exception:  # a database hiccup must not kill the engine; the next step retries
                log.exception("round engine step failed; retrying")
                sleep_s = IDLE_CHECK_S
            if stop.is_set() or self.svc.notifier.closed:
                break
            if sleep_s > 0:
                self.svc.notifier.wait(generation, sleep_s)

    def resume(self) -> None:
        """On start: decode the open round's stored updates again, so closing it stays fast."""
        run = self.svc.store.active_run()
        current = None if run is None else self.svc.store.current_round(run.id)
        if run is None or current is None:
            return
        config = RunConfig.from_dict(run.config)
        if config.secure_aggregation.enabled:  # never resumed with half the key material
            secure_rounds.abandon_after_restart(self.svc, run, config, current)
            return
        updates = self.svc.store.list_updates(current.id)
        if current.state == RoundState.OPEN:
            for update_id, site_update in self._decode(updates, current).items():
                self.svc.pending.put(current.id, update_id, site_update)
        self.svc.metrics.current_round.set(current.number)
        self.svc.metrics.latest_version.set(run.latest_version)
        event(
            log,
            "resumed run",
            run=run.id,
            round=current.number,
            state=current.state.value,
            accepted=len(updates),
            min_sites=config.min_sites,
            version=current.input_version,
        )

    def step(self) -> float:
        """Act on the active run's current round once; returns how long to sleep before the next step."""
        store = self.svc.store
        run = store.active_run()
        current = None if run is None else store.current_round(run.id)
        if run is None or current is None:
            return IDLE_CHECK_S
        config = RunConfig.from_dict(run.config)
        if config.secure_aggregation.enabled:
            return secure_rounds.step(self.svc, run, config, current)
        if current.state == RoundState.AGGREGATING:  # left so by a crash, or by a failed commit: finish it
            self._close(run, config, current)
            return 0.0
        if current.state != RoundState.OPEN:
            return IDLE_CHECK_S
        now = self.svc.clock()
        accepted = len(store.list_updates(current.id))
        decision = decide(accepted, expected_sites(store, run.id), config, current.deadline, now)
        if decision == "close":
            if store.begin_aggregation(current.id):
                self._close(run, config, current)
            return 0.0
        if decision == "abandon":
            self._abandon(run, config, current, accepted, now)
            return 0.0
        until_deadline = (current.deadline - now).total_seconds()
        return min(IDLE_CHECK_S, until_deadline) if until_deadline > 0 else IDLE_CHECK_S

    def _abandon(self, run: RunRecord, config: RunConfig, current: RoundRecord, accepted: int, now: datetime) -> None:
        reason = f"deadline passed with {accepted} of {config.min_sites} required updates"
        if self.svc.store.abandon_round(current.id, reason, now, now + timedelta(seconds=config.round_timeout_s)):
            self.svc.pending.forget_round(current.id)
            self.svc.metrics.rounds.labels(RoundState.ABANDONED.value).inc()
            self.svc.metrics.current_round.set(current.number + 1)
            event(log, "round abandoned; reopened", logging.WARNING, run=run.id, round=current.number, reason=reason)
            self.svc.notifier.notify()

    def _close(self, run: RunRecord, config: RunConfig, current: RoundRecord) -> None:
        """Aggregate the round's accepted updates and commit the new version with the round's closing."""
        store = self.svc.store
        started, started_cpu = time.perf_counter(), time.thread_time()
        updates = store.list_updates(current.id)
        try:
            decoded = self._decode(updates, current)
            parent = self._state(current.input_version, config.embed_dim)
            # A site's claimed sample count is its weight: capped by the run and by the count the operator
            # recorded at enrolment (docs/design.md §6).
            site_caps = {site.name: site.max_samples for site in store.list_sites()}
            site_updates = [
                replace(
                    decoded[u.id],
                    num_samples=capped_samples(u.num_samples, config.max_samples_per_site, site_caps.get(u.site)),
                )
                for u in updates
            ]
            dp_metrics: dict[str, float] = {}
            if config.privacy.mode == "site":  # DP-FedAvg at this (trusted) aggregator, docs/design.md §3.16
                new_state, dp_metrics = self._dp_fedavg(run, config, current, parent, site_updates)
            else:
                # Each update passed validate_update with these shapes and bound when it was accepted.
                new_state = aggregate(
                    parent,
                    site_updates,
                    config.weighting,
                    config.norm_bound,
                    prevalidated=True,
                    clip_norm=config.clip_norm,
                    rule=config.aggregation_rule,
                    trim_fraction=config.trim_fraction,
                )
        except (FederationError, ValueError, KeyError) as exc:
            # Deterministic: retrying would fail the same way, so the run stops with the reason.
            message = f"aggregation of round {current.number} failed: {exc}"
            store.finish_run(run.id, RunState.FAILED, message, self.svc.clock())
            event(log, "run failed", logging.ERROR, run=run.id, round=current.number, reason=message)
            self.svc.notifier.notify()
            return
        aggregated = time.perf_counter()
        data = fam_to_bytes(new_state)
        final = store.count_closed_rounds(run.id) + 1 >= config.rounds
        now = self.svc.clock()
        try:
            version, following = store.commit_round(
                current.id,
                NewVersion(data, sha256_hex(data), current.input_version),
                [u.id for u in updates],
                {**weighted_metrics(updates, config.max_samples_per_site), **dp_metrics},
                now,
                None if final else now + timedelta(seconds=config.round_timeout_s),
            )
        except FailedPrecondition as exc:  # the run was stopped meanwhile: nothing to commit
            event(log, "round not committed", logging.WARNING, run=run.id, round=current.number, reason=exc.message)
            self.svc.pending.forget_round(current.id)
            return
        committed = time.perf_counter()
        close_cpu_s = time.thread_time() - started_cpu  # this thread's own work: robust to a busy machine
        self.svc.models.put_bytes(version, data)
        self.svc.models.put_state(version, new_state)
        close_s = self._close_seconds(current, updates, committed)
        self.svc.pending.forget_round(current.id)
        record_round_closed(
            self.svc.metrics,
            aggregation_s=aggregated - started,
            close_cpu_s=close_cpu_s,
            version=version,
            next_round=None if following is None else following.number,
            close_s=close_s,
        )
        event(
            log,
            "round closed",
            run=run.id,
            round=current.number,
            version=version,
            parent=current.input_version,
            sites=len(updates),
            aggregate_ms=round((aggregated - started) * 1000, 2),
            close_ms=round(close_s * 1000, 2),
            close_cpu_ms=round(close_cpu_s * 1000, 2),
            run_completed=final,
        )
        self.svc.notifier.notify()

    def _close_seconds(self, current: RoundRecord, updates: list[UpdateRecord], committed: float) -> float:
        """From the last accepted update to the commit; by wall clock if the update predates a restart."""
        last = self.svc.pending.last_accept(current.id)
        if last is not None:
            return committed - last
        newest = max(u.received_at for u in updates)
        return max((self.svc.clock() - newest).total_seconds(), 0.0)

    def _decode(self, updates: list[UpdateRecord], current: RoundRecord) -> dict[int, SiteUpdate]:
        """Every update as a ``SiteUpdate``: from the cache, or decoded from its stored payload."""
        found = self.svc.pending.get(current.id)
        missing = [u for u in updates if u.id not in found]
        payloads = self.svc.store.update_payloads([u.id for u in missing])
        for update in missing:
            found[update.id] = SiteUpdate(
                update.site, update.num_samples, decode_update(payloads[update.id], update.sha256)
            )
        return {u.id: found[u.id] for u in updates}

    def _dp_fedavg(
        self,
        run: RunRecord,
        config: RunConfig,
        current: RoundRecord,
        parent: dict[str, Array],
        updates: list[SiteUpdate],
    ) -> tuple[dict[str, Array], dict[str, float]]:
        """One DP-FedAvg round; the adaptive clip bound travels in the closed rounds' metrics (restart-safe)."""
        # Imported here: the accountant (dp_accounting, scipy) costs ~70 MiB of RSS and over a second of start-up,
        # and only runs with site-level DP; an idle aggregator stays small (docs/design.md §3.9).
        from fedmedclip.privacy.dp_fedavg import dp_fedavg_round, site_epsilon

        store = self.svc.store
        closed = [r for r in store.list_rounds(run.id) if r.state == RoundState.CLOSED and r.number < current.number]
        clip = next(
            (r.metrics["dp_site_clip_next"] for r in reversed(closed) if "dp_site_clip_next" in r.metrics),
            config.privacy.site_initial_clip,
        )
        sites = store.count_enabled_sites()
        dense = [
            {
                name: (u.update.tensors[name].to_dense() if name in u.update.tensors else np.zeros_like(value)).astype(
                    np.float64
                )
                for name, value in parent.items()
            }
            for u in updates
        ]
        expected = max(1.0, config.privacy.site_sample_rate * sites)
        new_state, record = dp_fedavg_round(dict(parent), dense, clip, config.privacy, expected)
        epsilon, delta = site_epsilon(config.privacy, len(closed) + 1, sites)
        metrics = {
            "dp_site_epsilon": epsilon,
            "dp_site_delta": delta,
            "dp_site_clip": record.clip,
            "dp_site_clip_next": record.next_clip,
            "dp_site_clipped": float(record.clipped_sites),
        }
        fields: dict[str, object] = {k: round(v, 6) for k, v in metrics.items()}
        event(log, "site-level DP round", logging.INFO, run=run.id, round=current.number, **fields)
        return {name: np.asarray(value, dtype=np.float32) for name, value in new_state.items()}, metrics

    def _state(self, version: int, dim: int) -> dict[str, Array]:
        state = self.svc.models.get_state(version)
        if state is None:
            data = self.svc.store.version_data(version)
            if data is None:
                raise ValueError(f"FAM version {version} is missing from the store")
            state = fam_from_bytes(data, dim)
            self.svc.models.put_state(version, state)
        return state


def expected_sites(store: Store, run_id: str) -> int:
    """Enabled sites still able to contribute: those whose privacy budget is spent are not waited for."""
    spent = store.budget_spent_sites(run_id)
    enabled = store.count_enabled_sites()
    if not spent:
        return enabled
    return enabled - sum(1 for site in store.list_sites() if site.enabled and site.name in spent)
