import datetime

from fedmedclip.rpc.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SecretKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECRET_KIND_UNSPECIFIED: _ClassVar[SecretKind]
    SECRET_KIND_SELF_SEED: _ClassVar[SecretKind]
    SECRET_KIND_MASK_KEY: _ClassVar[SecretKind]

class SiteActivity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SITE_ACTIVITY_UNSPECIFIED: _ClassVar[SiteActivity]
    SITE_ACTIVITY_IDLE: _ClassVar[SiteActivity]
    SITE_ACTIVITY_EMBEDDING: _ClassVar[SiteActivity]
    SITE_ACTIVITY_TRAINING: _ClassVar[SiteActivity]
    SITE_ACTIVITY_UPLOADING: _ClassVar[SiteActivity]
SECRET_KIND_UNSPECIFIED: SecretKind
SECRET_KIND_SELF_SEED: SecretKind
SECRET_KIND_MASK_KEY: SecretKind
SITE_ACTIVITY_UNSPECIFIED: SiteActivity
SITE_ACTIVITY_IDLE: SiteActivity
SITE_ACTIVITY_EMBEDDING: SiteActivity
SITE_ACTIVITY_TRAINING: SiteActivity
SITE_ACTIVITY_UPLOADING: SiteActivity

class JoinRequest(_message.Message):
    __slots__ = ("protocol_major", "protocol_minor", "software_version", "site_info")
    PROTOCOL_MAJOR_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_MINOR_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SITE_INFO_FIELD_NUMBER: _ClassVar[int]
    protocol_major: int
    protocol_minor: int
    software_version: str
    site_info: _common_pb2.SiteInfo
    def __init__(self, protocol_major: _Optional[int] = ..., protocol_minor: _Optional[int] = ..., software_version: _Optional[str] = ..., site_info: _Optional[_Union[_common_pb2.SiteInfo, _Mapping]] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("site", "run_id", "run_config", "protocol_major", "protocol_minor")
    SITE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_MAJOR_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_MINOR_FIELD_NUMBER: _ClassVar[int]
    site: str
    run_id: str
    run_config: _common_pb2.RunConfig
    protocol_major: int
    protocol_minor: int
    def __init__(self, site: _Optional[str] = ..., run_id: _Optional[str] = ..., run_config: _Optional[_Union[_common_pb2.RunConfig, _Mapping]] = ..., protocol_major: _Optional[int] = ..., protocol_minor: _Optional[int] = ...) -> None: ...

class PollTaskRequest(_message.Message):
    __slots__ = ("run_id", "wait_seconds")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    wait_seconds: int
    def __init__(self, run_id: _Optional[str] = ..., wait_seconds: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("train", "wait", "done", "secure_advertise", "secure_share_keys", "secure_masked_input", "secure_unmask")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    SECURE_ADVERTISE_FIELD_NUMBER: _ClassVar[int]
    SECURE_SHARE_KEYS_FIELD_NUMBER: _ClassVar[int]
    SECURE_MASKED_INPUT_FIELD_NUMBER: _ClassVar[int]
    SECURE_UNMASK_FIELD_NUMBER: _ClassVar[int]
    train: TrainTask
    wait: WaitTask
    done: DoneTask
    secure_advertise: SecureAdvertiseTask
    secure_share_keys: SecureShareKeysTask
    secure_masked_input: SecureMaskedInputTask
    secure_unmask: SecureUnmaskTask
    def __init__(self, train: _Optional[_Union[TrainTask, _Mapping]] = ..., wait: _Optional[_Union[WaitTask, _Mapping]] = ..., done: _Optional[_Union[DoneTask, _Mapping]] = ..., secure_advertise: _Optional[_Union[SecureAdvertiseTask, _Mapping]] = ..., secure_share_keys: _Optional[_Union[SecureShareKeysTask, _Mapping]] = ..., secure_masked_input: _Optional[_Union[SecureMaskedInputTask, _Mapping]] = ..., secure_unmask: _Optional[_Union[SecureUnmaskTask, _Mapping]] = ...) -> None: ...

class SecureAdvertiseTask(_message.Message):
    __slots__ = ("round", "fam_version", "deadline")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    round: int
    fam_version: int
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, round: _Optional[int] = ..., fam_version: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AdvertisedKeys(_message.Message):
    __slots__ = ("site", "channel_public", "mask_public")
    SITE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    site: str
    channel_public: bytes
    mask_public: bytes
    def __init__(self, site: _Optional[str] = ..., channel_public: _Optional[bytes] = ..., mask_public: _Optional[bytes] = ...) -> None: ...

class SecureShareKeysTask(_message.Message):
    __slots__ = ("round", "threshold", "bits", "degree", "graph_seed", "keys", "deadline")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SEED_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    round: int
    threshold: int
    bits: int
    degree: int
    graph_seed: bytes
    keys: _containers.RepeatedCompositeFieldContainer[AdvertisedKeys]
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, round: _Optional[int] = ..., threshold: _Optional[int] = ..., bits: _Optional[int] = ..., degree: _Optional[int] = ..., graph_seed: _Optional[bytes] = ..., keys: _Optional[_Iterable[_Union[AdvertisedKeys, _Mapping]]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SealedShares(_message.Message):
    __slots__ = ("sender", "receiver", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    receiver: str
    ciphertext: bytes
    def __init__(self, sender: _Optional[str] = ..., receiver: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class SecureMaskedInputTask(_message.Message):
    __slots__ = ("round", "shares", "deadline")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    round: int
    shares: _containers.RepeatedCompositeFieldContainer[SealedShares]
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, round: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[SealedShares, _Mapping]]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SecureUnmaskTask(_message.Message):
    __slots__ = ("round", "survivors", "dropped", "deadline")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    round: int
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, round: _Optional[int] = ..., survivors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AdvertiseKeysRequest(_message.Message):
    __slots__ = ("run_id", "round", "keys")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    keys: AdvertisedKeys
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., keys: _Optional[_Union[AdvertisedKeys, _Mapping]] = ...) -> None: ...

class ShareKeysRequest(_message.Message):
    __slots__ = ("run_id", "round", "shares")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    shares: _containers.RepeatedCompositeFieldContainer[SealedShares]
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[SealedShares, _Mapping]]] = ...) -> None: ...

class MaskedInputChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: MaskedInputHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[MaskedInputHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class MaskedInputHeader(_message.Message):
    __slots__ = ("run_id", "round", "sha256", "total_bytes")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    sha256: str
    total_bytes: int
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class RevealedShare(_message.Message):
    __slots__ = ("owner", "kind", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    kind: SecretKind
    share: bytes
    def __init__(self, owner: _Optional[str] = ..., kind: _Optional[_Union[SecretKind, str]] = ..., share: _Optional[bytes] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("run_id", "round", "shares")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ...) -> None: ...

class SecurePhaseResponse(_message.Message):
    __slots__ = ("accepted", "duplicate", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    duplicate: bool
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., duplicate: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TrainTask(_message.Message):
    __slots__ = ("round", "fam_version", "deadline")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    round: int
    fam_version: int
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, round: _Optional[int] = ..., fam_version: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WaitTask(_message.Message):
    __slots__ = ("retry_after_seconds",)
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    retry_after_seconds: float
    def __init__(self, retry_after_seconds: _Optional[float] = ...) -> None: ...

class DoneTask(_message.Message):
    __slots__ = ("final_version", "reason")
    FINAL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    final_version: int
    reason: str
    def __init__(self, final_version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class UpdateChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UpdateHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UpdateHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class UpdateHeader(_message.Message):
    __slots__ = ("run_id", "round", "base_version", "num_samples", "metrics", "codec", "sha256", "total_bytes", "site")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    base_version: int
    num_samples: int
    metrics: _containers.ScalarMap[str, float]
    codec: _common_pb2.CodecConfig
    sha256: str
    total_bytes: int
    site: str
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., base_version: _Optional[int] = ..., num_samples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., codec: _Optional[_Union[_common_pb2.CodecConfig, _Mapping]] = ..., sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., site: _Optional[str] = ...) -> None: ...

class SubmitUpdateResponse(_message.Message):
    __slots__ = ("accepted", "duplicate", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    duplicate: bool
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., duplicate: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("run_id", "activity", "round")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    activity: SiteActivity
    round: int
    def __init__(self, run_id: _Optional[str] = ..., activity: _Optional[_Union[SiteActivity, str]] = ..., round: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("server_time", "abandon_round")
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    ABANDON_ROUND_FIELD_NUMBER: _ClassVar[int]
    server_time: _timestamp_pb2.Timestamp
    abandon_round: bool
    def __init__(self, server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., abandon_round: _Optional[bool] = ...) -> None: ...
