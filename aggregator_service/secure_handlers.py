"""The Federation service's secure-round calls (docs/design.md §4.6) as plain functions over ``Services``.

Each call checks that the run is running, the round is the current OPEN one and in the phase the call
belongs to, and that the caller may act in it; then it records what the site sent in the round's memory
state (keys, sealed shares, revealed shares) or, for a masked input, in the store. The aggregator never sees
a share in the clear: sealed shares are opaque ciphertexts it relays to their receiver.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from aggregator_service.context import Services
from aggregator_service.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from aggregator_service.logs import event
from aggregator_service.secure_rounds import Phase, SecureRound
from aggregator_service.store.base import RoundRecord, RoundState, RunRecord, RunState, SiteRecord
from fedmedclip.federation import messages as m
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.secagg import packing
from fedmedclip.secagg.keys import KEY_BYTES

T = TypeVar("T")

log = logging.getLogger("aggregator_service.secure")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_SEALED_BYTES = 512  # two 68-byte shares, a nonce and a tag fit in 176


def next_task(svc: Services, site: SiteRecord, config: RunConfig, current: RoundRecord) -> m.SiteTask | None:
    """The site's task in the current secure round, or ``None`` (nothing for it to do in this phase)."""
    with svc.secure.lock:
        state = svc.secure.get(current, config)
        name = site.name
        if state.phase == Phase.ADVERTISE and name not in state.advertised:
            return m.SecureAdvertiseTask(state.number, state.input_version, state.deadline)
        directory = state.directory
        sharing = state.phase == Phase.SHARE_KEYS and directory is not None and name in directory.keys
        if sharing and directory is not None and name not in state.shares_from:
            params = directory.params
            return m.SecureShareKeysTask(
                state.number,
                params.threshold,
                params.bits,
                params.degree or 0,
                params.graph_seed,
                tuple(directory.keys.values()),
                state.deadline,
            )
        if state.phase == Phase.MASKED_INPUT and name in state.inbox and name not in state.masked:
            return m.SecureMaskedInputTask(state.number, state.inbox[name], state.deadline)
        if state.phase == Phase.UNMASK and name in state.survivors and name not in state.revealed:
            return m.SecureUnmaskTask(state.number, state.survivors, state.dropped, state.deadline)
        return None


def advertise_keys(svc: Services, site: SiteRecord, request: m.AdvertiseKeysRequest) -> m.SecurePhaseReply:
    keys = request.keys
    if keys.site != site.name:
        raise PermissionDenied(f"site {site.name!r} may only advertise its own keys, not {keys.site!r}'s")
    for what, value in (("channel", keys.channel_public), ("mask", keys.mask_public)):
        if len(value) != KEY_BYTES:
            raise InvalidArgument(f"the {what} public key must have {KEY_BYTES} bytes, got {len(value)}")
        try:
            X25519PublicKey.from_public_bytes(value)
        except ValueError as exc:
            raise InvalidArgument(f"the {what} public key is not an X25519 key: {exc}") from exc
    if keys.channel_public == keys.mask_public:
        raise InvalidArgument("the channel and mask keys must differ")
    with svc.secure.lock:
        state = _state(svc, request.run_id, request.round, Phase.ADVERTISE)
        if _seen_before(state.advertised, site.name, keys, f"advertised different keys for round {state.number}"):
            return m.SecurePhaseReply(True, True, f"round {state.number} already holds these keys")
    event(log, "keys advertised", run=request.run_id, round=request.round, site=site.name)
    svc.notifier.notify()
    return m.SecurePhaseReply(True, False, f"keys accepted for round {request.round}")


def share_keys(svc: Services, site: SiteRecord, request: m.ShareKeysRequest) -> m.SecurePhaseReply:
    with svc.secure.lock:
        state = _state(svc, request.run_id, request.round, Phase.SHARE_KEYS)
        directory = state.directory
        if directory is None or site.name not in directory.keys:
            raise FailedPrecondition(f"site {site.name!r} did not advertise keys for round {state.number}")
        receivers = [item.receiver for item in request.shares]
        for item in request.shares:
            if item.sender != site.name:
                raise PermissionDenied(f"site {site.name!r} may only send its own shares, not {item.sender!r}'s")
            if not 0 < len(item.ciphertext) <= MAX_SEALED_BYTES:
                raise InvalidArgument(f"sealed shares for {item.receiver!r} must have 1 to {MAX_SEALED_BYTES} bytes")
        expected = directory.neighbours[site.name]
        if len(set(receivers)) != len(receivers) or set(receivers) != expected:
            raise InvalidArgument(
                f"sealed shares must go to each of the site's {len(expected)} neighbours exactly once"
            )
        conflict = f"shared different keys for round {state.number}"
        if _seen_before(state.shares_from, site.name, request.shares, conflict):
            return m.SecurePhaseReply(True, True, f"round {state.number} already holds these shares")
    svc.notifier.notify()
    return m.SecurePhaseReply(True, False, f"shares relayed for round {request.round}")


def submit_masked_input(
    svc: Services, site: SiteRecord, header: m.MaskedInputHeader, chunks: Iterable[bytes]
) -> m.SecurePhaseReply:
    """Store a site's masked vector: exactly the packed size of the round's layout, sha256 checked."""
    sha256 = header.sha256.strip().lower()
    if not _SHA256.match(sha256):
        raise InvalidArgument("header sha256 must be 64 lower-case hex digits")
    with svc.secure.lock:
        state = _state(svc, header.run_id, header.round, Phase.MASKED_INPUT, duplicate_ok=True)
        if site.name not in state.inbox:
            raise FailedPrecondition(f"site {site.name!r} did not share keys in round {state.number}")
        params = state.params
        expected = packing.packed_size(params.length, params.bits)
    if header.total_bytes != expected:
        raise InvalidArgument(f"a masked input of round {header.round} has {expected} bytes, not {header.total_bytes}")
    parts, received = [], 0
    for chunk in chunks:
        received += len(chunk)
        if received > expected:
            raise InvalidArgument(f"masked input is longer than the announced {expected} bytes")
        parts.append(chunk)
    data = b"".join(parts)
    if len(data) != expected:
        raise InvalidArgument(f"masked input ended after {len(data)} of the announced {expected} bytes")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InvalidArgument("masked input does not match its sha256")
    try:
        packing.unpack(data, params.bits, params.length)
    except ValueError as exc:
        raise InvalidArgument(f"masked input: {exc}") from exc
    with svc.secure.lock:
        state = _state(svc, header.run_id, header.round, Phase.MASKED_INPUT, duplicate_ok=True)
        if state.phase != Phase.MASKED_INPUT and site.name not in state.masked:
            raise FailedPrecondition(f"round {state.number} no longer accepts masked input")
        duplicate = svc.store.add_masked_input(state.round_id, site.id, data, sha256, svc.clock())
        state.masked.add(site.name)
    svc.metrics.update_bytes.inc(len(data))
    event(log, "masked input stored", run=header.run_id, round=header.round, site=site.name, bytes=len(data))
    svc.notifier.notify()
    return m.SecurePhaseReply(True, duplicate, f"masked input stored for round {header.round}")


def unmask(svc: Services, site: SiteRecord, request: m.UnmaskRequest) -> m.SecurePhaseReply:
    with svc.secure.lock:
        state = _state(svc, request.run_id, request.round, Phase.UNMASK)
        if site.name not in state.survivors:
            raise FailedPrecondition(f"site {site.name!r} sent no masked input in round {state.number}")
        directory = state.directory
        assert directory is not None
        allowed = directory.neighbours[site.name] | {site.name}
        owners = [item.owner for item in request.shares]
        if len(set(owners)) != len(owners) or not set(owners) <= allowed:
            raise InvalidArgument("revealed shares must be of the site's neighbours or itself, at most one each")
        conflict = f"answered the unmask request of round {state.number}"
        if _seen_before(state.revealed, site.name, request.shares, conflict):
            return m.SecurePhaseReply(True, True, f"round {state.number} already holds these shares")
    svc.notifier.notify()
    return m.SecurePhaseReply(True, False, f"shares accepted for round {request.round}")


def _seen_before(held: dict[str, T], site: str, value: T, conflict: str) -> bool:
    """Record ``site``'s ``value`` for this phase; ``True`` for an identical retry (the caller answers it as a
    duplicate), ``AlreadyExists`` for a different one: each site speaks once per phase."""
    previous = held.get(site)
    if previous is None:
        held[site] = value
        return False
    if previous == value:
        return True
    raise AlreadyExists(f"site {site!r} already {conflict}")


def _state(svc: Services, run_id: str, round_number: int, phase: Phase, duplicate_ok: bool = False) -> SecureRound:
    """The round's memory state if it is the active run's current OPEN secure round in ``phase``."""
    if not run_id:
        raise InvalidArgument("run_id is empty; Join first")
    run: RunRecord | None = svc.store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    if run.state != RunState.RUNNING:
        raise FailedPrecondition(f"run {run_id} is {run.state.value.lower()}")
    config = RunConfig.from_dict(run.config)
    if not config.secure_aggregation.enabled:
        raise FailedPrecondition(f"run {run_id} does not use secure aggregation")
    current = svc.store.current_round(run.id)
    if current is None or current.number != round_number or current.state != RoundState.OPEN:
        raise FailedPrecondition(f"round {round_number} is not the open round of run {run_id}")
    state = svc.secure.get(current, config)
    if state.phase != phase and not (duplicate_ok and state.phase in (Phase.UNMASK, Phase.CLOSING)):
        raise FailedPrecondition(f"round {round_number} is in its {state.phase.value} phase, not {phase.value}")
    return state
