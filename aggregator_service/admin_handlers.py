"""The Admin service's logic as plain functions: runs, run status, FAM versions, site enrolment and tokens.

They take plain values and return ``fedmedclip.federation.messages`` records (no gRPC, no protobuf, no SQL).
Every mutation is written to the audit log as the admin's action; refusals are audited by the transport.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from aggregator_service import auth
from aggregator_service.audit import audit_ok, flush_refusals
from aggregator_service.context import Services
from aggregator_service.errors import FailedPrecondition, InvalidArgument, NotFound
from aggregator_service.federation_handlers import ModelBlob, get_model, run_or_not_found
from aggregator_service.logs import event
from aggregator_service.rounds import weighted_metrics
from aggregator_service.store.base import (
    NewVersion,
    RoundRecord,
    RunRecord,
    RunState,
    SiteRecord,
    UpdateRecord,
    VersionRecord,
)
from fedmedclip.federation import messages as m
from fedmedclip.federation.fam_bytes import SAFETENSORS, fam_from_bytes, fam_to_bytes, initial_fam, sha256_hex
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.privacy.ledger import PrivacyLedger

log = logging.getLogger("aggregator_service.admin")


# --- runs --------------------------------------------------------------------------------------------


def start_run(svc: Services, request: m.StartRunRequest) -> m.StartRunReply:
    config, name, initial_version = request.config, request.name, request.initial_version
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
    audit_ok(svc, "StartRun", f"rounds={config.rounds} min_sites={config.min_sites}", run_id=run_id)
    event(log, "run started", run=run_id, round=1, version=started.initial_version, rounds=config.rounds)
    svc.metrics.current_round.set(1)
    svc.metrics.latest_version.set(started.initial_version)
    svc.notifier.notify()
    return m.StartRunReply(run_id, started.initial_version)


def stop_run(svc: Services, run_id: str, reason: str) -> m.RunState:
    run_or_not_found(svc, run_id)
    record = svc.store.finish_run(run_id, RunState.STOPPED, reason or "stopped by admin", svc.clock())
    current = svc.store.current_round(run_id)
    if current is not None:
        svc.pending.forget_round(current.id)  # its round was abandoned: the decoded updates are dead weight
    audit_ok(svc, "StopRun", reason or "stopped by admin", run_id=run_id)
    event(log, "run stopped", run=run_id, reason=reason)
    svc.notifier.notify()
    return _run_state(record)


def list_runs(svc: Services) -> list[m.RunStatus]:
    """Every run, newest first, without its rounds (``run_status`` has those)."""
    return [_run_status(run, ()) for run in svc.store.list_runs()]


def run_status(svc: Services, run_id: str) -> m.RunStatus:
    """A run (default: the most recent) with its rounds and each enabled site's participation."""
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
    return _run_status(run, tuple(rounds))


_STATUS_ATTEMPTS = 5


def _round_statuses(svc: Services, run: RunRecord) -> list[m.RoundStatus]:
    sites = svc.store.list_sites()
    flush_refusals(svc)  # counted in memory until written: write them first so the status is current
    refusals = svc.store.list_audit(limit=1000, outcome="refused", run_id=run.id)
    spent = svc.store.budget_spent_sites(run.id)
    rounds: list[m.RoundStatus] = []
    for record in svc.store.list_rounds(run.id):
        updates = {u.site: u for u in svc.store.list_updates(record.id)}
        rejected = {
            a.site: a.detail
            for a in reversed(refusals)
            if a.round == record.number and a.site and a.action == "SubmitUpdate"
        }
        participants = tuple(
            _participation(s.name, updates.get(s.name), rejected.get(s.name), s.name in spent)
            for s in sites
            if s.enabled or s.name in updates
        )
        metrics = dict(record.metrics) or weighted_metrics(list(updates.values()))
        rounds.append(_round_status(record, participants, metrics))
    return rounds


def _participation(
    site: str, update: UpdateRecord | None, rejection: str | None, budget_spent: bool = False
) -> m.SiteParticipation:
    if update is not None:
        return m.SiteParticipation(
            site,
            m.ParticipationState.ACCEPTED,
            update.num_samples,
            update.payload_bytes,
            update.received_at,
            dict(update.metrics),
            privacy=None if update.privacy is None else PrivacyLedger.from_dict(update.privacy),
        )
    if rejection is not None:
        return m.SiteParticipation(site, m.ParticipationState.REJECTED, message=rejection)
    if budget_spent:  # the site's own decision under its privacy budget: not a fault
        return m.SiteParticipation(site, m.ParticipationState.BUDGET_SPENT, message="privacy budget spent")
    return m.SiteParticipation(site, m.ParticipationState.MISSING)


def list_versions(svc: Services, request: m.ListVersionsRequest) -> m.ListVersionsReply:
    """One page of a run's versions, oldest first; the token is the last version number of the page."""
    run_or_not_found(svc, request.run_id)
    after = _page_token_int(request.page_token)
    size = _page_size(request.page_size, VERSIONS_PAGE)
    records = [r for r in svc.store.list_versions(request.run_id) if r.version > after]
    page = [_fam_version(record) for record in records[:size]]
    more = len(records) > size
    return m.ListVersionsReply(tuple(page), str(page[-1].version) if more else "")


def export_version(svc: Services, version: int) -> ModelBlob:
    blob = get_model(svc, version)
    audit_ok(svc, "ExportVersion", f"version {version}")
    return blob


def enrol_site(svc: Services, name: str, description: str, max_samples: int | None = None) -> m.EnrolSiteReply:
    auth.check_site_name(name)
    token = auth.new_site_token()
    site = svc.store.add_site(name, description[:1000], auth.hash_token(token), svc.clock(), max_samples)
    cap = "" if max_samples is None else f" (max_samples {max_samples})"
    audit_ok(svc, "EnrolSite", description[:200] + cap, site=name)
    event(log, "site enrolled", site=name)
    svc.notifier.notify()
    return m.EnrolSiteReply(_site(site), token)


def list_sites(svc: Services, request: m.ListSitesRequest) -> m.ListSitesReply:
    """One page of the sites, by name; the token is the last name of the page."""
    size = _page_size(request.page_size, SITES_PAGE)
    records = [s for s in svc.store.list_sites() if s.name > request.page_token]
    page = [_site(site) for site in records[:size]]
    return m.ListSitesReply(tuple(page), page[-1].name if len(records) > size else "")


# (default, largest) page sizes: a page must fit a gRPC message (4 MiB) with every free-text field at its
# bound (a site ~1 KiB; a version carries one contribution row per site, so far fewer per page).
SITES_PAGE = (200, 1000)
VERSIONS_PAGE = (20, 100)


def _page_size(requested: int, sizes: tuple[int, int]) -> int:
    default, largest = sizes
    return default if requested <= 0 else min(requested, largest)


def _page_token_int(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 19:
        raise InvalidArgument(f"page_token {token[:40]!r} is not one this server issued")
    return int(token)


def revoke_site(svc: Services, name: str, reason: str) -> m.Site:
    site, discarded = svc.store.revoke_site(name, svc.clock())
    svc.pending.discard(discarded)
    audit_ok(svc, "RevokeSite", f"{reason} (discarded {len(discarded)} open-round updates)", site=name)
    event(log, "site revoked", site=name, discarded_updates=len(discarded))
    svc.notifier.notify()  # one site fewer may complete the round
    return _site(site)


MAX_TOKEN_GRACE_S = 90 * 86_400.0  # a replaced token that outlives a quarter is no longer "rotated"


def rotate_site_token(svc: Services, name: str, grace_s: float | None) -> m.RotateSiteTokenReply:
    """Issue a new token for ``name``; the replaced one keeps working for ``grace_s`` (default: settings).

    The grace period lets a site switch to the new token without missing a round; only one replaced token
    is kept, so rotating again inside a grace period ends the older token at once.
    """
    grace = svc.limits.site_token_grace_s if grace_s is None else grace_s
    if not 0 <= grace <= MAX_TOKEN_GRACE_S:
        raise InvalidArgument(f"grace period must be between 0 and {MAX_TOKEN_GRACE_S:.0f} seconds, got {grace}")
    token = auth.new_site_token()
    now = svc.clock()
    site = svc.store.rotate_site_token(name, auth.hash_token(token), now + timedelta(seconds=grace), now)
    audit_ok(svc, "RotateSiteToken", f"new token issued; the previous one works for {grace:.0f} s more", site=name)
    event(log, "site token rotated", site=name, grace_s=grace)
    return m.RotateSiteTokenReply(_site(site), token, site.previous_token_expires_at)


# --- store records -> protocol records ------------------------------------------------------------------


def _run_state(run: RunRecord) -> m.RunState:
    return m.RunState[run.state.name]


def _run_status(run: RunRecord, rounds: tuple[m.RoundStatus, ...]) -> m.RunStatus:
    return m.RunStatus(
        run_id=run.id,
        name=run.name,
        state=_run_state(run),
        config=RunConfig.from_dict(run.config),
        current_round=run.current_round,
        latest_version=run.latest_version,
        created_at=run.created_at,
        finished_at=run.finished_at,
        message=run.message,
        rounds=rounds,
    )


def _round_status(
    record: RoundRecord, participants: tuple[m.SiteParticipation, ...], metrics: dict[str, float]
) -> m.RoundStatus:
    return m.RoundStatus(
        round=record.number,
        state=m.RoundState[record.state.name],
        opened_at=record.opened_at,
        deadline=record.deadline,
        closed_at=record.closed_at,
        input_version=record.input_version,
        output_version=record.output_version or 0,
        participants=participants,
        metrics=metrics,
        message=record.message,
    )


def _fam_version(record: VersionRecord) -> m.FamVersion:
    return m.FamVersion(
        version=record.version,
        run_id=record.run_id,
        round=record.round,
        parent_version=record.parent_version or 0,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        created_at=record.created_at,
        contributions=tuple(
            m.VersionContribution(c.site, c.num_samples, c.payload_bytes) for c in record.contributions
        ),
        format=m.MODEL_FORMAT_SAFETENSORS,
    )


def _site(site: SiteRecord) -> m.Site:
    info = site.site_info
    return m.Site(
        name=site.name,
        description=site.description,
        enabled=site.enabled,
        enrolled_at=site.enrolled_at,
        last_seen=site.last_seen,
        software_version=site.software_version,
        site_info=m.SiteInfo(info.get("platform", ""), info.get("torch_version", ""), info.get("device", "")),
    )
