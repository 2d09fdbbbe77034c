import datetime

from fedmedclip.rpc.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SiteActivity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SITE_ACTIVITY_UNSPECIFIED: _ClassVar[SiteActivity]
    SITE_ACTIVITY_IDLE: _ClassVar[SiteActivity]
    SITE_ACTIVITY_EMBEDDING: _ClassVar[SiteActivity]
    SITE_ACTIVITY_TRAINING: _ClassVar[SiteActivity]
    SITE_ACTIVITY_UPLOADING: _ClassVar[SiteActivity]
    SITE_ACTIVITY_BUDGET_SPENT: _ClassVar[SiteActivity]
SITE_ACTIVITY_UNSPECIFIED: SiteActivity
SITE_ACTIVITY_IDLE: SiteActivity
SITE_ACTIVITY_EMBEDDING: SiteActivity
SITE_ACTIVITY_TRAINING: SiteActivity
SITE_ACTIVITY_UPLOADING: SiteActivity
SITE_ACTIVITY_BUDGET_SPENT: SiteActivity

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
    __slots__ = ("train", "wait", "done")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    train: TrainTask
    wait: WaitTask
    done: DoneTask
    def __init__(self, train: _Optional[_Union[TrainTask, _Mapping]] = ..., wait: _Optional[_Union[WaitTask, _Mapping]] = ..., done: _Optional[_Union[DoneTask, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("run_id", "round", "base_version", "num_samples", "metrics", "codec", "sha256", "total_bytes", "site", "privacy")
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
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    round: int
    base_version: int
    num_samples: int
    metrics: _containers.ScalarMap[str, float]
    codec: _common_pb2.CodecConfig
    sha256: str
    total_bytes: int
    site: str
    privacy: _common_pb2.PrivacyLedger
    def __init__(self, run_id: _Optional[str] = ..., round: _Optional[int] = ..., base_version: _Optional[int] = ..., num_samples: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., codec: _Optional[_Union[_common_pb2.CodecConfig, _Mapping]] = ..., sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., site: _Optional[str] = ..., privacy: _Optional[_Union[_common_pb2.PrivacyLedger, _Mapping]] = ...) -> None: ...

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
