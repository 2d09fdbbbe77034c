"""Conversions between the protocol's plain values and their protobuf messages: the only module of the
core library that imports them (docs/design.md §2). Settings live in their own modules (``RunConfig``,
``TrainConfig``, ``CodecConfig``), every request, reply and record in ``messages``; each has a
``*_to_proto`` and a ``*_from_proto`` here, listed in ``CONVERTERS``.

Settings messages mark fields ``optional``; a field the sender did not set takes the library default, so a
peer built against an older minor protocol version stays compatible. Enum values this build does not know
(sent by a newer peer) are refused with a clear message instead of being guessed.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import duration_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from fedmedclip.federation import messages as m
from fedmedclip.federation.aggregate import Weighting
from fedmedclip.federation.codec import CodecConfig, Compression, Quantization
from fedmedclip.federation.messages import SiteActivity
from fedmedclip.federation.run_config import AggregationRule, BackboneRef, LatePolicy, RunConfig
from fedmedclip.privacy.config import PrivacyConfig
from fedmedclip.privacy.ledger import PrivacyLedger
from fedmedclip.rpc.v1 import admin_pb2 as admin_pb
from fedmedclip.rpc.v1 import common_pb2 as pb
from fedmedclip.rpc.v1 import federation_pb2 as fed_pb
from fedmedclip.secagg import shamir
from fedmedclip.secagg.config import SecureAggregationConfig
from fedmedclip.secagg.protocol import SecretKind
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

# The largest value each integer wire type may carry into the aggregator. Every integer ends in a signed
# database column: uint64/int64 in a BIGINT (so < 2^63), uint32/int32 in an INTEGER (so < 2^31). Checking
# here, once, from the descriptors, means a field added later is covered without anyone remembering it.
_INT_LIMITS: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_UINT64: (0, (1 << 63) - 1),
    FieldDescriptor.TYPE_FIXED64: (0, (1 << 63) - 1),
    FieldDescriptor.TYPE_INT64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1),
    FieldDescriptor.TYPE_UINT32: (0, (1 << 31) - 1),
    FieldDescriptor.TYPE_FIXED32: (0, (1 << 31) - 1),
    FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1),
}


# Longest text any string field of a request may hold; stricter bounds apply where the service knows
# more (a site's self-description: ``Limits.max_site_info_chars``).
MAX_TEXT_CHARS = 4096


class FieldOutOfRangeError(ValueError):
    """A field of a received message lies outside what the aggregator can store or use."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field} {problem}")
        self.field = field


def check_int_ranges(message: Message, prefix: str = "") -> None:
    """Raise ``FieldOutOfRangeError`` naming the first integer field of ``message`` (nested messages, repeated
    fields and maps included) whose value does not fit its column; called on every received request."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                _check_text(key, f"{path} key")
                if value_field.message_type is not None:
                    check_int_ranges(item, f"{path}[{key!r}].")
                else:
                    _check_scalar(value_field, item, f"{path}[{key!r}]")
            continue
        items = list(value) if field.is_repeated else [value]
        for index, item in enumerate(items):
            where = f"{path}[{index}]" if field.is_repeated else path
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                check_int_ranges(item, f"{where}.")
            else:
                _check_scalar(field, item, where)


def _check_scalar(field: FieldDescriptor, value: Any, where: str) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        _check_text(value, where)
        return
    limits = _INT_LIMITS.get(field.type)
    if limits is not None and not limits[0] <= value <= limits[1]:
        raise FieldOutOfRangeError(where, f"= {value} is out of range [{limits[0]}, {limits[1]}]")


def _check_text(value: object, where: str) -> None:
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        raise FieldOutOfRangeError(where, f"has {len(value)} characters; at most {MAX_TEXT_CHARS} are accepted")


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
_AGGREGATION_RULE: dict[AggregationRule, pb.AggregationRule] = {
    "mean": pb.AGGREGATION_RULE_MEAN,
    "trimmed_mean": pb.AGGREGATION_RULE_TRIMMED_MEAN,
    "median": pb.AGGREGATION_RULE_MEDIAN,
}


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
        aggregation_rule=_AGGREGATION_RULE[config.aggregation_rule],
        trim_fraction=config.trim_fraction,
    )
    if config.norm_bound is not None:
        message.norm_bound = config.norm_bound
    if config.privacy != PrivacyConfig():
        message.privacy.CopyFrom(privacy_config_to_proto(config.privacy))
    if config.max_samples_per_site is not None:
        message.max_samples_per_site = config.max_samples_per_site
    if config.clip_norm is not None:
        message.clip_norm = config.clip_norm
    if config.secure_aggregation != SecureAggregationConfig():
        message.secure_aggregation.CopyFrom(secure_config_to_proto(config.secure_aggregation))
    return message


_PRIVACY_OPTIONAL = (
    "target_epsilon",
    "delta",
    "clip_norm",
    "noise_multiplier",
    "batch_size",
    "site_noise_multiplier",
    "site_count_noise",
    "site_target_quantile",
    "site_initial_clip",
    "site_clip_lr",
    "site_sample_rate",
)


def privacy_config_to_proto(config: PrivacyConfig) -> pb.PrivacyConfig:
    message = pb.PrivacyConfig(mode=config.mode)
    for name in _PRIVACY_OPTIONAL:
        value = getattr(config, name)
        if value is not None:
            setattr(message, name, value)
    return message


def privacy_config_from_proto(message: pb.PrivacyConfig) -> PrivacyConfig:
    """Unset fields take the library defaults; raises ``ValueError`` for settings that cannot hold."""
    values: dict[str, Any] = {name: getattr(message, name) for name in _PRIVACY_OPTIONAL if message.HasField(name)}
    return PrivacyConfig(mode=message.mode or "off", **values)  # type: ignore[arg-type]


def privacy_ledger_to_proto(ledger: PrivacyLedger) -> pb.PrivacyLedger:
    return pb.PrivacyLedger(**ledger.to_dict())


def privacy_ledger_from_proto(message: pb.PrivacyLedger) -> PrivacyLedger:
    """Raises ``ValueError`` for a ledger with impossible values (negative ε, a rate above 1...)."""
    return PrivacyLedger(
        epsilon=message.epsilon,
        delta=message.delta,
        sigma=message.sigma,
        clip_norm=message.clip_norm,
        sample_rate=message.sample_rate,
        steps=message.steps,
        rounds=message.rounds,
        target_epsilon=message.target_epsilon,
    )


def secure_config_to_proto(config: SecureAggregationConfig) -> pb.SecureAggregationConfig:
    degree = 0 if config.degree == "auto" else -1 if config.degree == "all" else int(config.degree)
    message = pb.SecureAggregationConfig(
        enabled=config.enabled,
        degree=degree,
        clip_norm=config.clip_norm,
        coordinate_bound=config.coordinate_bound,
        precision_bits=config.precision_bits,
        weight_cap=config.weight_cap,
        row_fraction=config.row_fraction,
        phase_timeout_seconds=config.phase_timeout_s,
    )
    if config.threshold is not None:
        message.threshold = config.threshold
    return message


def secure_config_from_proto(message: pb.SecureAggregationConfig) -> SecureAggregationConfig:
    defaults = SecureAggregationConfig()
    values: dict[str, Any] = {"enabled": message.enabled}
    for field, proto_field in _SECURE_SCALARS.items():
        values[field] = getattr(message, proto_field) if message.HasField(proto_field) else getattr(defaults, field)
    values["threshold"] = message.threshold if message.HasField("threshold") else None
    degree = message.degree if message.HasField("degree") else 0
    if degree < -1:
        raise ValueError(f"secure_aggregation degree {degree} is neither -1 (all pairs), 0 (auto) nor a degree")
    values["degree"] = "auto" if degree == 0 else "all" if degree == -1 else degree
    return SecureAggregationConfig(**values)


_SECURE_SCALARS = {
    "clip_norm": "clip_norm",
    "coordinate_bound": "coordinate_bound",
    "precision_bits": "precision_bits",
    "weight_cap": "weight_cap",
    "row_fraction": "row_fraction",
    "phase_timeout_s": "phase_timeout_seconds",
}


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
        privacy=privacy_config_from_proto(message.privacy) if message.HasField("privacy") else PrivacyConfig(),
        max_samples_per_site=message.max_samples_per_site if message.HasField("max_samples_per_site") else None,
        clip_norm=message.clip_norm if message.HasField("clip_norm") else None,
        aggregation_rule=_enum_from_proto(
            _AGGREGATION_RULE, message.aggregation_rule, "aggregation rule", defaults.aggregation_rule
        ),
        trim_fraction=message.trim_fraction if message.HasField("trim_fraction") else defaults.trim_fraction,
        secure_aggregation=(
            secure_config_from_proto(message.secure_aggregation)
            if message.HasField("secure_aggregation")
            else SecureAggregationConfig()
        ),
    )


def run_config_to_json(config: RunConfig) -> dict[str, Any]:
    """The run config in protobuf's JSON mapping (what export manifests and ``runs status --json`` show)."""
    return dict(MessageToDict(run_config_to_proto(config), preserving_proto_field_name=True))


# --- times and enums ----------------------------------------------------------------------------------


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _set_time(target: Timestamp, value: datetime | None) -> None:
    if value is not None:
        target.CopyFrom(_timestamp(value))


def _time(message: Any, name: str) -> datetime | None:
    """A Timestamp field as an aware UTC datetime; ``None`` when unset."""
    return message.__getattribute__(name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def _required_time(message: Any, name: str) -> datetime:
    value = _time(message, name)
    if value is None:
        raise ValueError(f"{type(message).__name__}.{name} is missing")
    return value


_E = TypeVar("_E", bound=enum.Enum)


def _enum_to_proto(table: Mapping[_E, int], value: _E) -> Any:
    return table[value]


def _wire_enum_from_proto(table: Mapping[_E, int], value: int, what: str) -> _E:
    for member, number in table.items():
        if number == value:
            return member
    raise ValueError(f"unknown {what} value {value} (a newer protocol minor version?)")


_ACTIVITY: dict[SiteActivity, int] = {
    "idle": fed_pb.SITE_ACTIVITY_IDLE,
    "embedding": fed_pb.SITE_ACTIVITY_EMBEDDING,
    "training": fed_pb.SITE_ACTIVITY_TRAINING,
    "uploading": fed_pb.SITE_ACTIVITY_UPLOADING,
    "budget_spent": fed_pb.SITE_ACTIVITY_BUDGET_SPENT,
}
_RUN_STATE: dict[m.RunState, int] = {
    m.RunState.RUNNING: admin_pb.RUN_STATE_RUNNING,
    m.RunState.COMPLETED: admin_pb.RUN_STATE_COMPLETED,
    m.RunState.STOPPED: admin_pb.RUN_STATE_STOPPED,
    m.RunState.FAILED: admin_pb.RUN_STATE_FAILED,
}
_ROUND_STATE: dict[m.RoundState, int] = {
    m.RoundState.OPEN: admin_pb.ROUND_STATE_OPEN,
    m.RoundState.AGGREGATING: admin_pb.ROUND_STATE_AGGREGATING,
    m.RoundState.CLOSED: admin_pb.ROUND_STATE_CLOSED,
    m.RoundState.ABANDONED: admin_pb.ROUND_STATE_ABANDONED,
}
_PARTICIPATION: dict[m.ParticipationState, int] = {
    m.ParticipationState.ACCEPTED: admin_pb.PARTICIPATION_STATE_ACCEPTED,
    m.ParticipationState.REJECTED: admin_pb.PARTICIPATION_STATE_REJECTED,
    m.ParticipationState.MISSING: admin_pb.PARTICIPATION_STATE_MISSING,
    m.ParticipationState.BUDGET_SPENT: admin_pb.PARTICIPATION_STATE_BUDGET_SPENT,
}


def _model_format_to_proto(name: str) -> Any:
    if name == m.MODEL_FORMAT_SAFETENSORS:
        return pb.MODEL_FORMAT_SAFETENSORS
    unknown = re.fullmatch(r"unknown\((\d+)\)", name)
    if unknown is None:
        raise ValueError(f"unknown model format {name!r}")
    return int(unknown.group(1))


def _model_format_from_proto(value: int) -> str:
    return m.MODEL_FORMAT_SAFETENSORS if value == pb.MODEL_FORMAT_SAFETENSORS else f"unknown({int(value)})"


# --- shared messages ----------------------------------------------------------------------------------


def site_info_to_proto(info: m.SiteInfo) -> pb.SiteInfo:
    return pb.SiteInfo(platform=info.platform, torch_version=info.torch_version, device=info.device)


def site_info_from_proto(message: pb.SiteInfo) -> m.SiteInfo:
    return m.SiteInfo(message.platform, message.torch_version, message.device)


def model_header_to_proto(header: m.ModelHeader) -> pb.ModelHeader:
    return pb.ModelHeader(
        version=header.version,
        sha256=header.sha256,
        total_bytes=header.total_bytes,
        format=_model_format_to_proto(header.format),
    )


def model_header_from_proto(message: pb.ModelHeader) -> m.ModelHeader:
    return m.ModelHeader(message.version, message.sha256, message.total_bytes, _model_format_from_proto(message.format))


def model_chunks_to_proto(header: m.ModelHeader, data: bytes, chunk_bytes: int) -> Iterator[pb.ModelChunk]:
    """A model download stream: the header, then the data in slices of at most ``chunk_bytes``."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    yield pb.ModelChunk(header=model_header_to_proto(header))
    view = memoryview(data)
    for start in range(0, len(data), chunk_bytes):
        yield pb.ModelChunk(data=bytes(view[start : start + chunk_bytes]))


def model_chunk_from_proto(message: pb.ModelChunk) -> m.ModelHeader | bytes:
    """A transfer's header, or the next slice of its data bytes."""
    kind = message.WhichOneof("kind")
    if kind == "header":
        return model_header_from_proto(message.header)
    if kind == "data":
        return bytes(message.data)
    raise ValueError("empty model chunk")


# --- Federation service -------------------------------------------------------------------------------


def join_request_to_proto(request: m.JoinRequest) -> fed_pb.JoinRequest:
    return fed_pb.JoinRequest(
        protocol_major=request.protocol[0],
        protocol_minor=request.protocol[1],
        software_version=request.software_version,
        site_info=site_info_to_proto(request.site_info),
    )


def join_request_from_proto(message: fed_pb.JoinRequest) -> m.JoinRequest:
    return m.JoinRequest(
        (message.protocol_major, message.protocol_minor),
        message.software_version,
        site_info_from_proto(message.site_info),
    )


def join_reply_to_proto(reply: m.JoinReply) -> fed_pb.JoinResponse:
    message = fed_pb.JoinResponse(
        site=reply.site, run_id=reply.run_id, protocol_major=reply.protocol[0], protocol_minor=reply.protocol[1]
    )
    if reply.run_config is not None:
        message.run_config.CopyFrom(run_config_to_proto(reply.run_config))
    return message


def join_reply_from_proto(message: fed_pb.JoinResponse) -> m.JoinReply:
    """Raises ``ValueError`` when the run config cannot run (see ``run_config_from_proto``)."""
    config = run_config_from_proto(message.run_config) if message.run_id and message.HasField("run_config") else None
    if message.run_id and config is None:
        raise ValueError(f"the aggregator named run {message.run_id} without its run config")
    return m.JoinReply(message.site, message.run_id, config, (message.protocol_major, message.protocol_minor))


def poll_request_to_proto(request: m.PollTaskRequest) -> fed_pb.PollTaskRequest:
    return fed_pb.PollTaskRequest(run_id=request.run_id, wait_seconds=max(0, int(request.wait_seconds)))


def poll_request_from_proto(message: fed_pb.PollTaskRequest) -> m.PollTaskRequest:
    return m.PollTaskRequest(message.run_id, message.wait_seconds)


def task_to_proto(task: m.SiteTask) -> fed_pb.Task:
    if isinstance(task, m.SecureAdvertiseTask | m.SecureShareKeysTask | m.SecureMaskedInputTask | m.SecureUnmaskTask):
        return _secure_task_to_proto(task)
    if isinstance(task, m.TrainTask):
        train = fed_pb.TrainTask(round=task.round, fam_version=task.fam_version)
        _set_time(train.deadline, task.deadline)
        return fed_pb.Task(train=train)
    if isinstance(task, m.DoneTask):
        return fed_pb.Task(done=fed_pb.DoneTask(final_version=task.final_version, reason=task.reason))
    return fed_pb.Task(wait=fed_pb.WaitTask(retry_after_seconds=task.retry_after_s))


def task_from_proto(message: fed_pb.Task) -> m.SiteTask:
    kind = message.WhichOneof("kind")
    if kind == "train":
        return m.TrainTask(message.train.round, message.train.fam_version, _time(message.train, "deadline"))
    if kind == "wait":
        return m.WaitTask(max(0.0, message.wait.retry_after_seconds))
    if kind == "done":
        return m.DoneTask(message.done.final_version, message.done.reason)
    if kind is not None and kind.startswith("secure_"):
        return _secure_task_from_proto(message, kind)
    raise ValueError("the aggregator sent an empty task (a newer protocol minor version?)")


# --- secure aggregation phases (docs/design.md §4.6) ---------------------------------------------------

_SECRET_KIND = {SecretKind.SELF_SEED: fed_pb.SECRET_KIND_SELF_SEED, SecretKind.MASK_KEY: fed_pb.SECRET_KIND_MASK_KEY}


def advertised_keys_to_proto(keys: m.AdvertisedKeys) -> fed_pb.AdvertisedKeys:
    return fed_pb.AdvertisedKeys(site=keys.site, channel_public=keys.channel_public, mask_public=keys.mask_public)


def advertised_keys_from_proto(message: fed_pb.AdvertisedKeys) -> m.AdvertisedKeys:
    return m.AdvertisedKeys(message.site, message.channel_public, message.mask_public)


def sealed_shares_to_proto(item: m.SealedShares) -> fed_pb.SealedShares:
    return fed_pb.SealedShares(sender=item.sender, receiver=item.receiver, ciphertext=item.ciphertext)


def sealed_shares_from_proto(message: fed_pb.SealedShares) -> m.SealedShares:
    return m.SealedShares(message.sender, message.receiver, message.ciphertext)


def revealed_share_to_proto(item: m.RevealedShare) -> fed_pb.RevealedShare:
    return fed_pb.RevealedShare(owner=item.owner, kind=_SECRET_KIND[item.kind], share=item.share.to_bytes())


def revealed_share_from_proto(message: fed_pb.RevealedShare) -> m.RevealedShare:
    """Raises ``ValueError`` for an unknown kind or a malformed share."""
    kind = _wire_enum_from_proto(_SECRET_KIND, message.kind, "secret kind")
    try:
        share = shamir.Share.from_bytes(message.share)
    except ValueError as exc:
        raise ValueError(f"revealed share of {message.owner!r}: {exc}") from exc
    return m.RevealedShare(message.owner, kind, share)


def _secure_task_to_proto(task: m.SecureTask) -> fed_pb.Task:
    if isinstance(task, m.SecureAdvertiseTask):
        advertise = fed_pb.SecureAdvertiseTask(round=task.round, fam_version=task.fam_version)
        _set_time(advertise.deadline, task.deadline)
        return fed_pb.Task(secure_advertise=advertise)
    if isinstance(task, m.SecureShareKeysTask):
        share = fed_pb.SecureShareKeysTask(
            round=task.round,
            threshold=task.threshold,
            bits=task.bits,
            degree=task.degree,
            graph_seed=task.graph_seed,
            keys=[advertised_keys_to_proto(k) for k in task.keys],
        )
        _set_time(share.deadline, task.deadline)
        return fed_pb.Task(secure_share_keys=share)
    if isinstance(task, m.SecureMaskedInputTask):
        masked = fed_pb.SecureMaskedInputTask(round=task.round, shares=[sealed_shares_to_proto(x) for x in task.shares])
        _set_time(masked.deadline, task.deadline)
        return fed_pb.Task(secure_masked_input=masked)
    unmask = fed_pb.SecureUnmaskTask(round=task.round, survivors=list(task.survivors), dropped=list(task.dropped))
    _set_time(unmask.deadline, task.deadline)
    return fed_pb.Task(secure_unmask=unmask)


def _secure_task_from_proto(message: fed_pb.Task, kind: str) -> m.SecureTask:
    if kind == "secure_advertise":
        a = message.secure_advertise
        return m.SecureAdvertiseTask(a.round, a.fam_version, _time(a, "deadline"))
    if kind == "secure_share_keys":
        k = message.secure_share_keys
        keys = tuple(advertised_keys_from_proto(x) for x in k.keys)
        return m.SecureShareKeysTask(k.round, k.threshold, k.bits, k.degree, k.graph_seed, keys, _time(k, "deadline"))
    if kind == "secure_masked_input":
        x = message.secure_masked_input
        shares = tuple(sealed_shares_from_proto(s) for s in x.shares)
        return m.SecureMaskedInputTask(x.round, shares, _time(x, "deadline"))
    u = message.secure_unmask
    return m.SecureUnmaskTask(u.round, tuple(u.survivors), tuple(u.dropped), _time(u, "deadline"))


def advertise_keys_request_to_proto(request: m.AdvertiseKeysRequest) -> fed_pb.AdvertiseKeysRequest:
    return fed_pb.AdvertiseKeysRequest(
        run_id=request.run_id, round=request.round, keys=advertised_keys_to_proto(request.keys)
    )


def advertise_keys_request_from_proto(message: fed_pb.AdvertiseKeysRequest) -> m.AdvertiseKeysRequest:
    return m.AdvertiseKeysRequest(message.run_id, message.round, advertised_keys_from_proto(message.keys))


def share_keys_request_to_proto(request: m.ShareKeysRequest) -> fed_pb.ShareKeysRequest:
    return fed_pb.ShareKeysRequest(
        run_id=request.run_id, round=request.round, shares=[sealed_shares_to_proto(x) for x in request.shares]
    )


def share_keys_request_from_proto(message: fed_pb.ShareKeysRequest) -> m.ShareKeysRequest:
    return m.ShareKeysRequest(message.run_id, message.round, tuple(sealed_shares_from_proto(x) for x in message.shares))


def masked_input_header_to_proto(header: m.MaskedInputHeader) -> fed_pb.MaskedInputHeader:
    return fed_pb.MaskedInputHeader(
        run_id=header.run_id, round=header.round, sha256=header.sha256, total_bytes=header.total_bytes
    )


def masked_input_header_from_proto(message: fed_pb.MaskedInputHeader) -> m.MaskedInputHeader:
    return m.MaskedInputHeader(message.run_id, message.round, message.sha256, message.total_bytes)


def masked_input_chunks_to_proto(
    header: m.MaskedInputHeader, data: bytes, chunk_bytes: int
) -> Iterator[fed_pb.MaskedInputChunk]:
    """The SubmitMaskedInput stream: the header, then the packed vector in slices of at most ``chunk_bytes``."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be >= 1")
    yield fed_pb.MaskedInputChunk(header=masked_input_header_to_proto(header))
    for start in range(0, len(data), chunk_bytes):
        yield fed_pb.MaskedInputChunk(data=data[start : start + chunk_bytes])


def masked_input_chunk_from_proto(message: fed_pb.MaskedInputChunk) -> m.MaskedInputHeader | bytes | None:
    """The stream's header, the next slice of data, or ``None`` for an empty chunk."""
    kind = message.WhichOneof("kind")
    if kind == "header":
        return masked_input_header_from_proto(message.header)
    if kind == "data":
        return message.data
    return None


def unmask_request_to_proto(request: m.UnmaskRequest) -> fed_pb.UnmaskRequest:
    return fed_pb.UnmaskRequest(
        run_id=request.run_id, round=request.round, shares=[revealed_share_to_proto(x) for x in request.shares]
    )


def unmask_request_from_proto(message: fed_pb.UnmaskRequest) -> m.UnmaskRequest:
    return m.UnmaskRequest(message.run_id, message.round, tuple(revealed_share_from_proto(x) for x in message.shares))


def secure_reply_to_proto(reply: m.SecurePhaseReply) -> fed_pb.SecurePhaseResponse:
    return fed_pb.SecurePhaseResponse(accepted=reply.accepted, duplicate=reply.duplicate, message=reply.message)


def secure_reply_from_proto(message: fed_pb.SecurePhaseResponse) -> m.SecurePhaseReply:
    return m.SecurePhaseReply(message.accepted, message.duplicate, message.message)


def get_model_request_to_proto(request: m.GetModelRequest) -> fed_pb.GetModelRequest:
    return fed_pb.GetModelRequest(version=request.version)


def get_model_request_from_proto(message: fed_pb.GetModelRequest) -> m.GetModelRequest:
    return m.GetModelRequest(message.version)


def update_header_to_proto(header: m.UpdateHeader) -> fed_pb.UpdateHeader:
    message = fed_pb.UpdateHeader(
        run_id=header.run_id,
        round=header.round,
        base_version=header.base_version,
        num_samples=header.num_samples,
        metrics={str(k): float(v) for k, v in header.metrics.items()},
        sha256=header.sha256,
        total_bytes=header.total_bytes,
        site=header.site,
    )
    if header.codec is not None:
        message.codec.CopyFrom(codec_config_to_proto(header.codec))
    if header.privacy is not None:
        message.privacy.CopyFrom(privacy_ledger_to_proto(header.privacy))
    return message


def update_header_from_proto(message: fed_pb.UpdateHeader) -> m.UpdateHeader:
    """Raises ``ValueError`` (prefixed "header codec:") for a codec this build cannot read."""
    try:
        codec = codec_config_from_proto(message.codec) if message.HasField("codec") else None
    except ValueError as exc:
        raise ValueError(f"header codec: {exc}") from exc
    try:
        privacy = privacy_ledger_from_proto(message.privacy) if message.HasField("privacy") else None
    except ValueError as exc:
        raise ValueError(f"header privacy: {exc}") from exc
    return m.UpdateHeader(
        run_id=message.run_id,
        round=message.round,
        base_version=message.base_version,
        num_samples=message.num_samples,
        metrics=dict(message.metrics),
        codec=codec,
        sha256=message.sha256,
        total_bytes=message.total_bytes,
        site=message.site,
        privacy=privacy,
    )


def update_chunks_to_proto(header: m.UpdateHeader, payload: bytes, chunk_bytes: int) -> Iterator[fed_pb.UpdateChunk]:
    """The SubmitUpdate stream: the header, then the payload in slices of at most ``chunk_bytes``."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    yield fed_pb.UpdateChunk(header=update_header_to_proto(header))
    for start in range(0, len(payload), chunk_bytes):
        yield fed_pb.UpdateChunk(data=payload[start : start + chunk_bytes])


def update_chunk_kind(message: fed_pb.UpdateChunk) -> str | None:
    """``"header"``, ``"data"`` or ``None`` (an empty chunk)."""
    return message.WhichOneof("kind")


def update_chunk_data(message: fed_pb.UpdateChunk) -> bytes:
    return bytes(message.data)


def submit_reply_to_proto(reply: m.SubmitReply) -> fed_pb.SubmitUpdateResponse:
    return fed_pb.SubmitUpdateResponse(accepted=reply.accepted, duplicate=reply.duplicate, message=reply.message)


def submit_reply_from_proto(message: fed_pb.SubmitUpdateResponse) -> m.SubmitReply:
    return m.SubmitReply(message.accepted, message.duplicate, message.message)


def heartbeat_request_to_proto(request: m.HeartbeatRequest) -> fed_pb.HeartbeatRequest:
    return fed_pb.HeartbeatRequest(
        run_id=request.run_id,
        activity=_ACTIVITY[request.activity],  # type: ignore[arg-type]
        round=max(0, request.round),
    )


def heartbeat_request_from_proto(message: fed_pb.HeartbeatRequest) -> m.HeartbeatRequest:
    # The activity is informational: an unknown value (a newer site) reads as "idle" rather than failing.
    activity: SiteActivity = next((name for name, num in _ACTIVITY.items() if num == message.activity), "idle")
    return m.HeartbeatRequest(message.run_id, activity, message.round)


def heartbeat_reply_to_proto(reply: m.HeartbeatReply) -> fed_pb.HeartbeatResponse:
    message = fed_pb.HeartbeatResponse(abandon_round=reply.abandon_round)
    _set_time(message.server_time, reply.server_time)
    return message


def heartbeat_reply_from_proto(message: fed_pb.HeartbeatResponse) -> m.HeartbeatReply:
    return m.HeartbeatReply(_time(message, "server_time"), message.abandon_round)


# --- Admin service ------------------------------------------------------------------------------------


def start_run_request_to_proto(request: m.StartRunRequest) -> admin_pb.StartRunRequest:
    return admin_pb.StartRunRequest(
        config=run_config_to_proto(request.config), name=request.name, initial_version=request.initial_version
    )


def start_run_request_from_proto(message: admin_pb.StartRunRequest) -> m.StartRunRequest:
    """Raises ``ValueError`` naming what is wrong with the run config."""
    return m.StartRunRequest(run_config_from_proto(message.config), message.name, message.initial_version)


def start_run_reply_to_proto(reply: m.StartRunReply) -> admin_pb.StartRunResponse:
    return admin_pb.StartRunResponse(run_id=reply.run_id, initial_version=reply.initial_version)


def start_run_reply_from_proto(message: admin_pb.StartRunResponse) -> m.StartRunReply:
    return m.StartRunReply(message.run_id, message.initial_version)


def stop_run_request_to_proto(request: m.StopRunRequest) -> admin_pb.StopRunRequest:
    return admin_pb.StopRunRequest(run_id=request.run_id, reason=request.reason)


def stop_run_request_from_proto(message: admin_pb.StopRunRequest) -> m.StopRunRequest:
    return m.StopRunRequest(message.run_id, message.reason)


def stop_run_reply_to_proto(reply: m.StopRunReply) -> admin_pb.StopRunResponse:
    return admin_pb.StopRunResponse(state=_enum_to_proto(_RUN_STATE, reply.state))


def stop_run_reply_from_proto(message: admin_pb.StopRunResponse) -> m.StopRunReply:
    return m.StopRunReply(_wire_enum_from_proto(_RUN_STATE, message.state, "run state"))


def list_runs_request_to_proto(_request: m.ListRunsRequest) -> admin_pb.ListRunsRequest:
    return admin_pb.ListRunsRequest()


def list_runs_request_from_proto(_message: admin_pb.ListRunsRequest) -> m.ListRunsRequest:
    return m.ListRunsRequest()


def get_run_status_request_to_proto(request: m.GetRunStatusRequest) -> admin_pb.GetRunStatusRequest:
    return admin_pb.GetRunStatusRequest(run_id=request.run_id)


def get_run_status_request_from_proto(message: admin_pb.GetRunStatusRequest) -> m.GetRunStatusRequest:
    return m.GetRunStatusRequest(message.run_id)


def participation_to_proto(part: m.SiteParticipation) -> admin_pb.SiteParticipation:
    message = admin_pb.SiteParticipation(
        site=part.site,
        state=_enum_to_proto(_PARTICIPATION, part.state),
        num_samples=part.num_samples,
        payload_bytes=part.payload_bytes,
        metrics=dict(part.metrics),
        message=part.message,
    )
    _set_time(message.received_at, part.received_at)
    if part.privacy is not None:
        message.privacy.CopyFrom(privacy_ledger_to_proto(part.privacy))
    return message


def participation_from_proto(message: admin_pb.SiteParticipation) -> m.SiteParticipation:
    return m.SiteParticipation(
        site=message.site,
        state=_wire_enum_from_proto(_PARTICIPATION, message.state, "participation state"),
        num_samples=message.num_samples,
        payload_bytes=message.payload_bytes,
        received_at=_time(message, "received_at"),
        metrics=dict(message.metrics),
        message=message.message,
        privacy=privacy_ledger_from_proto(message.privacy) if message.HasField("privacy") else None,
    )


def round_status_to_proto(status: m.RoundStatus) -> admin_pb.RoundStatus:
    message = admin_pb.RoundStatus(
        round=status.round,
        state=_enum_to_proto(_ROUND_STATE, status.state),
        opened_at=_timestamp(status.opened_at),
        deadline=_timestamp(status.deadline),
        input_version=status.input_version,
        output_version=status.output_version,
        participants=[participation_to_proto(p) for p in status.participants],
        metrics=dict(status.metrics),
        message=status.message,
    )
    _set_time(message.closed_at, status.closed_at)
    return message


def round_status_from_proto(message: admin_pb.RoundStatus) -> m.RoundStatus:
    return m.RoundStatus(
        round=message.round,
        state=_wire_enum_from_proto(_ROUND_STATE, message.state, "round state"),
        opened_at=_required_time(message, "opened_at"),
        deadline=_required_time(message, "deadline"),
        closed_at=_time(message, "closed_at"),
        input_version=message.input_version,
        output_version=message.output_version,
        participants=tuple(participation_from_proto(p) for p in message.participants),
        metrics=dict(message.metrics),
        message=message.message,
    )


def run_status_to_proto(status: m.RunStatus) -> admin_pb.RunStatus:
    message = admin_pb.RunStatus(
        run_id=status.run_id,
        name=status.name,
        state=_enum_to_proto(_RUN_STATE, status.state),
        config=run_config_to_proto(status.config),
        current_round=status.current_round,
        latest_version=status.latest_version,
        created_at=_timestamp(status.created_at),
        message=status.message,
        rounds=[round_status_to_proto(r) for r in status.rounds],
    )
    _set_time(message.finished_at, status.finished_at)
    return message


def run_status_from_proto(message: admin_pb.RunStatus) -> m.RunStatus:
    return m.RunStatus(
        run_id=message.run_id,
        name=message.name,
        state=_wire_enum_from_proto(_RUN_STATE, message.state, "run state"),
        config=run_config_from_proto(message.config),
        current_round=message.current_round,
        latest_version=message.latest_version,
        created_at=_required_time(message, "created_at"),
        finished_at=_time(message, "finished_at"),
        message=message.message,
        rounds=tuple(round_status_from_proto(r) for r in message.rounds),
    )


def run_status_to_json(status: m.RunStatus) -> dict[str, Any]:
    """A run status in protobuf's JSON mapping (the stable form ``runs status --json`` prints)."""
    return dict(MessageToDict(run_status_to_proto(status), preserving_proto_field_name=True))


def list_runs_reply_to_proto(reply: m.ListRunsReply) -> admin_pb.ListRunsResponse:
    return admin_pb.ListRunsResponse(runs=[run_status_to_proto(r) for r in reply.runs])


def list_runs_reply_from_proto(message: admin_pb.ListRunsResponse) -> m.ListRunsReply:
    return m.ListRunsReply(tuple(run_status_from_proto(r) for r in message.runs))


def list_versions_request_to_proto(request: m.ListVersionsRequest) -> admin_pb.ListVersionsRequest:
    return admin_pb.ListVersionsRequest(
        run_id=request.run_id, page_size=request.page_size, page_token=request.page_token
    )


def list_versions_request_from_proto(message: admin_pb.ListVersionsRequest) -> m.ListVersionsRequest:
    return m.ListVersionsRequest(message.run_id, message.page_size, message.page_token)


def fam_version_to_proto(version: m.FamVersion) -> admin_pb.FamVersion:
    return admin_pb.FamVersion(
        version=version.version,
        run_id=version.run_id,
        round=version.round,
        parent_version=version.parent_version,
        sha256=version.sha256,
        size_bytes=version.size_bytes,
        format=_model_format_to_proto(version.format),
        created_at=_timestamp(version.created_at),
        contributions=[
            admin_pb.VersionContribution(site=c.site, num_samples=c.num_samples, payload_bytes=c.payload_bytes)
            for c in version.contributions
        ],
    )


def fam_version_from_proto(message: admin_pb.FamVersion) -> m.FamVersion:
    return m.FamVersion(
        version=message.version,
        run_id=message.run_id,
        round=message.round,
        parent_version=message.parent_version,
        sha256=message.sha256,
        size_bytes=message.size_bytes,
        created_at=_required_time(message, "created_at"),
        contributions=tuple(
            m.VersionContribution(c.site, c.num_samples, c.payload_bytes) for c in message.contributions
        ),
        format=_model_format_from_proto(message.format),
    )


def list_versions_reply_to_proto(reply: m.ListVersionsReply) -> admin_pb.ListVersionsResponse:
    return admin_pb.ListVersionsResponse(
        versions=[fam_version_to_proto(v) for v in reply.versions], next_page_token=reply.next_page_token
    )


def list_versions_reply_from_proto(message: admin_pb.ListVersionsResponse) -> m.ListVersionsReply:
    return m.ListVersionsReply(tuple(fam_version_from_proto(v) for v in message.versions), message.next_page_token)


def export_version_request_to_proto(request: m.ExportVersionRequest) -> admin_pb.ExportVersionRequest:
    return admin_pb.ExportVersionRequest(version=request.version)


def export_version_request_from_proto(message: admin_pb.ExportVersionRequest) -> m.ExportVersionRequest:
    return m.ExportVersionRequest(message.version)


def site_to_proto(site: m.Site) -> admin_pb.Site:
    message = admin_pb.Site(
        name=site.name,
        description=site.description,
        enabled=site.enabled,
        enrolled_at=_timestamp(site.enrolled_at),
        software_version=site.software_version,
        site_info=site_info_to_proto(site.site_info),
    )
    _set_time(message.last_seen, site.last_seen)
    return message


def site_from_proto(message: admin_pb.Site) -> m.Site:
    return m.Site(
        name=message.name,
        description=message.description,
        enabled=message.enabled,
        enrolled_at=_required_time(message, "enrolled_at"),
        last_seen=_time(message, "last_seen"),
        software_version=message.software_version,
        site_info=site_info_from_proto(message.site_info),
    )


def enrol_site_request_to_proto(request: m.EnrolSiteRequest) -> admin_pb.EnrolSiteRequest:
    message = admin_pb.EnrolSiteRequest(site=request.site, description=request.description)
    if request.max_samples is not None:
        message.max_samples = request.max_samples
    return message


def enrol_site_request_from_proto(message: admin_pb.EnrolSiteRequest) -> m.EnrolSiteRequest:
    max_samples = message.max_samples if message.HasField("max_samples") else None
    if max_samples is not None and max_samples < 1:
        raise ValueError("max_samples must be >= 1 when given")
    return m.EnrolSiteRequest(message.site, message.description, max_samples)


def enrol_site_reply_to_proto(reply: m.EnrolSiteReply) -> admin_pb.EnrolSiteResponse:
    return admin_pb.EnrolSiteResponse(site=site_to_proto(reply.site), token=reply.token)


def enrol_site_reply_from_proto(message: admin_pb.EnrolSiteResponse) -> m.EnrolSiteReply:
    return m.EnrolSiteReply(site_from_proto(message.site), message.token)


def rotate_site_token_request_to_proto(request: m.RotateSiteTokenRequest) -> admin_pb.RotateSiteTokenRequest:
    message = admin_pb.RotateSiteTokenRequest(site=request.site)
    if request.grace_s is not None:
        message.grace_seconds = request.grace_s
    return message


def rotate_site_token_request_from_proto(message: admin_pb.RotateSiteTokenRequest) -> m.RotateSiteTokenRequest:
    grace = message.grace_seconds if message.HasField("grace_seconds") else None
    if grace is not None and not (math.isfinite(grace) and grace >= 0):
        raise ValueError(f"grace_seconds must be a finite number >= 0, got {grace}")
    return m.RotateSiteTokenRequest(message.site, grace)


def rotate_site_token_reply_to_proto(reply: m.RotateSiteTokenReply) -> admin_pb.RotateSiteTokenResponse:
    message = admin_pb.RotateSiteTokenResponse(site=site_to_proto(reply.site), token=reply.token)
    _set_time(message.previous_token_expires_at, reply.previous_token_expires_at)
    return message


def rotate_site_token_reply_from_proto(message: admin_pb.RotateSiteTokenResponse) -> m.RotateSiteTokenReply:
    return m.RotateSiteTokenReply(
        site_from_proto(message.site), message.token, _time(message, "previous_token_expires_at")
    )


def list_sites_request_to_proto(request: m.ListSitesRequest) -> admin_pb.ListSitesRequest:
    return admin_pb.ListSitesRequest(page_size=request.page_size, page_token=request.page_token)


def list_sites_request_from_proto(message: admin_pb.ListSitesRequest) -> m.ListSitesRequest:
    return m.ListSitesRequest(message.page_size, message.page_token)


def list_sites_reply_to_proto(reply: m.ListSitesReply) -> admin_pb.ListSitesResponse:
    return admin_pb.ListSitesResponse(
        sites=[site_to_proto(s) for s in reply.sites], next_page_token=reply.next_page_token
    )


def list_sites_reply_from_proto(message: admin_pb.ListSitesResponse) -> m.ListSitesReply:
    return m.ListSitesReply(tuple(site_from_proto(s) for s in message.sites), message.next_page_token)


def revoke_site_request_to_proto(request: m.RevokeSiteRequest) -> admin_pb.RevokeSiteRequest:
    return admin_pb.RevokeSiteRequest(site=request.site, reason=request.reason)


def revoke_site_request_from_proto(message: admin_pb.RevokeSiteRequest) -> m.RevokeSiteRequest:
    return m.RevokeSiteRequest(message.site, message.reason)


def revoke_site_reply_to_proto(reply: m.RevokeSiteReply) -> admin_pb.RevokeSiteResponse:
    return admin_pb.RevokeSiteResponse(site=site_to_proto(reply.site))


def revoke_site_reply_from_proto(message: admin_pb.RevokeSiteResponse) -> m.RevokeSiteReply:
    return m.RevokeSiteReply(site_from_proto(message.site))


# --- the table of pairs -------------------------------------------------------------------------------

# Each message type and its (to_proto, from_proto, protobuf class); tests/federation/test_serde.py
# round-trips every entry and checks that every dataclass of ``messages`` has one.
CONVERTERS: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any], type]] = {
    RunConfig: (run_config_to_proto, run_config_from_proto, pb.RunConfig),
    CodecConfig: (codec_config_to_proto, codec_config_from_proto, pb.CodecConfig),
    TrainConfig: (train_config_to_proto, train_config_from_proto, pb.TrainConfig),
    BackboneRef: (backbone_ref_to_proto, backbone_ref_from_proto, pb.BackboneSpec),
    m.SiteInfo: (site_info_to_proto, site_info_from_proto, pb.SiteInfo),
    m.ModelHeader: (model_header_to_proto, model_header_from_proto, pb.ModelHeader),
    m.JoinRequest: (join_request_to_proto, join_request_from_proto, fed_pb.JoinRequest),
    m.JoinReply: (join_reply_to_proto, join_reply_from_proto, fed_pb.JoinResponse),
    m.PollTaskRequest: (poll_request_to_proto, poll_request_from_proto, fed_pb.PollTaskRequest),
    m.TrainTask: (task_to_proto, task_from_proto, fed_pb.Task),
    m.WaitTask: (task_to_proto, task_from_proto, fed_pb.Task),
    m.DoneTask: (task_to_proto, task_from_proto, fed_pb.Task),
    m.SecureAdvertiseTask: (task_to_proto, task_from_proto, fed_pb.Task),
    m.SecureShareKeysTask: (task_to_proto, task_from_proto, fed_pb.Task),
    m.SecureMaskedInputTask: (task_to_proto, task_from_proto, fed_pb.Task),
    m.SecureUnmaskTask: (task_to_proto, task_from_proto, fed_pb.Task),
    m.AdvertiseKeysRequest: (
        advertise_keys_request_to_proto,
        advertise_keys_request_from_proto,
        fed_pb.AdvertiseKeysRequest,
    ),
    m.ShareKeysRequest: (share_keys_request_to_proto, share_keys_request_from_proto, fed_pb.ShareKeysRequest),
    m.MaskedInputHeader: (masked_input_header_to_proto, masked_input_header_from_proto, fed_pb.MaskedInputHeader),
    m.UnmaskRequest: (unmask_request_to_proto, unmask_request_from_proto, fed_pb.UnmaskRequest),
    m.SecurePhaseReply: (secure_reply_to_proto, secure_reply_from_proto, fed_pb.SecurePhaseResponse),
    SecureAggregationConfig: (secure_config_to_proto, secure_config_from_proto, pb.SecureAggregationConfig),
    m.GetModelRequest: (get_model_request_to_proto, get_model_request_from_proto, fed_pb.GetModelRequest),
    m.UpdateHeader: (update_header_to_proto, update_header_from_proto, fed_pb.UpdateHeader),
    m.SubmitReply: (submit_reply_to_proto, submit_reply_from_proto, fed_pb.SubmitUpdateResponse),
    m.HeartbeatRequest: (heartbeat_request_to_proto, heartbeat_request_from_proto, fed_pb.HeartbeatRequest),
    m.HeartbeatReply: (heartbeat_reply_to_proto, heartbeat_reply_from_proto, fed_pb.HeartbeatResponse),
    m.StartRunRequest: (start_run_request_to_proto, start_run_request_from_proto, admin_pb.StartRunRequest),
    m.StartRunReply: (start_run_reply_to_proto, start_run_reply_from_proto, admin_pb.StartRunResponse),
    m.StopRunRequest: (stop_run_request_to_proto, stop_run_request_from_proto, admin_pb.StopRunRequest),
    m.StopRunReply: (stop_run_reply_to_proto, stop_run_reply_from_proto, admin_pb.StopRunResponse),
    m.ListRunsRequest: (list_runs_request_to_proto, list_runs_request_from_proto, admin_pb.ListRunsRequest),
    m.ListRunsReply: (list_runs_reply_to_proto, list_runs_reply_from_proto, admin_pb.ListRunsResponse),
    m.GetRunStatusRequest: (
        get_run_status_request_to_proto,
        get_run_status_request_from_proto,
        admin_pb.GetRunStatusRequest,
    ),
    m.RunStatus: (run_status_to_proto, run_status_from_proto, admin_pb.RunStatus),
    m.RoundStatus: (round_status_to_proto, round_status_from_proto, admin_pb.RoundStatus),
    m.SiteParticipation: (participation_to_proto, participation_from_proto, admin_pb.SiteParticipation),
    m.ListVersionsRequest: (
        list_versions_request_to_proto,
        list_versions_request_from_proto,
        admin_pb.ListVersionsRequest,
    ),
    m.ListVersionsReply: (list_versions_reply_to_proto, list_versions_reply_from_proto, admin_pb.ListVersionsResponse),
    m.FamVersion: (fam_version_to_proto, fam_version_from_proto, admin_pb.FamVersion),
    m.ExportVersionRequest: (
        export_version_request_to_proto,
        export_version_request_from_proto,
        admin_pb.ExportVersionRequest,
    ),
    m.Site: (site_to_proto, site_from_proto, admin_pb.Site),
    m.EnrolSiteRequest: (enrol_site_request_to_proto, enrol_site_request_from_proto, admin_pb.EnrolSiteRequest),
    m.EnrolSiteReply: (enrol_site_reply_to_proto, enrol_site_reply_from_proto, admin_pb.EnrolSiteResponse),
    m.RotateSiteTokenRequest: (
        rotate_site_token_request_to_proto,
        rotate_site_token_request_from_proto,
        admin_pb.RotateSiteTokenRequest,
    ),
    m.RotateSiteTokenReply: (
        rotate_site_token_reply_to_proto,
        rotate_site_token_reply_from_proto,
        admin_pb.RotateSiteTokenResponse,
    ),
    m.ListSitesRequest: (list_sites_request_to_proto, list_sites_request_from_proto, admin_pb.ListSitesRequest),
    m.ListSitesReply: (list_sites_reply_to_proto, list_sites_reply_from_proto, admin_pb.ListSitesResponse),
    m.RevokeSiteRequest: (revoke_site_request_to_proto, revoke_site_request_from_proto, admin_pb.RevokeSiteRequest),
    m.RevokeSiteReply: (revoke_site_reply_to_proto, revoke_site_reply_from_proto, admin_pb.RevokeSiteResponse),
}
# Carried inside other messages only (their pairs are those of their containers).
NESTED_ONLY = frozenset({m.VersionContribution})
