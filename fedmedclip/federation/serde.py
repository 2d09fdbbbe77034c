"""Conversions between library settings and their protobuf messages: the only module that imports them.

Settings messages mark fields ``optional``; a field the sender did not set takes the library default, so a
peer built against an older minor protocol version stays compatible. Enum values this build does not know
(sent by a newer peer) are refused with a clear message instead of being guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import duration_pb2

from fedmedclip.federation.aggregate import Weighting
from fedmedclip.federation.codec import CodecConfig, Compression, Quantization
from fedmedclip.federation.run_config import BackboneRef, LatePolicy, RunConfig
from fedmedclip.rpc.v1 import common_pb2 as pb
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
