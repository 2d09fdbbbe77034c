import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Preprocess(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREPROCESS_UNSPECIFIED: _ClassVar[Preprocess]
    PREPROCESS_CLIP: _ClassVar[Preprocess]
    PREPROCESS_PAPER: _ClassVar[Preprocess]

class Contrastive(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTRASTIVE_UNSPECIFIED: _ClassVar[Contrastive]
    CONTRASTIVE_PAIRWISE: _ClassVar[Contrastive]
    CONTRASTIVE_PROTOTYPE: _ClassVar[Contrastive]

class Quantization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANTIZATION_UNSPECIFIED: _ClassVar[Quantization]
    QUANTIZATION_INT8: _ClassVar[Quantization]
    QUANTIZATION_FP16: _ClassVar[Quantization]
    QUANTIZATION_FP32: _ClassVar[Quantization]

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_UNSPECIFIED: _ClassVar[Compression]
    COMPRESSION_ZSTD: _ClassVar[Compression]
    COMPRESSION_ZLIB: _ClassVar[Compression]
    COMPRESSION_NONE: _ClassVar[Compression]

class AggregationRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_RULE_UNSPECIFIED: _ClassVar[AggregationRule]
    AGGREGATION_RULE_MEAN: _ClassVar[AggregationRule]
    AGGREGATION_RULE_TRIMMED_MEAN: _ClassVar[AggregationRule]
    AGGREGATION_RULE_MEDIAN: _ClassVar[AggregationRule]

class LatePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LATE_POLICY_UNSPECIFIED: _ClassVar[LatePolicy]
    LATE_POLICY_ACCEPT_UNTIL_QUORUM: _ClassVar[LatePolicy]
    LATE_POLICY_REOPEN: _ClassVar[LatePolicy]

class Weighting(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHTING_UNSPECIFIED: _ClassVar[Weighting]
    WEIGHTING_SAMPLES: _ClassVar[Weighting]
    WEIGHTING_UNIFORM: _ClassVar[Weighting]

class ModelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORMAT_UNSPECIFIED: _ClassVar[ModelFormat]
    MODEL_FORMAT_SAFETENSORS: _ClassVar[ModelFormat]
PREPROCESS_UNSPECIFIED: Preprocess
PREPROCESS_CLIP: Preprocess
PREPROCESS_PAPER: Preprocess
CONTRASTIVE_UNSPECIFIED: Contrastive
CONTRASTIVE_PAIRWISE: Contrastive
CONTRASTIVE_PROTOTYPE: Contrastive
QUANTIZATION_UNSPECIFIED: Quantization
QUANTIZATION_INT8: Quantization
QUANTIZATION_FP16: Quantization
QUANTIZATION_FP32: Quantization
COMPRESSION_UNSPECIFIED: Compression
COMPRESSION_ZSTD: Compression
COMPRESSION_ZLIB: Compression
COMPRESSION_NONE: Compression
AGGREGATION_RULE_UNSPECIFIED: AggregationRule
AGGREGATION_RULE_MEAN: AggregationRule
AGGREGATION_RULE_TRIMMED_MEAN: AggregationRule
AGGREGATION_RULE_MEDIAN: AggregationRule
LATE_POLICY_UNSPECIFIED: LatePolicy
LATE_POLICY_ACCEPT_UNTIL_QUORUM: LatePolicy
LATE_POLICY_REOPEN: LatePolicy
WEIGHTING_UNSPECIFIED: Weighting
WEIGHTING_SAMPLES: Weighting
WEIGHTING_UNIFORM: Weighting
MODEL_FORMAT_UNSPECIFIED: ModelFormat
MODEL_FORMAT_SAFETENSORS: ModelFormat

class BackboneSpec(_message.Message):
    __slots__ = ("model", "weights", "weights_digest", "preprocess", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: str
    weights_digest: str
    preprocess: Preprocess
    seed: int
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[str] = ..., weights_digest: _Optional[str] = ..., preprocess: _Optional[_Union[Preprocess, str]] = ..., seed: _Optional[int] = ...) -> None: ...

class TrainConfig(_message.Message):
    __slots__ = ("fam_lr", "head_lr", "lr_decay", "adam_beta1", "adam_beta2", "adam_eps", "weight_decay", "batch_size", "local_epochs", "kd_weight", "kd_temperature", "contrastive", "use_contrastive", "use_head_ce", "use_kd", "head_hidden")
    FAM_LR_FIELD_NUMBER: _ClassVar[int]
    HEAD_LR_FIELD_NUMBER: _ClassVar[int]
    LR_DECAY_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA1_FIELD_NUMBER: _ClassVar[int]
    ADAM_BETA2_FIELD_NUMBER: _ClassVar[int]
    ADAM_EPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    KD_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KD_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    CONTRASTIVE_FIELD_NUMBER: _ClassVar[int]
    USE_CONTRASTIVE_FIELD_NUMBER: _ClassVar[int]
    USE_HEAD_CE_FIELD_NUMBER: _ClassVar[int]
    USE_KD_FIELD_NUMBER: _ClassVar[int]
    HEAD_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    fam_lr: float
    head_lr: float
    lr_decay: float
    adam_beta1: float
    adam_beta2: float
    adam_eps: float
    weight_decay: float
    batch_size: int
    local_epochs: int
    kd_weight: float
    kd_temperature: float
    contrastive: Contrastive
    use_contrastive: bool
    use_head_ce: bool
    use_kd: bool
    head_hidden: int
    def __init__(self, fam_lr: _Optional[float] = ..., head_lr: _Optional[float] = ..., lr_decay: _Optional[float] = ..., adam_beta1: _Optional[float] = ..., adam_beta2: _Optional[float] = ..., adam_eps: _Optional[float] = ..., weight_decay: _Optional[float] = ..., batch_size: _Optional[int] = ..., local_epochs: _Optional[int] = ..., kd_weight: _Optional[float] = ..., kd_temperature: _Optional[float] = ..., contrastive: _Optional[_Union[Contrastive, str]] = ..., use_contrastive: _Optional[bool] = ..., use_head_ce: _Optional[bool] = ..., use_kd: _Optional[bool] = ..., head_hidden: _Optional[int] = ...) -> None: ...

class CodecConfig(_message.Message):
    __slots__ = ("rho", "quantization", "compression")
    RHO_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    rho: float
    quantization: Quantization
    compression: Compression
    def __init__(self, rho: _Optional[float] = ..., quantization: _Optional[_Union[Quantization, str]] = ..., compression: _Optional[_Union[Compression, str]] = ...) -> None: ...

class RunConfig(_message.Message):
    __slots__ = ("backbone", "train", "codec", "rounds", "embed_dim", "min_sites", "round_timeout", "prompt_templates", "fam_seed", "late_policy", "weighting", "norm_bound", "privacy", "max_samples_per_site", "clip_norm", "aggregation_rule", "trim_fraction", "secure_aggregation")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    EMBED_DIM_FIELD_NUMBER: _ClassVar[int]
    MIN_SITES_FIELD_NUMBER: _ClassVar[int]
    ROUND_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    FAM_SEED_FIELD_NUMBER: _ClassVar[int]
    LATE_POLICY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTING_FIELD_NUMBER: _ClassVar[int]
    NORM_BOUND_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_PER_SITE_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_RULE_FIELD_NUMBER: _ClassVar[int]
    TRIM_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SECURE_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    backbone: BackboneSpec
    train: TrainConfig
    codec: CodecConfig
    rounds: int
    embed_dim: int
    min_sites: int
    round_timeout: _duration_pb2.Duration
    prompt_templates: _containers.RepeatedScalarFieldContainer[str]
    fam_seed: int
    late_policy: LatePolicy
    weighting: Weighting
    norm_bound: float
    privacy: PrivacyConfig
    max_samples_per_site: int
    clip_norm: float
    aggregation_rule: AggregationRule
    trim_fraction: float
    secure_aggregation: SecureAggregationConfig
    def __init__(self, backbone: _Optional[_Union[BackboneSpec, _Mapping]] = ..., train: _Optional[_Union[TrainConfig, _Mapping]] = ..., codec: _Optional[_Union[CodecConfig, _Mapping]] = ..., rounds: _Optional[int] = ..., embed_dim: _Optional[int] = ..., min_sites: _Optional[int] = ..., round_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., prompt_templates: _Optional[_Iterable[str]] = ..., fam_seed: _Optional[int] = ..., late_policy: _Optional[_Union[LatePolicy, str]] = ..., weighting: _Optional[_Union[Weighting, str]] = ..., norm_bound: _Optional[float] = ..., privacy: _Optional[_Union[PrivacyConfig, _Mapping]] = ..., max_samples_per_site: _Optional[int] = ..., clip_norm: _Optional[float] = ..., aggregation_rule: _Optional[_Union[AggregationRule, str]] = ..., trim_fraction: _Optional[float] = ..., secure_aggregation: _Optional[_Union[SecureAggregationConfig, _Mapping]] = ...) -> None: ...

class PrivacyConfig(_message.Message):
    __slots__ = ("mode", "target_epsilon", "delta", "clip_norm", "noise_multiplier", "batch_size", "site_noise_multiplier", "site_count_noise", "site_target_quantile", "site_initial_clip", "site_clip_lr", "site_sample_rate")
    MODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SITE_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    SITE_COUNT_NOISE_FIELD_NUMBER: _ClassVar[int]
    SITE_TARGET_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    SITE_INITIAL_CLIP_FIELD_NUMBER: _ClassVar[int]
    SITE_CLIP_LR_FIELD_NUMBER: _ClassVar[int]
    SITE_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    mode: str
    target_epsilon: float
    delta: float
    clip_norm: float
    noise_multiplier: float
    batch_size: int
    site_noise_multiplier: float
    site_count_noise: float
    site_target_quantile: float
    site_initial_clip: float
    site_clip_lr: float
    site_sample_rate: float
    def __init__(self, mode: _Optional[str] = ..., target_epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., clip_norm: _Optional[float] = ..., noise_multiplier: _Optional[float] = ..., batch_size: _Optional[int] = ..., site_noise_multiplier: _Optional[float] = ..., site_count_noise: _Optional[float] = ..., site_target_quantile: _Optional[float] = ..., site_initial_clip: _Optional[float] = ..., site_clip_lr: _Optional[float] = ..., site_sample_rate: _Optional[float] = ...) -> None: ...

class PrivacyLedger(_message.Message):
    __slots__ = ("epsilon", "delta", "sigma", "clip_norm", "sample_rate", "steps", "rounds", "target_epsilon")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SIGMA_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    sigma: float
    clip_norm: float
    sample_rate: float
    steps: int
    rounds: int
    target_epsilon: float
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., sigma: _Optional[float] = ..., clip_norm: _Optional[float] = ..., sample_rate: _Optional[float] = ..., steps: _Optional[int] = ..., rounds: _Optional[int] = ..., target_epsilon: _Optional[float] = ...) -> None: ...

class SecureAggregationConfig(_message.Message):
    __slots__ = ("enabled", "threshold", "degree", "clip_norm", "coordinate_bound", "precision_bits", "weight_cap", "row_fraction", "phase_timeout_seconds")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    COORDINATE_BOUND_FIELD_NUMBER: _ClassVar[int]
    PRECISION_BITS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_CAP_FIELD_NUMBER: _ClassVar[int]
    ROW_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PHASE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    threshold: int
    degree: int
    clip_norm: float
    coordinate_bound: float
    precision_bits: int
    weight_cap: int
    row_fraction: float
    phase_timeout_seconds: float
    def __init__(self, enabled: _Optional[bool] = ..., threshold: _Optional[int] = ..., degree: _Optional[int] = ..., clip_norm: _Optional[float] = ..., coordinate_bound: _Optional[float] = ..., precision_bits: _Optional[int] = ..., weight_cap: _Optional[int] = ..., row_fraction: _Optional[float] = ..., phase_timeout_seconds: _Optional[float] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ModelHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ModelHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ModelHeader(_message.Message):
    __slots__ = ("version", "sha256", "total_bytes", "format")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    version: int
    sha256: str
    total_bytes: int
    format: ModelFormat
    def __init__(self, version: _Optional[int] = ..., sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., format: _Optional[_Union[ModelFormat, str]] = ...) -> None: ...

class SiteInfo(_message.Message):
    __slots__ = ("platform", "torch_version", "device")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    platform: str
    torch_version: str
    device: str
    def __init__(self, platform: _Optional[str] = ..., torch_version: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...
