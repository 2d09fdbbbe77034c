"""Secure rounds (docs/design.md §4.6, §6.4): the four phases inside an OPEN round, and how the round ends.

A secure round is an ordinary round (§4.4) whose OPEN state is walked through four phases:

``advertise`` (train, then send two public keys) → ``share_keys`` (sealed Shamir shares, relayed) →
``masked_input`` (the masked vector, stored in ``masked_inputs``) → ``unmask`` (shares that remove the masks)

then the engine unmasks the sum, applies it to the round's input FAM and commits the new version; the same
transaction deletes the round's masked inputs. Too few sites in a phase (fewer than ``t``, or than
``min_sites``) abandons the round and opens a fresh one; nothing is unmasked. The phases' state, key
directory and relayed shares live in this process's memory only: after a restart ``abandon_after_restart``
drops the round instead of resuming it with half the key material.

Numpy only (no torch), like the rest of the aggregator's aggregation path.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from aggregator_service.errors import FailedPrecondition
from aggregator_service.logs import event
from aggregator_service.metrics import record_round_closed
from aggregator_service.store.base import NewVersion, RoundRecord, RoundState, RunRecord
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.secagg import encoding, packing
from fedmedclip.secagg.encoding import round_params
from fedmedclip.secagg.protocol import (
    AdvertisedKeys,
    Directory,
    RevealedShare,
    RoundParams,
    SealedShares,
    SecAggError,
    unmask_sum,
)

if TYPE_CHECKING:
    from aggregator_service.context import Services

log = logging.getLogger("aggregator_service.secure_rounds")


class Phase(enum.StrEnum):
    ADVERTISE = "advertise"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"
    CLOSING = "closing"  # the engine is unmasking: late answers are refused


@dataclass
class SecureRound:
    """One round's phase state. Guarded by ``SecureRegistry.lock``; never written to the database."""

    run_id: str
    round_id: int
    number: int
    input_version: int
    config: RunConfig
    phase: Phase
    deadline: datetime  # of the current phase
    advertised: dict[str, AdvertisedKeys] = field(default_factory=dict)
    directory: Directory | None = None
    shares_from: dict[str, tuple[SealedShares, ...]] = field(default_factory=dict)
    inbox: dict[str, tuple[SealedShares, ...]] = field(default_factory=dict)
    masked: set[str] = field(default_factory=set)
    survivors: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    revealed: dict[str, tuple[RevealedShare, ...]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def params(self) -> RoundParams:
        if self.directory is None:
            raise FailedPrecondition(f"round {self.number} has not fixed its secure parameters yet")
        return self.directory.params

    @property
    def needed(self) -> int:
        """Sites a phase must keep: the threshold, and never fewer than the run's quorum."""
        sites = len(self.directory.keys) if self.directory is not None else len(self.advertised)
        return max(self.config.secure_aggregation.round_threshold(max(sites, 2)), self.config.min_sites)


class SecureRegistry:
    """The secure rounds this process is running, by round id (at most one per active run)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._rounds: dict[int, SecureRound] = {}

    def get(self, current: RoundRecord, config: RunConfig) -> SecureRound:
        """The round's state, opened in the advertise phase the first time anyone asks."""
        with self.lock:
            found = self._rounds.get(current.id)
            if found is None:
                found = SecureRound(
                    current.run_id,
                    current.id,
                    current.number,
                    current.input_version,
                    config,
                    Phase.ADVERTISE,
                    current.deadline,
                )
                self._rounds = {current.id: found}  # older rounds are over: drop their key material
            return found

    def forget(self, round_id: int) -> None:
        with self.lock:
            self._rounds.pop(round_id, None)


# --- the engine's side ----------------------------------------------------------------------------------


def abandon_after_restart(svc: Services, run: RunRecord, config: RunConfig, current: RoundRecord) -> None:
    """On start: a secure round left OPEN or AGGREGATING cannot go on (its key material was in memory)."""
    if current.state not in (RoundState.OPEN, RoundState.AGGREGATING):
        return
    now = svc.clock()
    reason = "the aggregator restarted during this secure round; its key material is gone, so a fresh round opens"
    if svc.store.abandon_round(
        current.id,
        reason,
        now,
        now + timedelta(seconds=config.round_timeout_s),
        from_states=(RoundState.OPEN, RoundState.AGGREGATING),
    ):
        event(log, "secure round abandoned", logging.WARNING, run=run.id, round=current.number, reason=reason)


def step(svc: Services, run: RunRecord, config: RunConfig, current: RoundRecord) -> float:
    """Advance the current secure round by at most one phase; returns how long to sleep."""
    if current.state == RoundState.AGGREGATING:  # only a crash leaves a secure round here
        abandon_after_restart(svc, run, config, current)
        return 0.0
    if current.state != RoundState.OPEN:
        return 1.0
    now = svc.clock()
    with svc.secure.lock:
        state = svc.secure.get(current, config)
        past = now >= state.deadline
        if state.phase == Phase.ADVERTISE:
            return _after_advertise(svc, state, now, past)
        if state.phase == Phase.SHARE_KEYS:
            return _after_share_keys(svc, state, now, past)
        if state.phase == Phase.MASKED_INPUT:
            return _after_masked_input(svc, state, now, past)
        if state.phase != Phase.UNMASK:
            return 1.0
        if len(state.revealed) < len(state.survivors) and not past:
            return _sleep_until(state.deadline, now)
        state.phase = Phase.CLOSING
    # Unmasking reads the masked inputs and does the arithmetic outside the lock: polls stay quick.
    _unmask_and_commit(svc, run, state)
    return 0.0


def _after_advertise(svc: Services, state: SecureRound, now: datetime, past: bool) -> float:
    count = len(state.advertised)
    enabled = svc.store.count_enabled_sites()
    if count < enabled and not past:
        return _sleep_until(state.deadline, now)
    if count < state.needed:
        if past and state.config.late_policy == "reopen":
            _abandon(svc, state, f"deadline passed with {count} of {state.needed} sites' keys", now)
            return 0.0
        return 1.0  # accept_until_quorum: keep collecting keys
    try:
        params = round_params(
            state.run_id, state.number, state.config.secure_aggregation, state.config.embed_dim, count
        )
        state.directory = Directory(params, list(state.advertised.values()))
    except (SecAggError, ValueError) as exc:
        _abandon(svc, state, f"cannot set up the secure round: {exc}", now)
        return 0.0
    _enter(svc, state, Phase.SHARE_KEYS, now, sites=count, threshold=params.threshold, bits=params.bits)
    return 0.0


def _after_share_keys(svc: Services, state: SecureRound, now: datetime, past: bool) -> float:
    directory = state.directory
    assert directory is not None
    if len(state.shares_from) < len(directory.keys) and not past:
        return _sleep_until(state.deadline, now)
    shared = set(state.shares_from)
    if len(shared) < state.needed:
        _abandon(svc, state, f"only {len(shared)} sites shared keys; {state.needed} are needed", now)
        return 0.0
    inbox: dict[str, list[SealedShares]] = {site: [] for site in shared}
    for sender in sorted(shared):
        for item in state.shares_from[sender]:
            if item.receiver in shared:  # a site that shared no keys will send no masked input
                inbox[item.receiver].append(item)
    state.inbox = {site: tuple(items) for site, items in inbox.items()}
    _enter(svc, state, Phase.MASKED_INPUT, now, sites=len(shared))
    return 0.0


def _after_masked_input(svc: Services, state: SecureRound, now: datetime, past: bool) -> float:
    if len(state.masked) < len(state.inbox) and not past:
        return _sleep_until(state.deadline, now)
    if len(state.masked) < state.needed:
        _abandon(
            svc,
            state,
            f"only {len(state.masked)} masked inputs; the threshold is {state.params.threshold} and "
            f"{state.needed} are needed: nothing was unmasked",
            now,
        )
        return 0.0
    state.survivors = tuple(sorted(state.masked))
    state.dropped = tuple(sorted(set(state.inbox) - state.masked))
    _enter(svc, state, Phase.UNMASK, now, survivors=len(state.survivors), dropped=len(state.dropped))
    return 0.0


def _unmask_and_commit(svc: Services, run: RunRecord, state: SecureRound) -> None:
    store, config = svc.store, state.config
    now = svc.clock()
    params = state.params
    if len(state.revealed) < params.threshold:
        _abandon(
            svc,
            state,
            f"only {len(state.revealed)} sites answered the unmask request; the threshold is {params.threshold}: "
            "nothing was unmasked",
            now,
        )
        return
    started, started_cpu = time.perf_counter(), time.thread_time()
    layout = encoding.round_layout(state.run_id, state.number, config.embed_dim, config.secure_aggregation.row_fraction)
    assert state.directory is not None
    fixed = config.secure_aggregation.fixed_point(len(state.directory.keys))
    try:
        stored = {item.site: item.data for item in store.masked_inputs(state.round_id)}
        if set(stored) != set(state.survivors):
            raise SecAggError("the stored masked inputs differ from the survivors the sites were told about")
        masked = {site: packing.unpack(data, params.bits, params.length) for site, data in stored.items()}
        shared = {site: {item.sender for item in state.inbox[site]} for site in state.survivors}
        total = unmask_sum(state.directory, shared, masked, state.revealed)
        decoded = encoding.decode_sum(total, layout, config.secure_aggregation, fixed)
        parent = _parent_fam(svc, state.input_version, config.embed_dim)
        new_state = encoding.apply_mean(parent, decoded, layout)
    except (SecAggError, ValueError) as exc:
        _abandon(svc, state, f"unmasking failed: {exc}; nothing was revealed", now)
        return
    data = encoding.fam_arrays_to_bytes(new_state)
    unmasked = time.perf_counter()
    if not store.begin_aggregation(state.round_id):
        svc.secure.forget(state.round_id)
        return
    final = store.count_closed_rounds(run.id) + 1 >= config.rounds
    try:
        version, following = store.commit_round(
            state.round_id,
            NewVersion(data, hashlib.sha256(data).hexdigest(), state.input_version),
            [],
            {"secure_sites": float(len(state.survivors)), "secure_dropped": float(len(state.dropped))},
            now,
            None if final else now + timedelta(seconds=config.round_timeout_s),
        )
    except FailedPrecondition as exc:  # the run was stopped meanwhile
        event(log, "round not committed", logging.WARNING, run=run.id, round=state.number, reason=exc.message)
        svc.secure.forget(state.round_id)
        return
    svc.secure.forget(state.round_id)
    svc.models.put_bytes(version, data)
    record_round_closed(
        svc.metrics,
        aggregation_s=unmasked - started,
        close_cpu_s=time.thread_time() - started_cpu,
        version=version,
        next_round=None if following is None else following.number,
    )
    event(
        log,
        "secure round closed",
        run=run.id,
        round=state.number,
        version=version,
        parent=state.input_version,
        sites=len(state.survivors),
        dropped=len(state.dropped),
        weight_sum=decoded.weight_sum,
        unmask_ms=round((unmasked - started) * 1000, 2),
        round_s=round(time.perf_counter() - state.started, 3),
        run_completed=final,
    )
    svc.notifier.notify()


def _parent_fam(svc: Services, version: int, dim: int) -> dict[str, np.ndarray]:
    data = svc.models.get_bytes(version) or svc.store.version_data(version)
    if data is None:
        raise ValueError(f"FAM version {version} is missing from the store")
    return encoding.fam_arrays_from_bytes(data, dim)


def _enter(svc: Services, state: SecureRound, phase: Phase, now: datetime, **fields: Any) -> None:
    state.phase = phase
    state.deadline = now + timedelta(seconds=state.config.secure_aggregation.phase_timeout_s)
    event(log, "secure phase", run=state.run_id, round=state.number, phase=phase.value, **fields)
    svc.notifier.notify()


def _abandon(svc: Services, state: SecureRound, reason: str, now: datetime) -> None:
    reopen = now + timedelta(seconds=state.config.round_timeout_s)
    if svc.store.abandon_round(state.round_id, reason, now, reopen):
        svc.metrics.rounds.labels(RoundState.ABANDONED.value).inc()
        svc.metrics.current_round.set(state.number + 1)
        event(
            log,
            "secure round abandoned; reopened",
            logging.WARNING,
            run=state.run_id,
            round=state.number,
            reason=reason,
        )
    svc.secure.forget(state.round_id)
    svc.notifier.notify()


def _sleep_until(deadline: datetime, now: datetime) -> float:
    return max(0.05, min(1.0, (deadline - now).total_seconds()))
