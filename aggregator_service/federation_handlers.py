"""The Federation service's logic (what sites call) as plain functions: no gRPC, no protobuf, no SQL.
They take and return ``fedmedclip.federation.messages`` values. The Admin service's logic is in
``admin_handlers``, credentials in ``auth``, the audit log in ``audit``, the round life in ``rounds``.

The transport turns a call into one of these functions' arguments and maps a raised ``ServiceError`` to a
status code. Each function checks what it can before touching the store and leaves the authoritative
state checks to the store's transaction (a round may close between the two).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from aggregator_service import secure_handlers
from aggregator_service.context import Services
from aggregator_service.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from aggregator_service.logs import event
from aggregator_service.store.base import (
    NewUpdate,
    RoundRecord,
    RoundState,
    RunRecord,
    RunState,
    SiteRecord,
    UpdateRecord,
)
from fedmedclip import PROTOCOL_VERSION
from fedmedclip.federation.aggregate import SiteUpdate, validate_update
from fedmedclip.federation.codec import decode_update, max_payload_bytes
from fedmedclip.federation.errors import CorruptUpdate, UpdateRejected
from fedmedclip.federation.fam_bytes import SAFETENSORS, sha256_hex
from fedmedclip.federation.messages import (
    DoneTask,
    HeartbeatReply,
    HeartbeatRequest,
    JoinReply,
    JoinRequest,
    ModelHeader,
    PollTaskRequest,
    SiteTask,
    SubmitReply,
    TrainTask,
    UpdateHeader,
    WaitTask,
)
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.model.fam_layout import fam_shapes

log = logging.getLogger("aggregator_service")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_METRIC_NAME = re.compile(r"[A-Za-z0-9_.:/-]+")
MAX_METRIC_MAGNITUDE = 1e12  # a loss, an accuracy or a count: anything larger is a bug or an attack


@dataclass(frozen=True)
class ModelBlob:
    """A FAM version's bytes with what its download header announces."""

    version: int
    sha256: str
    data: bytes
    format: str = SAFETENSORS

    @property
    def header(self) -> ModelHeader:
        return ModelHeader(self.version, self.sha256, len(self.data), self.format)


# --- federation ---------------------------------------------------------------------------------------


def join(svc: Services, site: SiteRecord, request: JoinRequest) -> JoinReply:
    protocol, software_version = request.protocol, request.software_version
    major, minor = PROTOCOL_VERSION
    if protocol[0] != major:
        raise FailedPrecondition(
            f"protocol version mismatch: site speaks {protocol[0]}.{protocol[1]}, aggregator speaks "
            f"{major}.{minor}; the major versions must be equal"
        )
    if protocol[1] != minor:
        event(log, "protocol minor differs", site=site.name, site_protocol=f"{protocol[0]}.{protocol[1]}")
    _check_site_text(svc, {"software_version": software_version, **asdict(request.site_info)})
    svc.store.touch_site(site.id, svc.clock(), software_version=software_version, site_info=asdict(request.site_info))
    run = svc.store.active_run()
    event(log, "site joined", site=site.name, run=None if run is None else run.id, software=software_version)
    if run is None:
        return JoinReply(site.name, "", None, PROTOCOL_VERSION)
    return JoinReply(site.name, run.id, RunConfig.from_dict(run.config), PROTOCOL_VERSION)


def poll_task(svc: Services, site: SiteRecord, request: PollTaskRequest) -> SiteTask:
    """The site's next task; with nothing to do, hold the call until something changes or time runs out."""
    _touch(svc, site)
    run_id = request.run_id
    hold = min(max(float(request.wait_seconds), 0.0), svc.limits.poll_wait_cap_s)
    give_up = time.monotonic() + hold
    holding = False
    try:
        while True:
            generation = svc.notifier.generation
            task = _next_task(svc, site, run_id)
            if task is not None:
                return task
            remaining = give_up - time.monotonic()
            if remaining <= 0 or svc.notifier.closed:
                return WaitTask(svc.limits.poll_retry_s)
            # Each held poll occupies a worker thread: beyond the limit, answer "wait" instead.
            if not holding and not svc.long_polls.try_take():
                return WaitTask(svc.limits.poll_retry_s)
            holding = True
            svc.notifier.wait(generation, remaining)
    finally:
        if holding:
            svc.long_polls.give_back()


def _next_task(svc: Services, site: SiteRecord, run_id: str) -> SiteTask | None:
    run = run_or_not_found(svc, run_id)
    if run.state != RunState.RUNNING:
        return DoneTask(run.latest_version, run.message or f"run {run.state.value.lower()}")
    current = svc.store.current_round(run.id)
    if current is None or current.state != RoundState.OPEN:
        return None
    config = RunConfig.from_dict(run.config)
    if config.secure_aggregation.enabled:
        return secure_handlers.next_task(svc, site, config, current)
    if svc.store.site_update(current.id, site.id) is not None:
        return None  # already submitted: wait for the next round
    return TrainTask(current.number, current.input_version, current.deadline)


def get_model(svc: Services, version: int) -> ModelBlob:
    if version <= 0:
        raise InvalidArgument("version must be >= 1")
    record = svc.store.get_version(version)
    if record is None:
        raise NotFound(f"no FAM version {version}")
    data = svc.models.get_bytes(version)
    if data is None:
        data = svc.store.version_data(version)
        if data is None:
            raise NotFound(f"no FAM version {version}")
        svc.models.put_bytes(version, data)
    return ModelBlob(version, record.sha256, data, record.format)


def check_update_header(
    svc: Services, site: SiteRecord, header: UpdateHeader
) -> tuple[RunConfig, RoundRecord, UpdateRecord | None]:
    """Everything about a submission that can be refused before its payload is read.

    Returns the run's config, the target round and the update already in the site's slot, if any.
    """
    if header.site and header.site != site.name:
        raise PermissionDenied(f"site {site.name!r} may only submit into its own slot, not into {header.site!r}'s")
    if not _SHA256.match(header.sha256):
        raise InvalidArgument("header sha256 must be 64 lower-case hex digits")
    if header.total_bytes < 1:
        raise InvalidArgument("header total_bytes must be >= 1")
    if header.total_bytes > svc.limits.max_update_bytes:
        raise InvalidArgument(
            f"update of {header.total_bytes} bytes exceeds the limit of {svc.limits.max_update_bytes} bytes"
        )
    if header.num_samples < 1:
        raise InvalidArgument(f"num_samples must be >= 1, got {header.num_samples}")
    _check_metrics(svc, header.metrics)
    run = run_or_not_found(svc, header.run_id)
    config = RunConfig.from_dict(run.config)
    # The run's FAM shape bounds a valid payload: refuse a larger one before reading a byte of it.
    shape_limit = max_payload_bytes(fam_shapes(config.embed_dim))
    if header.total_bytes > shape_limit:
        raise InvalidArgument(
            f"update of {header.total_bytes} bytes exceeds the {shape_limit} bytes any update of this run's "
            f"FAM (embed_dim {config.embed_dim}) can take"
        )
    target = svc.store.get_round(run.id, header.round)
    if target is None:
        raise FailedPrecondition(f"run {run.id} has no round {header.round} (yet)")
    existing = svc.store.site_update(target.id, site.id)
    if existing is not None and existing.sha256 == header.sha256:
        return config, target, existing  # an idempotent resubmission: acknowledged once the bytes are read
    if run.state != RunState.RUNNING:
        raise FailedPrecondition(f"run {run.id} is {run.state.value.lower()}: it accepts no updates")
    if config.secure_aggregation.enabled:
        raise FailedPrecondition(f"run {run.id} uses secure aggregation: updates go through the secure phases")
    if target.state != RoundState.OPEN:
        raise FailedPrecondition(f"round {target.number} is {target.state.value.lower()}: it accepts no updates")
    if header.base_version != target.input_version:
        raise FailedPrecondition(
            f"stale base version {header.base_version}: round {target.number} trains from version "
            f"{target.input_version}"
        )
    return config, target, existing


def read_payload(chunks: Iterable[bytes], header: UpdateHeader) -> bytes:
    """Join the data chunks, refusing as soon as they exceed what the header announced."""
    parts: list[bytes] = []
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > header.total_bytes:
            raise InvalidArgument(f"upload is longer than the announced {header.total_bytes} bytes")
        parts.append(chunk)
    if received != header.total_bytes:
        raise InvalidArgument(f"upload ended after {received} of the announced {header.total_bytes} bytes")
    return b"".join(parts)


def decode_and_validate(
    svc: Services, config: RunConfig, site: str, header: UpdateHeader, payload: bytes
) -> SiteUpdate:
    """Decode the payload and check it against the run: codec, names, shapes, finite values, norm bound."""
    started, started_cpu = time.perf_counter(), time.thread_time()
    try:
        update = decode_update(payload, header.sha256, shapes=fam_shapes(config.embed_dim))
    except CorruptUpdate as exc:
        raise InvalidArgument(f"corrupt update: {exc}") from exc
    if update.codec != config.codec:
        raise InvalidArgument(f"update encoded with codec {update.codec}, but the run uses {config.codec}")
    if header.codec is not None and header.codec != update.codec:
        raise InvalidArgument(f"header announces codec {header.codec}, the payload records {update.codec}")
    try:
        validate_update(update, fam_shapes(config.embed_dim), config.norm_bound, site, header.num_samples)
    except UpdateRejected as exc:
        raise InvalidArgument(str(exc)) from exc
    # Wall time includes waiting for the CPU when many uploads arrive at once; thread CPU time is the cost.
    svc.metrics.validation_seconds.observe(time.perf_counter() - started)
    svc.metrics.validation_cpu_seconds.observe(time.thread_time() - started_cpu)
    return SiteUpdate(site, header.num_samples, update)


def submit_update(svc: Services, site: SiteRecord, header: UpdateHeader, chunks: Iterable[bytes]) -> SubmitReply:
    """Validate and store one update; nothing is stored unless every check passed."""
    header = replace(header, sha256=header.sha256.strip().lower())
    config, target, existing = check_update_header(svc, site, header)
    payload = read_payload(chunks, header)
    if existing is not None and existing.sha256 == header.sha256 and sha256_hex(payload) == header.sha256:
        svc.metrics.updates.labels("duplicate").inc()
        return SubmitReply(True, True, f"round {target.number} already holds this update")
    decoded = decode_and_validate(svc, config, site.name, header, payload)
    record, duplicate = svc.store.add_update(
        NewUpdate(
            round_id=target.id,
            site_id=site.id,
            base_version=header.base_version,
            num_samples=header.num_samples,
            metrics=dict(header.metrics),
            payload=payload,
            sha256=header.sha256,
            received_at=svc.clock(),
            privacy=None if header.privacy is None else header.privacy.to_dict(),
        )
    )
    if duplicate:
        svc.metrics.updates.labels("duplicate").inc()
        return SubmitReply(True, True, f"round {target.number} already holds this update")
    svc.pending.put(target.id, record.id, decoded)
    svc.metrics.updates.labels("accepted").inc()
    svc.metrics.update_bytes.inc(len(payload))
    event(
        log,
        "update accepted",
        run=target.run_id,
        round=target.number,
        site=site.name,
        version=target.input_version,
        bytes=len(payload),
        samples=header.num_samples,
    )
    svc.notifier.notify()
    return SubmitReply(True, False, f"accepted for round {target.number}")


def heartbeat(svc: Services, site: SiteRecord, request: HeartbeatRequest) -> HeartbeatReply:
    run_id, round_number = request.run_id, request.round
    now = svc.clock()
    _touch(svc, site)  # last_seen at most every touch_interval_s: a heartbeat is not a database write
    if request.activity == "budget_spent" and request.run_id:
        record_budget_spent(svc, site, request.run_id, now)
    abandon = False
    if run_id and round_number > 0:
        run = svc.store.get_run(run_id)
        current = None if run is None else svc.store.current_round(run.id)
        abandon = (
            run is None
            or run.state != RunState.RUNNING
            or current is None
            or current.number != round_number
            or current.state != RoundState.OPEN
            or (RunConfig.from_dict(run.config).late_policy == "reopen" and now >= current.deadline)
        )
    return HeartbeatReply(now, abandon)


def record_budget_spent(svc: Services, site: SiteRecord, run_id: str, now: datetime) -> None:
    """The site says its privacy budget allows no further round: remember it (once), never as a fault."""
    run = svc.store.get_run(run_id)
    if run is None:
        return  # a heartbeat about a run this aggregator does not know: nothing to record
    if svc.store.mark_budget_spent(run.id, site.id, now):
        event(log, "site privacy budget spent; it no longer contributes", run=run.id, site=site.name)
        svc.notifier.notify()  # the round may now have every update it will get


# --- helpers ------------------------------------------------------------------------------------------


def run_or_not_found(svc: Services, run_id: str) -> RunRecord:
    if not run_id:
        raise InvalidArgument("run_id is empty; Join first")
    run = svc.store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    return run


def _check_site_text(svc: Services, fields: Mapping[str, object]) -> None:
    """What a site says about itself is stored and shown to operators: bounded, printable text."""
    limit = svc.limits.max_site_info_chars
    for name, value in fields.items():
        text = str(value)
        if len(text) > limit:
            raise InvalidArgument(f"site_info {name} has {len(text)} characters; at most {limit} are accepted")
        if not text.isprintable():
            raise InvalidArgument(f"site_info {name} contains control characters")


def _check_metrics(svc: Services, metrics: Mapping[str, float]) -> None:
    if len(metrics) > svc.limits.max_metrics:
        raise InvalidArgument(f"{len(metrics)} metrics; at most {svc.limits.max_metrics} are accepted")
    for key, value in metrics.items():
        if not _METRIC_NAME.fullmatch(key) or len(key) > svc.limits.max_metric_name:
            raise InvalidArgument(
                f"metric name {key[:80]!r} must have 1 to {svc.limits.max_metric_name} characters of "
                "letters, digits and _ . : / -"
            )
        if not math.isfinite(value) or abs(value) > MAX_METRIC_MAGNITUDE:
            raise InvalidArgument(f"metric {key!r} must be finite and at most {MAX_METRIC_MAGNITUDE:g} in size")


def _touch(svc: Services, site: SiteRecord) -> None:
    if svc.should_touch(site.id):
        svc.store.touch_site(site.id, svc.clock())
