"""Conversions between library settings and their protobuf messages: the only module that imports them.

Settings messages mark fields ``optional``; a field the sender did not set takes the library default, so a
peer built against an older minor protocol version stays compatible. Enum values this build does not know
(sent by a newer peer) are refused with a clear message instead of being guessed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from google.protobuf import duration_pb2

from fedmedclip.federation.aggregate import Weighting
from fedmedclip.federation.codec import CodecConfig, Compression, Quantization
from fedmedclip.federation.run_config import BackboneRef, LatePolicy, RunConfig
from fedmedclip.rpc.v1 import common_pb2 as pb
from fedmedclip.rpc.v1 import federation_pb2 as fed_pb
from fedmedclip.training.config import Contrastive, TrainConfig

if TYPE_CHECKING:
    from fedmedclip.model.backbone import BackboneSpec, Preprocess

_Name = TypeVar("_Name", bound=str)

_QUANTIZATION: dict[Quantization, pb.Quantization] = {
    "int8": pb.QUANTIZATION_INT8,
    "fp16": pb.QUANTIZATION_FP16,
    "fp32": pb.QUANTIZATION_FP32,
}
_COMPRESSION: dict[Compression, pb.Compression] = {
    "zstd": pb.COMPRESSION_ZSTD,
    "zlib": pb.COMPRESSION_ZLIB,
    "none": pb.COMPRESSION_NONE,
}
_CONTRASTIVE: dict[Contrastive, pb.Contrastive] = {
    "pairwise": pb.CONTRASTIVE_PAIRWISE,
    "prototype": pb.CONTRASTIVE_PROTOTYPE,
}
_PREPROCESS: dict[Preprocess, pb.Preprocess] = {"clip": pb.PREPROCESS_CLIP, "paper": pb.PREPROCESS_PAPER}

# TrainConfig field -> proto field, for the scalar fields copied as they are (betas and contrastive are
# handled separately). tests/federation/test_serde.py checks that every TrainConfig field is covered.
_TRAIN_SCALARS = {
    "fam_lr": "fam_lr",
    "head_lr": "head_lr",
    "lr_decay": "lr_decay",
    "eps": "adam_eps",
    "weight_decay": "weight_decay",
    "batch_size": "batch_size",
    "local_epochs": "local_epochs",
    "kd_weight": "kd_weight",
    "kd_temperature": "kd_temperature",
    "use_contrastive": "use_contrastive",
    "use_head_ce": "use_head_ce",
    "use_kd": "use_kd",
    "head_hidden": "head_hidden",
}
TRAIN_FIELDS_COVERED = frozenset(_TRAIN_SCALARS) | {"betas", "contrastive"}


def _enum_from_proto(table: Mapping[_Name, int], value: int, what: str, default: _Name) -> _Name:
    if value == 0:  # *_UNSPECIFIED: the sender left it to the library default
        return default
    for name, number in table.items():
        if number == value:
            return name
    raise ValueError(f"unknown {what} value {value} (a newer protocol minor version?); known: {', '.join(table)}")


def codec_config_to_proto(config: CodecConfig) -> pb.CodecConfig:
    return pb.CodecConfig(
        rho=config.rho,
        quantization=_QUANTIZATION[config.quantization],
        compression=_COMPRESSION[config.compression],
    )


def codec_config_from_proto(message: pb.CodecConfig) -> CodecConfig:
    defaults = CodecConfig()
    return CodecConfig(
        rho=message.rho if message.HasField("rho") else defaults.rho,
        quantization=_enum_from_proto(_QUANTIZATION, message.quantization, "quantization", defaults.quantization),
        compression=_enum_from_proto(_COMPRESSION, message.compression, "compression", defaults.compression),
    )


def train_config_to_proto(config: TrainConfig) -> pb.TrainConfig:
    message = pb.TrainConfig(
        adam_beta1=config.betas[0],
        adam_beta2=config.betas[1],
        contrastive=_CONTRASTIVE[config.contrastive],
    )
    for field, proto_field in _TRAIN_SCALARS.items():
        setattr(message, proto_field, getattr(config, field))
    return message


def train_config_from_proto(message: pb.TrainConfig) -> TrainConfig:
    defaults = TrainConfig()
    values: dict[str, Any] = {
        field: getattr(message, proto_field)
        for field, proto_field in _TRAIN_SCALARS.items()
        if message.HasField(proto_field)
    }
    values["betas"] = (
        message.adam_beta1 if message.HasField("adam_beta1") else defaults.betas[0],
        message.adam_beta2 if message.HasField("adam_beta2") else defaults.betas[1],
    )
    values["contrastive"] = _enum_from_proto(_CONTRASTIVE, message.contrastive, "contrastive", defaults.contrastive)
    return TrainConfig(**values)


def backbone_spec_to_proto(spec: BackboneSpec, weights_digest: str = "") -> pb.BackboneSpec:
    """``weights_digest``: the sha256 of the loaded backbone's tensors, which sites check against theirs."""
    if spec.seed < 0:
        raise ValueError(f"backbone seed must be >= 0 to be sent, got {spec.seed}")
    message = pb.BackboneSpec(
        model=spec.model,
        weights_digest=weights_digest,
        preprocess=_PREPROCESS[spec.preprocess],
        seed=spec.seed,
    )
    if spec.weights is not None:
        message.weights = spec.weights
    return message


def backbone_spec_from_proto(message: pb.BackboneSpec) -> tuple[BackboneSpec, str]:
    """``(spec, weights_digest)``; the digest is ``""`` when the sender did not pin one."""
    # Imported here: backbone pulls in open_clip, which the aggregator never needs to load.
    from fedmedclip.model.backbone import BackboneSpec

    if not message.model:
        raise ValueError("backbone spec without a model name")
    spec = BackboneSpec(
        model=message.model,
        weights=message.weights if message.HasField("weights") else None,
        preprocess=_enum_from_proto(_PREPROCESS, message.preprocess, "preprocess", BackboneSpec().preprocess),
        seed=message.seed,
    )
    return spec, message.weights_digest


# --- run configuration (fedmedclip.federation.run_config) ----------------------------------------------

_LATE_POLICY: dict[LatePolicy, pb.LatePolicy] = {
    "accept_until_quorum": pb.LATE_POLICY_ACCEPT_UNTIL_QUORUM,
    "reopen": pb.LATE_POLICY_REOPEN,
}
_WEIGHTING: dict[Weighting, pb.Weighting] = {"samples": pb.WEIGHTING_SAMPLES, "uniform": pb.WEIGHTING_UNIFORM}


def backbone_ref_to_proto(ref: BackboneRef) -> pb.BackboneSpec:
    message = pb.BackboneSpec(
        model=ref.model,
        weights_digest=ref.weights_digest,
        preprocess=_PREPROCESS[ref.preprocess],
        seed=ref.seed,
    )
    if ref.weights is not None:
        message.weights = ref.weights
    return message


def backbone_ref_from_proto(message: pb.BackboneSpec) -> BackboneRef:
    """Like ``backbone_spec_from_proto`` without importing open_clip (the aggregator never loads CLIP)."""
    if not message.model:
        raise ValueError("backbone spec without a model name")
    return BackboneRef(
        model=message.model,
        weights=message.weights if message.HasField("weights") else None,
        weights_digest=message.weights_digest,
        preprocess=_enum_from_proto(_PREPROCESS, message.preprocess, "preprocess", BackboneRef().preprocess),
        seed=message.seed,
    )


def run_config_to_proto(config: RunConfig) -> pb.RunConfig:
    timeout = duration_pb2.Duration()
    timeout.FromNanoseconds(round(config.round_timeout_s * 1e9))
    message = pb.RunConfig(
        backbone=backbone_ref_to_proto(config.backbone),
        train=train_config_to_proto(config.train),
        codec=codec_config_to_proto(config.codec),
        rounds=config.rounds,
        embed_dim=config.embed_dim,
        min_sites=config.min_sites,
        round_timeout=timeout,
        prompt_templates=list(config.prompt_templates),
        fam_seed=config.fam_seed,
        late_policy=_LATE_POLICY[config.late_policy],
        weighting=_WEIGHTING[config.weighting],
    )
    if config.norm_bound is not None:
        message.norm_bound = config.norm_bound
    return message


def run_config_from_proto(message: pb.RunConfig) -> RunConfig:
    """Raises ``ValueError`` naming the problem for a config that cannot run (no embed_dim, no rounds...)."""
    defaults = RunConfig(embed_dim=1)
    timeout = message.round_timeout.ToNanoseconds() / 1e9 if message.HasField("round_timeout") else None
    return RunConfig(
        embed_dim=message.embed_dim,
        rounds=message.rounds,
        min_sites=message.min_sites,
        round_timeout_s=timeout if timeout is not None else defaults.round_timeout_s,
        late_policy=_enum_from_proto(_LATE_POLICY, message.late_policy, "late policy", defaults.late_policy),
        weighting=_enum_from_proto(_WEIGHTING, message.weighting, "weighting", defaults.weighting),
        norm_bound=message.norm_bound if message.HasField("norm_bound") else None,
        fam_seed=message.fam_seed,
        backbone=backbone_ref_from_proto(message.backbone) if message.HasField("backbone") else BackboneRef(),
        train=train_config_from_proto(message.train),
        codec=codec_config_from_proto(message.codec),
        prompt_templates=tuple(message.prompt_templates),
    )


# --- the site's side of the Federation service (the hospital agent) -----------------------------------
#
# Plain dataclasses for what a site sends and receives, so that agent code never touches protobuf messages.

SiteActivity = Literal["idle", "embedding", "training", "uploading"]
_ACTIVITY: dict[SiteActivity, int] = {
    "idle": fed_pb.SITE_ACTIVITY_IDLE,
    "embedding": fed_pb.SITE_ACTIVITY_EMBEDDING,
    "training": fed_pb.SITE_ACTIVITY_TRAINING,
    "uploading": fed_pb.SITE_ACTIVITY_UPLOADING,
}
MODEL_FORMAT_SAFETENSORS = "safetensors"


@dataclass(frozen=True)
class JoinReply:
    site: str  # the site's enrolled name, derived from its token
    run_id: str  # "" while no run is active
    run_config: RunConfig | None
    protocol: tuple[int, int]  # the aggregator's wire-protocol version


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


SiteTask = TrainTask | WaitTask | DoneTask


@dataclass(frozen=True)
class ModelHeader:
    version: int
    sha256: str
    total_bytes: int
    format: str  # MODEL_FORMAT_SAFETENSORS, or "unknown(N)" for a format this build cannot read


@dataclass(frozen=True)
class UpdateHeader:
    """What a site announces before its payload; ``metrics`` are aggregate numbers only, never per sample."""

    run_id: str
    round: int
    base_version: int
    num_samples: int
    metrics: Mapping[str, float]
    codec: CodecConfig
    sha256: str
    total_bytes: int
    site: str = ""  # optional self-check; the aggregator takes the identity from the token


@dataclass(frozen=True)
class SubmitReply:
    accepted: bool
    duplicate: bool
    message: str


@dataclass(frozen=True)
class HeartbeatReply:
    server_time: datetime | None
    abandon_round: bool


def join_request_to_proto(
    protocol: tuple[int, int], software_version: str, *, platform: str = "", torch_version: str = "", device: str = ""
) -> fed_pb.JoinRequest:
    return fed_pb.JoinRequest(
        protocol_major=protocol[0],
        protocol_minor=protocol[1],
        software_version=software_version,
        site_info=pb.SiteInfo(platform=platform, torch_version=torch_version, device=device),
    )


def join_response_from_proto(message: fed_pb.JoinResponse) -> JoinReply:
    """Raises ``ValueError`` when the run config cannot run (see ``run_config_from_proto``)."""
    config = run_config_from_proto(message.run_config) if message.run_id and message.HasField("run_config") else None
    if message.run_id and config is None:
        raise ValueError(f"the aggregator named run {message.run_id} without its run config")
    return JoinReply(message.site, message.run_id, config, (message.protocol_major, message.protocol_minor))


def poll_request_to_proto(run_id: str, wait_seconds: int) -> fed_pb.PollTaskRequest:
    return fed_pb.PollTaskRequest(run_id=run_id, wait_seconds=max(0, int(wait_seconds)))


def task_from_proto(message: fed_pb.Task) -> SiteTask:
    kind = message.WhichOneof("kind")
    if kind == "train":
        train = message.train
        deadline = train.deadline.ToDatetime(tzinfo=UTC) if train.HasField("deadline") else None
        return TrainTask(train.round, train.fam_version, deadline)
    if kind == "wait":
        return WaitTask(max(0.0, message.wait.retry_after_seconds))
    if kind == "done":
        return DoneTask(message.done.final_version, message.done.reason)
    raise ValueError("the aggregator sent an empty task (a newer protocol minor version?)")


def get_model_request_to_proto(version: int) -> fed_pb.GetModelRequest:
    return fed_pb.GetModelRequest(version=version)


def model_chunk_from_proto(message: pb.ModelChunk) -> ModelHeader | bytes:
    """A transfer's header, or the next slice of its data bytes."""
    kind = message.WhichOneof("kind")
    if kind == "header":
        header = message.header
        known = header.format == pb.MODEL_FORMAT_SAFETENSORS
        return ModelHeader(
            header.version,
            header.sha256,
            header.total_bytes,
            MODEL_FORMAT_SAFETENSORS if known else f"unknown({int(header.format)})",
        )
    if kind == "data":
        return bytes(message.data)
    raise ValueError("empty model chunk")


def update_chunks_to_proto(header: UpdateHeader, payload: bytes, chunk_bytes: int) -> Iterator[fed_pb.UpdateChunk]:
    """The SubmitUpdate stream: the header, then the payload in slices of at most ``chunk_bytes``."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    yield fed_pb.UpdateChunk(
        header=fed_pb.UpdateHeader(
            run_id=header.run_id,
            round=header.round,
            base_version=header.base_version,
            num_samples=header.num_samples,
            metrics={str(k): float(v) for k, v in header.metrics.items()},
            codec=codec_config_to_proto(header.codec),
            sha256=header.sha256,
            total_bytes=header.total_bytes,
            site=header.site,
        )
    )
    for start in range(0, len(payload), chunk_bytes):
        yield fed_pb.UpdateChunk(data=payload[start : start + chunk_bytes])


def submit_response_from_proto(message: fed_pb.SubmitUpdateResponse) -> SubmitReply:
    return SubmitReply(message.accepted, message.duplicate, message.message)


def heartbeat_request_to_proto(run_id: str, activity: SiteActivity, round_number: int) -> fed_pb.HeartbeatRequest:
    return fed_pb.HeartbeatRequest(run_id=run_id, activity=_ACTIVITY[activity], round=max(0, round_number))  # type: ignore[arg-type]


def heartbeat_response_from_proto(message: fed_pb.HeartbeatResponse) -> HeartbeatReply:
    stamp = message.server_time.ToDatetime(tzinfo=UTC) if message.HasField("server_time") else None
    return HeartbeatReply(stamp, message.abandon_round)
