"""The site-side protobuf conversions the agent uses (``fedmedclip.federation.serde``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fedmedclip import PROTOCOL_VERSION
from fedmedclip.federation import messages as m
from fedmedclip.federation import serde
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.rpc.v1 import common_pb2, federation_pb2
from tests.agent.conftest import tiny_run


def test_tasks() -> None:
    train = federation_pb2.Task(train=federation_pb2.TrainTask(round=3, fam_version=9))
    train.train.deadline.FromDatetime(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert serde.task_from_proto(train) == m.TrainTask(3, 9, datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    wait = federation_pb2.Task(wait=federation_pb2.WaitTask(retry_after_seconds=1.5))
    assert serde.task_from_proto(wait) == m.WaitTask(1.5)
    done = federation_pb2.Task(done=federation_pb2.DoneTask(final_version=4, reason="completed"))
    assert serde.task_from_proto(done) == m.DoneTask(4, "completed")
    with pytest.raises(ValueError, match="empty task"):
        serde.task_from_proto(federation_pb2.Task())


def test_join() -> None:
    request = serde.join_request_to_proto(
        m.JoinRequest(PROTOCOL_VERSION, "0.1.0", m.SiteInfo(platform="Linux", device="cpu"))
    )
    assert (request.protocol_major, request.site_info.device, request.site_info.torch_version) == (1, "cpu", "")
    idle = federation_pb2.JoinResponse(site="site-a", protocol_major=1, protocol_minor=2)
    assert serde.join_reply_from_proto(idle) == m.JoinReply("site-a", "", None, (1, 2))
    config = tiny_run()
    active = federation_pb2.JoinResponse(site="site-a", run_id="r1", run_config=serde.run_config_to_proto(config))
    assert serde.join_reply_from_proto(active).run_config == config
    with pytest.raises(ValueError, match="without its run config"):
        serde.join_reply_from_proto(federation_pb2.JoinResponse(site="site-a", run_id="r1"))


def test_update_stream_and_model_chunks() -> None:
    header = m.UpdateHeader("r1", 2, 5, 90, {"val_ensemble_acc": 0.5}, CodecConfig(), "ab" * 32, 10, "site-a")
    chunks = list(serde.update_chunks_to_proto(header, b"0123456789", chunk_bytes=4))
    assert [c.WhichOneof("kind") for c in chunks] == ["header", "data", "data", "data"]
    assert b"".join(c.data for c in chunks[1:]) == b"0123456789"
    sent = chunks[0].header
    assert (sent.round, sent.base_version, sent.num_samples, dict(sent.metrics)) == (
        2,
        5,
        90,
        {"val_ensemble_acc": 0.5},
    )
    assert serde.codec_config_from_proto(sent.codec) == CodecConfig() and sent.site == "site-a"

    head = common_pb2.ModelChunk(
        header=common_pb2.ModelHeader(
            version=5, sha256="cd" * 32, total_bytes=3, format=common_pb2.MODEL_FORMAT_SAFETENSORS
        )
    )
    assert serde.model_chunk_from_proto(head) == m.ModelHeader(5, "cd" * 32, 3, "safetensors")
    assert serde.model_chunk_from_proto(common_pb2.ModelChunk(data=b"abc")) == b"abc"
    odd = common_pb2.ModelChunk(header=common_pb2.ModelHeader(version=5, format=7))  # type: ignore[arg-type]
    assert serde.model_chunk_from_proto(odd).format == "unknown(7)"  # type: ignore[union-attr]


def test_heartbeat_and_submit_reply() -> None:
    request = serde.heartbeat_request_to_proto(m.HeartbeatRequest("r1", "training", 3))
    assert (request.activity, request.round) == (federation_pb2.SITE_ACTIVITY_TRAINING, 3)
    reply = federation_pb2.HeartbeatResponse(abandon_round=True)
    assert serde.heartbeat_reply_from_proto(reply) == m.HeartbeatReply(None, True)
    response = federation_pb2.SubmitUpdateResponse(accepted=True, duplicate=True, message="dup")
    assert serde.submit_reply_from_proto(response) == m.SubmitReply(True, True, "dup")
