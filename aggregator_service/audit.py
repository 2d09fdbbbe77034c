"""The audit log's writers: an admin's successful action, and any refused request (with its status code).

Refusals are audited by the transport, in one place, so no handler can forget one; the Admin handlers
record their own successes.
"""

from __future__ import annotations

import logging

from aggregator_service.context import Services
from aggregator_service.errors import ServiceError
from aggregator_service.logs import event
from aggregator_service.store.base import AuditEntry

log = logging.getLogger("aggregator_service")

ADMIN = "admin"  # the actor name of every Admin call


def record_refusal(
    svc: Services,
    action: str,
    actor: str,
    error: ServiceError,
    run_id: str | None = None,
    round_number: int | None = None,
    site: str | None = None,
) -> None:
    """Put a refused request in the audit log (and the service log)."""
    event(
        log,
        "request refused",
        logging.WARNING,
        action=action,
        actor=actor,
        code=error.code,
        run=run_id,
        round=round_number,
        site=site,
        detail=error.message,
    )
    try:
        svc.store.add_audit(
            AuditEntry(
                at=svc.clock(),
                actor=actor,
                action=action,
                outcome="refused",
                code=error.code,
                detail=error.message[:2000],
                run_id=run_id,
                round=round_number,
                site=site,
            )
        )
    except Exception:  # the refusal stands even if it cannot be recorded; say so loudly
        log.exception("could not write a refusal to the audit log")


def audit_ok(svc: Services, action: str, detail: str, run_id: str | None = None, site: str | None = None) -> None:
    svc.store.add_audit(
        AuditEntry(at=svc.clock(), actor=ADMIN, action=action, outcome="ok", detail=detail, run_id=run_id, site=site)
    )
