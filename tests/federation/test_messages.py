"""Every protocol message survives the wire: dataclass → protobuf bytes → dataclass is the identity.

``serde.CONVERTERS`` lists each message with its pair of conversions; these tests round-trip a sample of
every entry through serialised bytes, and fail when a dataclass of ``messages`` has no pair.
"""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fedmedclip.federation import messages as m
from fedmedclip.federation import serde
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.run_config import BackboneRef, RunConfig
from fedmedclip.rpc.v1 import admin_pb2, federation_pb2
from fedmedclip.secagg import shamir
from fedmedclip.secagg.config import SecureAggregationConfig
from fedmedclip.secagg.protocol import SecretKind
from fedmedclip.training.config import TrainConfig

T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
CODEC = CodecConfig(rho=0.25, quantization="fp16", compression="zlib")
TRAIN = TrainConfig(batch_size=16, local_epochs=2, contrastive="prototype", betas=(0.8, 0.95), use_kd=False)
BACKBONE = BackboneRef(model="ViT-B-16", weights=None, weights_digest="ab" * 32, preprocess="paper", seed=7)
CONFIG = RunConfig(
    embed_dim=32,
    rounds=3,
    min_sites=2,
    round_timeout_s=12.5,
    late_policy="reopen",
    weighting="uniform",
    norm_bound=4.0,
    fam_seed=11,
    backbone=BACKBONE,
    train=TRAIN,
    codec=CODEC,
    prompt_templates=("a scan of {class}",),
    secure_aggregation=SecureAggregationConfig(
        enabled=True, threshold=3, degree=6, clip_norm=2.0, weight_cap=9, row_fraction=0.5, phase_timeout_s=7.5
    ),
)
KEYS = m.AdvertisedKeys("site-a", b"\x01" * 32, b"\x02" * 32)
SEALED = m.SealedShares("site-a", "site-b", b"\x03" * 164)
SHARE = shamir.split(b"\x04" * 32, 2, [1, 2])[0]
INFO = m.SiteInfo(platform="Linux", torch_version="2.4", device="cuda:0")
SITE = m.Site("site-a", "Hospital A", True, T0, T0 + timedelta(seconds=5), "0.1.0", INFO)
REVOKED = m.Site("site-b", "", False, T0)
PARTS = (
    m.SiteParticipation("site-a", m.ParticipationState.ACCEPTED, 90, 1234, T0, {"loss": 0.5}),
    m.SiteParticipation("site-b", m.ParticipationState.REJECTED, message="stale base version"),
    m.SiteParticipation("site-c", m.ParticipationState.MISSING),
)
CLOSED = m.RoundStatus(1, m.RoundState.CLOSED, T0, T0 + timedelta(minutes=10), T0, 1, 2, PARTS, {"acc": 0.75})
OPEN = m.RoundStatus(2, m.RoundState.OPEN, T0, T0 + timedelta(minutes=10), None, 2, 0, message="reopened")
STATUS = m.RunStatus("r1", "demo", m.RunState.RUNNING, CONFIG, 2, 2, T0, None, "", (CLOSED, OPEN))
FINISHED = m.RunStatus("r0", "", m.RunState.FAILED, CONFIG, 3, 4, T0, T0, "aggregation failed")
VERSION = m.FamVersion(2, "r1", 1, 1, "cd" * 32, 4096, T0, (m.VersionContribution("site-a", 90, 1234),))

SAMPLES: list[Any] = [
    CONFIG,
    RunConfig(embed_dim=8),
    CODEC,
    TRAIN,
    BACKBONE,
    INFO,
    m.ModelHeader(5, "cd" * 32, 3),
    m.ModelHeader(5, "", 0, "unknown(7)"),
    m.JoinRequest((1, 2), "0.1.0", INFO),
    m.JoinReply("site-a", "r1", CONFIG, (1, 0)),
    m.JoinReply("site-a", "", None, (1, 0)),
    m.PollTaskRequest("r1", 30),
    m.TrainTask(3, 9, T0),
    m.TrainTask(3, 9, None),
    m.WaitTask(1.5),
    m.DoneTask(4, "completed"),
    m.GetModelRequest(5),
    SecureAggregationConfig(),
    SecureAggregationConfig(enabled=True, degree="all", precision_bits=9),
    m.SecureAdvertiseTask(2, 5, T0),
    m.SecureShareKeysTask(2, 3, 19, 0, b"seed", (KEYS, m.AdvertisedKeys("site-b", b"\x05" * 32, b"\x06" * 32)), T0),
    m.SecureShareKeysTask(2, 3, 19, 4, b"", (), None),
    m.SecureMaskedInputTask(2, (SEALED,), T0),
    m.SecureUnmaskTask(2, ("site-a", "site-b"), ("site-c",), T0),
    m.AdvertiseKeysRequest("r1", 2, KEYS),
    m.ShareKeysRequest("r1", 2, (SEALED,)),
    m.MaskedInputHeader("r1", 2, "ab" * 32, 4096),
    m.UnmaskRequest(
        "r1",
        2,
        (m.RevealedShare("site-a", SecretKind.SELF_SEED, SHARE), m.RevealedShare("site-c", SecretKind.MASK_KEY, SHARE)),
    ),
    m.SecurePhaseReply(True, False, "ok"),
    m.UpdateHeader("r1", 2, 5, 90, {"val_acc": 0.5}, CODEC, "ab" * 32, 10, "site-a"),
    m.UpdateHeader("r1", 2, 5, 90, {}, None, "ab" * 32, 10),
    m.SubmitReply(True, True, "dup"),
    m.HeartbeatRequest("r1", "uploading", 3),
    m.HeartbeatReply(T0, True),
    m.HeartbeatReply(None, False),
    m.StartRunRequest(CONFIG, "demo", 4),
    m.StartRunReply("r1", 1),
    m.StopRunRequest("r1", "maintenance"),
    *[m.StopRunReply(state) for state in m.RunState],
    m.ListRunsRequest(),
    m.ListRunsReply((FINISHED, dataclasses.replace(STATUS, rounds=()))),
    m.GetRunStatusRequest("r1"),
    STATUS,
    FINISHED,
    CLOSED,
    *[dataclasses.replace(OPEN, state=state) for state in m.RoundState],
    *PARTS,
    m.ListVersionsRequest("r1"),
    m.ListVersionsReply((VERSION,)),
    VERSION,
    m.ExportVersionRequest(2),
    SITE,
    REVOKED,
    m.EnrolSiteRequest("site-a", "Hospital A"),
    m.EnrolSiteReply(SITE, "fmc_token"),
    m.ListSitesRequest(),
    m.ListSitesReply((SITE, REVOKED)),
    m.RevokeSiteRequest("site-b", "lost laptop"),
    m.RevokeSiteReply(REVOKED),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_round_trip_through_wire_bytes(value: Any) -> None:
    to_proto, from_proto, proto_class = serde.CONVERTERS[type(value)]
    message: Any = to_proto(value)
    wire: Any = proto_class
    assert from_proto(wire.FromString(message.SerializeToString())) == value
    assert isinstance(message, proto_class)


def test_every_message_has_a_pair_and_a_sample() -> None:
    declared = {
        obj
        for _, obj in inspect.getmembers(m, inspect.isclass)
        if dataclasses.is_dataclass(obj) and obj.__module__ == m.__name__
    }
    assert declared - serde.NESTED_ONLY <= set(serde.CONVERTERS), "a message without to/from_proto in serde"
    assert set(serde.CONVERTERS) <= {type(v) for v in SAMPLES}, "a converter pair without a round-trip sample"


def test_enums_map_every_wire_value() -> None:
    """Each wire enum value but UNSPECIFIED has a Python member, so the CLI never prints a raw number."""
    wire = {
        m.RunState: admin_pb2.RunState,
        m.RoundState: admin_pb2.RoundState,
        m.ParticipationState: admin_pb2.ParticipationState,
    }
    for python_enum, proto_enum in wire.items():
        assert len(proto_enum.values()) - 1 == len(python_enum)


def test_unknown_or_missing_wire_values_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unknown run state value 9"):
        serde.stop_run_reply_from_proto(admin_pb2.StopRunResponse(state=9))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Site\.enrolled_at is missing"):
        serde.site_from_proto(admin_pb2.Site(name="x"))
    header = federation_pb2.UpdateHeader(run_id="r1")
    header.codec.quantization = 9  # type: ignore[assignment]
    with pytest.raises(ValueError, match="header codec: unknown quantization"):
        serde.update_header_from_proto(header)
    # Heartbeat activity is informational: a newer site's unknown activity reads as idle, not as an error.
    odd = federation_pb2.HeartbeatRequest(run_id="r1", activity=42)  # type: ignore[arg-type]
    assert serde.heartbeat_request_from_proto(odd).activity == "idle"


def test_model_stream_splits_and_reassembles() -> None:
    header = m.ModelHeader(5, "cd" * 32, 10)
    chunks = list(serde.model_chunks_to_proto(header, b"0123456789", chunk_bytes=4))
    read = [serde.model_chunk_from_proto(c) for c in chunks]
    assert read[0] == header and b"".join(x for x in read[1:] if isinstance(x, bytes)) == b"0123456789"
    assert len(chunks) == 4
    with pytest.raises(ValueError, match="chunk_bytes"):
        list(serde.model_chunks_to_proto(header, b"x", chunk_bytes=0))
