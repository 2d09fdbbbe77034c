"""The store interface the handlers program against, and the plain records it returns.

Every method is one transaction. The methods that move a round or a run between states check the state
they expect inside that transaction (and lock the row where the database can), so two callers racing on
the same round cannot both win: the loser gets ``FailedPrecondition`` or ``False`` and nothing changes.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class RunState(enum.StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class RoundState(enum.StrEnum):
    OPEN = "OPEN"
    AGGREGATING = "AGGREGATING"
    CLOSED = "CLOSED"
    ABANDONED = "ABANDONED"


@dataclass(frozen=True)
class SiteRecord:
    id: int
    name: str
    description: str
    enabled: bool
    enrolled_at: datetime
    revoked_at: datetime | None = None
    last_seen: datetime | None = None
    software_version: str = ""
    site_info: Mapping[str, str] = field(default_factory=dict)
    previous_token_expires_at: datetime | None = None  # set by a rotation: the old token's end of grace
    max_samples: int | None = None  # the operator's cap on the site's aggregation weight


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    state: RunState
    config: Mapping[str, Any]  # RunConfig.to_dict()
    created_at: datetime
    finished_at: datetime | None
    message: str
    latest_version: int
    current_round: int


@dataclass(frozen=True)
class RoundRecord:
    id: int
    run_id: str
    number: int
    state: RoundState
    opened_at: datetime
    deadline: datetime
    closed_at: datetime | None
    input_version: int
    output_version: int | None
    metrics: Mapping[str, float]
    message: str


@dataclass(frozen=True)
class UpdateRecord:
    """An accepted update's metadata; the payload is loaded separately (``update_payloads``)."""

    id: int
    round_id: int
    site: str
    base_version: int
    num_samples: int
    metrics: Mapping[str, float]
    payload_bytes: int
    sha256: str
    received_at: datetime
    privacy: Mapping[str, Any] | None = None  # the site's privacy ledger (PrivacyLedger.to_dict()); None: no DP


@dataclass(frozen=True)
class MaskedInputRecord:
    """A stored masked vector of a secure round (uniform noise on its own; docs/design.md §6.4)."""

    site: str
    data: bytes
    sha256: str
    received_at: datetime


@dataclass(frozen=True)
class NewUpdate:
    round_id: int
    site_id: int
    base_version: int
    num_samples: int
    metrics: Mapping[str, float]
    payload: bytes
    sha256: str
    received_at: datetime
    privacy: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Contribution:
    """One accepted update that went into a FAM version: the version's lineage."""

    site: str
    update_id: int
    num_samples: int
    payload_bytes: int


@dataclass(frozen=True)
class NewVersion:
    data: bytes  # safetensors bytes of the FAM
    sha256: str
    parent_version: int | None
    format: str = "safetensors"


@dataclass(frozen=True)
class VersionRecord:
    version: int
    run_id: str
    round: int  # 0: the run's initial version
    parent_version: int | None
    sha256: str
    size_bytes: int
    format: str
    created_at: datetime
    contributions: tuple[Contribution, ...] = ()


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str  # "admin", a site name, or "anonymous <peer>"
    action: str  # the RPC or command, e.g. "SubmitUpdate", "RevokeSite"
    outcome: str  # "ok" or "refused"
    code: str = ""  # the status code name of a refusal
    detail: str = ""
    run_id: str | None = None
    round: int | None = None
    site: str | None = None
    count: int = 1  # refusals: how many calls of this key the row stands for


@dataclass(frozen=True)
class AuditRecord(AuditEntry):
    id: int = 0


@dataclass(frozen=True)
class RunStart:
    """What ``create_run`` returns: the run, its initial version and its first open round."""

    run: RunRecord
    initial_version: int
    first_round: RoundRecord


class Store(abc.ABC):
    """Persistence of sites, runs, rounds, updates, FAM versions and the audit log."""

    # --- lifecycle -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None: ...

    # --- sites -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_site(
        self, name: str, description: str, token_hash: str, now: datetime, max_samples: int | None = None
    ) -> SiteRecord:
        """Raises ``AlreadyExists`` if the name is taken (revoked sites keep their names)."""

    @abc.abstractmethod
    def site_by_token_hash(self, token_hash: str, now: datetime | None = None) -> SiteRecord | None:
        """The site whose current token, or whose previous token still in its grace period at ``now``
        (default: the current time), hashes to ``token_hash``."""
        ...

    @abc.abstractmethod
    def rotate_site_token(self, name: str, token_hash: str, grace_until: datetime, now: datetime) -> SiteRecord:
        """Make ``token_hash`` the site's token; the replaced one stays valid until ``grace_until``.

        Raises ``NotFound`` for an unknown site, ``FailedPrecondition`` for a revoked one.
        """

    @abc.abstractmethod
    def get_site(self, name: str) -> SiteRecord | None: ...

    @abc.abstractmethod
    def list_sites(self) -> list[SiteRecord]:
        """All sites, revoked ones included, sorted by name."""

    @abc.abstractmethod
    def count_enabled_sites(self) -> int: ...

    @abc.abstractmethod
    def revoke_site(self, name: str, now: datetime) -> tuple[SiteRecord, list[int]]:
        """Disable the site and delete its updates in OPEN rounds; returns the ids of those updates."""

    @abc.abstractmethod
    def touch_site(
        self,
        site_id: int,
        now: datetime,
        software_version: str | None = None,
        site_info: Mapping[str, str] | None = None,
    ) -> None:
        """Record that the site called (and, on Join, what it runs)."""

    # --- runs and rounds -------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_run(
        self,
        run_id: str,
        name: str,
        config: Mapping[str, Any],
        initial: NewVersion,
        now: datetime,
        first_deadline: datetime,
    ) -> RunStart:
        """Create a RUNNING run with its initial version (round 0) and open round 1, atomically.

        Raises ``FailedPrecondition`` while another run is RUNNING.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    def active_run(self) -> RunRecord | None:
        """The RUNNING run, if any (there is at most one)."""

    @abc.abstractmethod
    def latest_run(self) -> RunRecord | None: ...

    @abc.abstractmethod
    def list_runs(self) -> list[RunRecord]:
        """Newest first."""

    @abc.abstractmethod
    def finish_run(self, run_id: str, state: RunState, message: str, now: datetime) -> RunRecord:
        """End a RUNNING run (STOPPED or FAILED) and abandon its unfinished round; a no-op on an ended run."""

    @abc.abstractmethod
    def current_round(self, run_id: str) -> RoundRecord | None:
        """The run's newest round (OPEN or AGGREGATING while the run is running)."""

    @abc.abstractmethod
    def get_round(self, run_id: str, number: int) -> RoundRecord | None: ...

    @abc.abstractmethod
    def list_rounds(self, run_id: str) -> list[RoundRecord]:
        """In round order."""

    @abc.abstractmethod
    def count_closed_rounds(self, run_id: str) -> int: ...

    @abc.abstractmethod
    def begin_aggregation(self, round_id: int) -> bool:
        """OPEN → AGGREGATING; False (and no change) if the round was not OPEN."""

    @abc.abstractmethod
    def commit_round(
        self,
        round_id: int,
        version: NewVersion,
        update_ids: Sequence[int],
        metrics: Mapping[str, float],
        now: datetime,
        next_deadline: datetime | None,
    ) -> tuple[int, RoundRecord | None]:
        """AGGREGATING → CLOSED with the new version and its lineage, in one transaction.

        Opens the next round (``next_deadline``) or, with ``None``, completes the run. Returns the new
        version and the next round. Raises ``FailedPrecondition`` if the round is not AGGREGATING (the run
        was stopped meanwhile, or another process closed it) and then changes nothing.
        """

    @abc.abstractmethod
    def abandon_round(
        self,
        round_id: int,
        reason: str,
        now: datetime,
        reopen_deadline: datetime | None,
        from_states: Sequence[RoundState] = (RoundState.OPEN,),
    ) -> bool:
        """OPEN (or one of ``from_states``) → ABANDONED; with ``reopen_deadline`` a new round opens from the
        same input version. Deletes the round's masked inputs in the same transaction."""

    # --- masked inputs of secure rounds (docs/design.md §6.4) ------------------------------------------
    @abc.abstractmethod
    def add_masked_input(self, round_id: int, site_id: int, data: bytes, sha256: str, now: datetime) -> bool:
        """Store a site's masked vector while its round is OPEN; returns ``duplicate`` (same sha256 again).

        ``AlreadyExists`` for different bytes in a filled slot, ``FailedPrecondition`` if the round is not OPEN.
        ``commit_round`` and ``abandon_round`` delete the round's masked inputs in their transaction.
        """

    @abc.abstractmethod
    def masked_inputs(self, round_id: int) -> list[MaskedInputRecord]: ...

    # --- updates ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_update(self, update: NewUpdate) -> tuple[UpdateRecord, bool]:
        """Store an update into its (round, site) slot; returns ``(record, duplicate)``.

        The same sha256 again is a duplicate (acknowledged even once the round closed). Otherwise:
        ``AlreadyExists`` if the slot holds different content, ``FailedPrecondition`` if the round is not
        OPEN or the base version is not the round's input, ``PermissionDenied`` if the site is revoked.
        """

    @abc.abstractmethod
    def list_updates(self, round_id: int) -> list[UpdateRecord]: ...

    @abc.abstractmethod
    def site_update(self, round_id: int, site_id: int) -> UpdateRecord | None:
        """The update in the (round, site) slot, if any."""

    @abc.abstractmethod
    def update_payloads(self, update_ids: Sequence[int]) -> dict[int, bytes]: ...

    # --- privacy budgets -------------------------------------------------------------------------------

    @abc.abstractmethod
    def mark_budget_spent(self, run_id: str, site_id: int, now: datetime) -> bool:
        """Record that the site's privacy budget allows no further round of the run; True if newly recorded."""

    @abc.abstractmethod
    def budget_spent_sites(self, run_id: str) -> dict[str, datetime]:
        """Site name → when it reported its budget spent, for the run."""

    # --- FAM versions ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_version(self, version: int) -> VersionRecord | None: ...

    @abc.abstractmethod
    def version_data(self, version: int) -> bytes | None: ...

    @abc.abstractmethod
    def list_versions(self, run_id: str) -> list[VersionRecord]:
        """Oldest first, with lineage."""

    # --- audit -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_audit(self, entry: AuditEntry) -> None: ...

    @abc.abstractmethod
    def add_audit_batch(self, entries: list[AuditEntry]) -> None:
        """Several rows in one transaction (the counted refusals of a window)."""

    @abc.abstractmethod
    def prune_audit(self, before: datetime) -> int:
        """Delete the rows older than ``before``; returns how many."""

    @abc.abstractmethod
    def list_audit(self, limit: int = 100, outcome: str | None = None, run_id: str | None = None) -> list[AuditRecord]:
        """Newest first."""
