"""The Admin service's logic as plain functions: runs, run status, FAM versions, site enrolment.

Every mutation is written to the audit log as the admin's action; refusals are audited by the servicer.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aggregator_service import auth, handlers
from aggregator_service.context import Services
from aggregator_service.errors import FailedPrecondition, NotFound
from aggregator_service.logs import event
from aggregator_service.rounds import weighted_metrics
from aggregator_service.store.base import (
    NewVersion,
    RoundRecord,
    RunRecord,
    RunStart,
    RunState,
    SiteRecord,
    UpdateRecord,
    VersionRecord,
)
from fedmedclip.federation.fam_bytes import SAFETENSORS, fam_from_bytes, fam_to_bytes, initial_fam, sha256_hex
from fedmedclip.federation.run_config import RunConfig

log = logging.getLogger("aggregator_service.admin")


@dataclass(frozen=True)
class Participation:
    site: str
    state: str  # "ACCEPTED", "REJECTED" or "MISSING"
    num_samples: int = 0
    payload_bytes: int = 0
    received_at: datetime | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class RoundStatus:
    round: RoundRecord
    participants: list[Participation]
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RunStatus:
    run: RunRecord
    rounds: list[RoundStatus]


# --- runs --------------------------------------------------------------------------------------------


def start_run(svc: Services, config: RunConfig, name: str, initial_version: int = 0) -> RunStart:
    now = svc.clock()
    if initial_version:
        data = svc.store.version_data(initial_version)
        if data is None:
            raise NotFound(f"no FAM version {initial_version} to start from")
        try:
            fam_from_bytes(data, config.embed_dim)
        except ValueError as exc:
            message = f"version {initial_version} does not fit embed_dim {config.embed_dim}: {exc}"
            raise FailedPrecondition(message) from exc
        parent: int | None = initial_version
    else:
        data = fam_to_bytes(initial_fam(config.embed_dim, config.fam_seed))
        parent = None
    run_id = secrets.token_hex(8)
    started = svc.store.create_run(
        run_id,
        name[:200],
        config.to_dict(),
        NewVersion(data, sha256_hex(data), parent, SAFETENSORS),
        now,
        now + timedelta(seconds=config.round_timeout_s),
    )
    svc.models.put_bytes(started.initial_version, data)
    handlers.audit_ok(svc, "StartRun", f"rounds={config.rounds} min_sites={config.min_sites}", run_id=run_id)
    event(log, "run started", run=run_id, round=1, version=started.initial_version, rounds=config.rounds)
    svc.metrics.current_round.set(1)
    svc.metrics.latest_version.set(started.initial_version)
    svc.notifier.notify()
    return started


def stop_run(svc: Services, run_id: str, reason: str) -> RunRecord:
    handlers.run_or_not_found(svc, run_id)
    record = svc.store.finish_run(run_id, RunState.STOPPED, reason or "stopped by admin", svc.clock())
    current = svc.store.current_round(run_id)
    if current is not None:
        svc.pending.forget_round(current.id)  # its round was abandoned: the decoded updates are dead weight
    handlers.audit_ok(svc, "StopRun", reason or "stopped by admin", run_id=run_id)
    event(log, "run stopped", run=run_id, reason=reason)
    svc.notifier.notify()
    return record


def list_runs(svc: Services) -> list[RunRecord]:
    return svc.store.list_runs()


def run_status(svc: Services, run_id: str) -> RunStatus:
    run = svc.store.latest_run() if not run_id else svc.store.get_run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}" if run_id else "no run has been started")
    # The run row and its rounds are separate reads; a round closing between them would show round N closed
    # while the run still says "current round N". Re-read the run and retry until both reads agree.
    for _ in range(_STATUS_ATTEMPTS):
        rounds = _round_statuses(svc, run)
        again = svc.store.get_run(run.id)
        if again is None or again == run:
            break
        run = again
    return RunStatus(run, rounds)


_STATUS_ATTEMPTS = 5


def _round_statuses(svc: Services, run: RunRecord) -> list[RoundStatus]:
    sites = svc.store.list_sites()
    refusals = svc.store.list_audit(limit=1000, outcome="refused", run_id=run.id)
    rounds: list[RoundStatus] = []
    for record in svc.store.list_rounds(run.id):
        updates = {u.site: u for u in svc.store.list_updates(record.id)}
        rejected = {
            a.site: a.detail
            for a in reversed(refusals)
            if a.round == record.number and a.site and a.action == "SubmitUpdate"
        }
        participants = [
            _participation(s.name, updates.get(s.name), rejected.get(s.name))
            for s in sites
            if s.enabled or s.name in updates
        ]
        metrics = dict(record.metrics) or weighted_metrics(list(updates.values()))
        rounds.append(RoundStatus(record, participants, metrics))
    return rounds


def _participation(site: str, update: UpdateRecord | None, rejection: str | None) -> Participation:
    if update is not None:
        return Participation(
            site, "ACCEPTED", update.num_samples, update.payload_bytes, update.received_at, dict(update.metrics)
        )
    if rejection is not None:
        return Participation(site, "REJECTED", message=rejection)
    return Participation(site, "MISSING")


def list_versions(svc: Services, run_id: str) -> list[VersionRecord]:
    handlers.run_or_not_found(svc, run_id)
    return svc.store.list_versions(run_id)


def export_version(svc: Services, version: int) -> handlers.ModelBlob:
    blob = handlers.get_model(svc, version)
    handlers.audit_ok(svc, "ExportVersion", f"version {version}")
    return blob


def enrol_site(svc: Services, name: str, description: str) -> tuple[SiteRecord, str]:
    auth.check_site_name(name)
    token = auth.new_site_token()
    site = svc.store.add_site(name, description[:1000], auth.hash_token(token), svc.clock())
    handlers.audit_ok(svc, "EnrolSite", description[:200], site=name)
    event(log, "site enrolled", site=name)
    svc.notifier.notify()
    return site, token


def list_sites(svc: Services) -> list[SiteRecord]:
    return svc.store.list_sites()


def revoke_site(svc: Services, name: str, reason: str) -> SiteRecord:
    site, discarded = svc.store.revoke_site(name, svc.clock())
    svc.pending.discard(discarded)
    handlers.audit_ok(svc, "RevokeSite", f"{reason} (discarded {len(discarded)} open-round updates)", site=name)
    event(log, "site revoked", site=name, discarded_updates=len(discarded))
    svc.notifier.notify()  # one site fewer may complete the round
    return site
