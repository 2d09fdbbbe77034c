"""Two in-process agents against a real aggregator subprocess, every outgoing message recorded.

One scenario, because each step needs the state the previous one left: a wrong token and a token of
another site are refused; agent A uploads round 1 and "crashes" before it learns the upload arrived; the
aggregator is SIGKILLed and restarted on the same port while A's successor is already retrying; A resends the
very same bytes (acknowledged as a duplicate); agent B joins; the run completes. Then: bundles published and
verifiable, state on disk, and the privacy line — nothing but FAM update bytes, counts and aggregate metrics
left either site.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from typer.testing import CliRunner

from fedmedclip.bundle import read_current
from fedmedclip.data.cache import EmbeddingCache, file_sha256
from fedmedclip.data.imagefolder import scan_imagefolder
from fedmedclip.data.splits import split_indices
from fedmedclip.data.synth import SynthSummary
from fedmedclip.federation.codec import decode_update
from fedmedclip.model.fam import fam_shapes
from fedmedclip.rpc.v1 import admin_pb2, federation_pb2
from hospital_agent.cli import EXIT_CONFIG, app
from hospital_agent.loop import AgentLoop
from hospital_agent.settings import ConfigError, load_settings
from hospital_agent.state import StateStore
from tests.agent.conftest import TINY_DIM, Aggregator, free_port, run_completed, tiny_run, write_agent_config

ALLOWED_METRICS = {
    "train_loss",
    "train_contrastive",
    "train_head_ce",
    "train_kd",
    "train_head_acc",
    "val_zero_shot_acc",
    "val_head_acc",
    "val_ensemble_acc",
    "val_macro_f1",
}


class LostReply(grpc.RpcError, grpc.Future, grpc.Call):
    """What the client sees when the connection drops after the server got the whole upload."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection lost before the reply (test)"

    def initial_metadata(self) -> None:
        return None

    def trailing_metadata(self) -> None:
        return None

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def add_callback(self, callback: Any) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> BaseException:
        return self

    def traceback(self, timeout: float | None = None) -> None:
        return None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)


class Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Keeps every request message an agent sends; optionally "crashes" right after its first upload."""

    def __init__(self, crash_after_upload: threading.Event | None = None) -> None:
        self.sent: list[tuple[str, Any]] = []
        self._crash = crash_after_upload

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.sent.append((details.method, request))
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self.sent.append((details.method, request))
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Iterator[Any]) -> Any:
        def recorded() -> Iterator[Any]:
            for message in requests:
                self.sent.append((details.method, message))
                yield message

        outcome = continuation(details, recorded())
        if self._crash is not None and not self._crash.is_set():
            outcome.result()  # the server has stored it...
            self._crash.set()  # ...and the agent dies before hearing so
            return LostReply()
        return outcome


def start(loop: AgentLoop) -> threading.Thread:
    thread = threading.Thread(target=loop.run, name=f"agent-{loop.site}", daemon=True)
    thread.start()
    return thread


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def uploads(recorder: Recorder) -> list[tuple[federation_pb2.UpdateHeader, bytes]]:
    """(header, payload) of every SubmitUpdate stream the recorder saw."""
    found: list[tuple[federation_pb2.UpdateHeader, bytes]] = []
    for method, message in recorder.sent:
        if not method.endswith("/SubmitUpdate"):
            continue
        if message.WhichOneof("kind") == "header":
            found.append((message.header, b""))
        else:
            header, data = found[-1]
            found[-1] = (header, data + message.data)
    return found


def test_agents_survive_crashes_restarts_and_keep_private_data_home(
    tmp_path: Path, synth_sites: SynthSummary, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Aggregator(tmp_path / "aggregator")
    (tmp_path / "aggregator").mkdir()
    port = free_port()
    server.start(port)
    try:
        tokens = {site: server.enrol(site) for site in ("site-a", "site-b")}
        run_id = server.start_run(tiny_run(rounds=3, min_sites=2))
        site_dirs = {"site-a": synth_sites.site_dir("site-1"), "site-b": synth_sites.site_dir("site-2")}
        configs = {
            site: write_agent_config(tmp_path / site, site, server.target, site_dirs[site], token=tokens[site])
            for site in tokens
        }

        # Refused clearly: a wrong token (through the CLI, exit 78) and another site's token.
        monkeypatch.setenv("FEDMEDCLIP_AGENT_TOKEN", "fmc_not-a-real-token")
        wrong = write_agent_config(tmp_path / "wrong", "site-a", server.target, site_dirs["site-a"])
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        result = CliRunner().invoke(app, ["run", "--config", str(wrong)])
        root.handlers[:], root.level = handlers, level  # `run` configured logging onto the runner's stream
        monkeypatch.delenv("FEDMEDCLIP_AGENT_TOKEN")  # the environment beats the file: leave it to the files
        assert result.exit_code == EXIT_CONFIG
        assert "UNAUTHENTICATED" in result.output and "check token / token_file" in result.output
        swapped = load_settings(configs["site-a"], token=tokens["site-b"])
        with pytest.raises(ConfigError, match="token belongs to site 'site-b'"):
            AgentLoop(swapped).run()

        # Agent A uploads round 1, then dies before it hears back.
        crashed = threading.Event()
        first = Recorder(crash_after_upload=crashed)
        loop_a = AgentLoop(load_settings(configs["site-a"]), interceptors=[first])
        thread_a = start(loop_a)
        wait_until(crashed.is_set)
        loop_a.stop.set()
        thread_a.join(timeout=30)
        assert not thread_a.is_alive()
        pending = StateStore(tmp_path / "site-a" / "state").load("site-a").pending
        assert pending is not None and pending.round == 1

        # The aggregator dies too; A's successor starts while it is down and keeps retrying.
        server.stop(signal.SIGKILL)
        second = Recorder()
        loop_a2 = AgentLoop(load_settings(configs["site-a"]), interceptors=[second])
        thread_a2 = start(loop_a2)
        time.sleep(1.0)
        server.start(port)
        recorder_b = Recorder()
        loop_b = AgentLoop(load_settings(configs["site-b"]), interceptors=[recorder_b])
        thread_b = start(loop_b)

        status = server.wait_for(run_completed, run_id, timeout=90)
        wait_until(lambda: loop_a2.state.run_done and loop_b.state.run_done)
        for loop, thread in ((loop_a2, thread_a2), (loop_b, thread_b)):
            loop.stop.set()
            thread.join(timeout=30)
            assert not thread.is_alive()
    finally:
        server.stop()

    # The resent round-1 update is byte-identical to the one that "got lost".
    lost_header, lost_payload = uploads(first)[0]
    resent_header, resent_payload = uploads(second)[0]
    assert (resent_header.round, resent_header.sha256, resent_payload) == (1, lost_header.sha256, lost_payload)
    accepted = admin_pb2.PARTICIPATION_STATE_ACCEPTED
    assert [sorted(p.site for p in r.participants if p.state == accepted) for r in status.rounds] == [
        ["site-a", "site-b"]
    ] * 3

    for site in ("site-a", "site-b"):
        saved = StateStore(tmp_path / site / "state").load(site)
        assert (saved.run_id, saved.last_round, saved.fam_version) == (run_id, 3, status.latest_version)
        assert saved.pending is None and saved.head is not None
        bundle = read_current(tmp_path / site / "bundles", site)  # verifies every digest
        assert bundle.fam_version == status.latest_version and bundle.has_head
        assert bundle.head_state is not None
        assert all(torch.equal(bundle.head_state[k], saved.head[k].float()) for k in bundle.head_state)
        assert set(bundle.metrics) >= {"zero_shot_acc", "head_acc", "ensemble_acc", "macro_f1", "majority_acc"}

    check_privacy(first.sent + second.sent, tmp_path / "site-a", synth_sites.site_dir("site-1"), "site-a")
    check_privacy(recorder_b.sent, tmp_path / "site-b", synth_sites.site_dir("site-2"), "site-b")


def check_privacy(sent: list[tuple[str, Any]], agent_dir: Path, data_root: Path, site: str) -> None:
    """Only FAM update bytes, sample counts and aggregate metrics leave: no head, embedding, image or name."""
    allowed = {
        "/fedmedclip.rpc.v1.Federation/Join": federation_pb2.JoinRequest,
        "/fedmedclip.rpc.v1.Federation/PollTask": federation_pb2.PollTaskRequest,
        "/fedmedclip.rpc.v1.Federation/GetModel": federation_pb2.GetModelRequest,
        "/fedmedclip.rpc.v1.Federation/Heartbeat": federation_pb2.HeartbeatRequest,
        "/fedmedclip.rpc.v1.Federation/SubmitUpdate": federation_pb2.UpdateChunk,
    }
    for method, message in sent:
        assert type(message) is allowed[method], method
    recorder = Recorder()
    recorder.sent = sent
    train_size = len(split_indices(scan_imagefolder(data_root).labels, seed=0).train)
    for header, payload in uploads(recorder):
        assert set(header.metrics) <= ALLOWED_METRICS
        assert header.num_samples == train_size  # a count, nothing per sample
        update = decode_update(payload, header.sha256)  # the payload is a FAM update and nothing else
        shapes = fam_shapes(TINY_DIM)
        assert {name: tuple(t.shape) for name, t in update.tensors.items()} == shapes

    wire = b"".join(message.SerializeToString() for _, message in sent)
    saved = StateStore(agent_dir / "state").load(site)
    assert saved.head is not None
    secrets = [saved.head["body.0.weight"][row].numpy().tobytes()[:32] for row in range(8)]
    with EmbeddingCache(agent_dir / "state" / "cache") as cache:
        namespace = next(iter(cache.namespaces()))
        images = sorted(data_root.rglob("*.png"))[:20]
        rows = cache.get_many(namespace, [file_sha256(path) for path in images])
    assert len(rows) == 20
    secrets += [vector.tobytes()[:32] for vector in rows.values()]
    secrets += [vector.astype("float16").tobytes()[:16] for vector in rows.values()]
    assert secrets and not any(secret in wire for secret in secrets)
    for text in (str(data_root), "nevus", "melanoma", "carcinoma", "keratosis"):
        assert text.encode() not in wire, text
