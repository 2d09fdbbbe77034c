"""The protocol's messages as plain values: every request, reply, task, header and admin record.

Services build and read these dataclasses; ``serde`` is the one place that turns them into the protobuf
messages of ``proto/fedmedclip/rpc/v1`` and back (docs/design.md §4). Wire enums are Python enums here, so
callers never see a ``RUN_STATE_`` prefix. Times are timezone-aware UTC ``datetime``s; ``None`` stands for
a field the wire leaves unset.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.privacy.ledger import PrivacyLedger
from fedmedclip.secagg.protocol import AdvertisedKeys, RevealedShare, SealedShares

__all__ = ["AdvertisedKeys", "RevealedShare", "SealedShares"]  # the secure phases' items, re-exported

MODEL_FORMAT_SAFETENSORS = "safetensors"

SiteActivity = Literal["idle", "embedding", "training", "uploading", "budget_spent"]


class RunState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"  # all rounds closed
    STOPPED = "stopped"  # stopped by an admin
    FAILED = "failed"  # stopped by an error; see RunStatus.message


class RoundState(enum.Enum):
    OPEN = "open"
    AGGREGATING = "aggregating"
    CLOSED = "closed"
    ABANDONED = "abandoned"


class ParticipationState(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    MISSING = "missing"
    BUDGET_SPENT = "budget_spent"  # no update because the site's privacy budget is spent: not a fault


# --- shared ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteInfo:
    """What a site says about its machine on Join (shown to operators, never trusted)."""

    platform: str = ""
    torch_version: str = ""
    device: str = ""


@dataclass(frozen=True)
class ModelHeader:
    """The first message of a model download (GetModel, ExportVersion)."""

    version: int
    sha256: str
    total_bytes: int
    format: str = MODEL_FORMAT_SAFETENSORS  # or "unknown(N)" for a format this build cannot read


# --- Federation service (what sites call) --------------------------------------------------------------


@dataclass(frozen=True)
class JoinRequest:
    protocol: tuple[int, int]
    software_version: str = ""
    site_info: SiteInfo = field(default_factory=SiteInfo)


@dataclass(frozen=True)
class JoinReply:
    site: str  # the site's enrolled name, derived from its token
    run_id: str  # "" while no run is active
    run_config: RunConfig | None
    protocol: tuple[int, int]  # the aggregator's wire-protocol version


@dataclass(frozen=True)
class PollTaskRequest:
    run_id: str
    wait_seconds: int = 0


@dataclass(frozen=True)
class TrainTask:
    round: int  # 1-based
    fam_version: int  # the version to train from; the update's base_version
    deadline: datetime | None  # UTC


@dataclass(frozen=True)
class WaitTask:
    retry_after_s: float


@dataclass(frozen=True)
class DoneTask:
    final_version: int  # 0 when the run ended before producing a version
    reason: str


@dataclass(frozen=True)
class SecureAdvertiseTask:
    """Secure round, phase 1 (docs/design.md §4.6): train from ``fam_version``, then advertise fresh keys."""

    round: int
    fam_version: int
    deadline: datetime | None


@dataclass(frozen=True)
class SecureShareKeysTask:
    """Phase 2: the round's public parameters and every advertised key pair (sorted by site)."""

    round: int
    threshold: int
    bits: int
    degree: int  # 0: all pairs
    graph_seed: bytes
    keys: tuple[AdvertisedKeys, ...]
    deadline: datetime | None


@dataclass(frozen=True)
class SecureMaskedInputTask:
    """Phase 3: the sealed shares other sites addressed to this one."""

    round: int
    shares: tuple[SealedShares, ...]
    deadline: datetime | None


@dataclass(frozen=True)
class SecureUnmaskTask:
    """Phase 4: the server's claim of who sent masked input and who dropped after sharing keys."""

    round: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    deadline: datetime | None


SecureTask = SecureAdvertiseTask | SecureShareKeysTask | SecureMaskedInputTask | SecureUnmaskTask
SiteTask = TrainTask | WaitTask | DoneTask | SecureTask


@dataclass(frozen=True)
class GetModelRequest:
    version: int


@dataclass(frozen=True)
class UpdateHeader:
    """The first message of a SubmitUpdate stream; ``metrics`` are aggregate numbers only, never per sample."""

    run_id: str
    round: int
    base_version: int
    num_samples: int
    metrics: Mapping[str, float]
    codec: CodecConfig | None  # None: the sender did not say (the payload still records it)
    sha256: str
    total_bytes: int
    site: str = ""  # optional self-check; the aggregator takes the identity from the token
    privacy: PrivacyLedger | None = None  # the site's privacy ledger after this round (§6.5); None: no DP


@dataclass(frozen=True)
class SubmitReply:
    accepted: bool
    duplicate: bool
    message: str


@dataclass(frozen=True)
class AdvertiseKeysRequest:
    run_id: str
    round: int
    keys: AdvertisedKeys  # keys.site must be the token's site


@dataclass(frozen=True)
class ShareKeysRequest:
    run_id: str
    round: int
    shares: tuple[SealedShares, ...]  # every sender must be the token's site


@dataclass(frozen=True)
class MaskedInputHeader:
    """The first message of a SubmitMaskedInput stream; the data is the packed vector (``secagg.packing``)."""

    run_id: str
    round: int
    sha256: str
    total_bytes: int


@dataclass(frozen=True)
class UnmaskRequest:
    run_id: str
    round: int
    shares: tuple[RevealedShare, ...]


@dataclass(frozen=True)
class SecurePhaseReply:
    accepted: bool
    duplicate: bool
    message: str


@dataclass(frozen=True)
class HeartbeatRequest:
    run_id: str
    activity: SiteActivity = "idle"
    round: int = 0


@dataclass(frozen=True)
class HeartbeatReply:
    server_time: datetime | None
    abandon_round: bool


# --- Admin service (what operators call) ----------------------------------------------------------------


@dataclass(frozen=True)
class StartRunRequest:
    config: RunConfig
    name: str = ""
    initial_version: int = 0  # 0: a fresh FAM from the config's fam_seed


@dataclass(frozen=True)
class StartRunReply:
    run_id: str
    initial_version: int


@dataclass(frozen=True)
class StopRunRequest:
    run_id: str
    reason: str = ""


@dataclass(frozen=True)
class StopRunReply:
    state: RunState


@dataclass(frozen=True)
class ListRunsRequest:
    pass


@dataclass(frozen=True)
class GetRunStatusRequest:
    run_id: str = ""  # "": the most recent run


@dataclass(frozen=True)
class SiteParticipation:
    site: str
    state: ParticipationState
    num_samples: int = 0
    payload_bytes: int = 0
    received_at: datetime | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    message: str = ""  # why an update was rejected
    privacy: PrivacyLedger | None = None  # the ledger the site sent with its update


@dataclass(frozen=True)
class RoundStatus:
    round: int
    state: RoundState
    opened_at: datetime
    deadline: datetime
    closed_at: datetime | None
    input_version: int
    output_version: int  # 0 until the round closes
    participants: tuple[SiteParticipation, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    message: str = ""  # why an abandoned round ended


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    name: str
    state: RunState
    config: RunConfig
    current_round: int
    latest_version: int
    created_at: datetime
    finished_at: datetime | None
    message: str = ""
    rounds: tuple[RoundStatus, ...] = ()  # filled by GetRunStatus only; ListRuns leaves it empty


@dataclass(frozen=True)
class ListRunsReply:
    runs: tuple[RunStatus, ...]


@dataclass(frozen=True)
class ListVersionsRequest:
    run_id: str
    page_size: int = 0  # 0: the server's default
    page_token: str = ""  # the previous reply's next_page_token; "": the first page


@dataclass(frozen=True)
class VersionContribution:
    site: str
    num_samples: int
    payload_bytes: int


@dataclass(frozen=True)
class FamVersion:
    version: int
    run_id: str
    round: int
    parent_version: int  # 0: none (a run's fresh initial FAM)
    sha256: str
    size_bytes: int
    created_at: datetime
    contributions: tuple[VersionContribution, ...] = ()
    format: str = MODEL_FORMAT_SAFETENSORS


@dataclass(frozen=True)
class ListVersionsReply:
    versions: tuple[FamVersion, ...]
    next_page_token: str = ""  # "": the last page


@dataclass(frozen=True)
class ExportVersionRequest:
    version: int


@dataclass(frozen=True)
class Site:
    name: str
    description: str
    enabled: bool
    enrolled_at: datetime
    last_seen: datetime | None = None
    software_version: str = ""
    site_info: SiteInfo = field(default_factory=SiteInfo)


@dataclass(frozen=True)
class EnrolSiteRequest:
    site: str
    description: str = ""
    max_samples: int | None = None  # cap on the site's aggregation weight; None: only the run's cap


@dataclass(frozen=True)
class EnrolSiteReply:
    site: Site
    token: str  # shown once; the aggregator keeps only its hash


@dataclass(frozen=True)
class RotateSiteTokenRequest:
    site: str
    grace_s: float | None = None  # None: the aggregator's default grace period


@dataclass(frozen=True)
class RotateSiteTokenReply:
    site: Site
    token: str  # shown once; the aggregator keeps only its hash
    previous_token_expires_at: datetime | None  # None: the replaced token already stopped working


@dataclass(frozen=True)
class ListSitesRequest:
    page_size: int = 0  # 0: the server's default
    page_token: str = ""  # the previous reply's next_page_token; "": the first page


@dataclass(frozen=True)
class ListSitesReply:
    sites: tuple[Site, ...]
    next_page_token: str = ""  # "": the last page


@dataclass(frozen=True)
class RevokeSiteRequest:
    site: str
    reason: str = ""


@dataclass(frozen=True)
class RevokeSiteReply:
    site: Site
