"""Fixtures of the hospital-agent tests: a real aggregator as a subprocess, admin calls, configs, synth data.

The aggregator is driven only through its command line and the generated Admin stubs
(``fedmedclip.rpc.v1``): these tests never import ``aggregator_service`` or ``tests.aggregator``.
"""

from __future__ import annotations

import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from fedmedclip.data.synth import SynthConfig, SynthSummary, generate
from fedmedclip.federation.run_config import BackboneRef, RunConfig
from fedmedclip.federation.serde import run_config_to_proto
from fedmedclip.rpc.v1 import admin_pb2, admin_pb2_grpc
from fedmedclip.training.config import TrainConfig

ADMIN_TOKEN = "agent-tests-admin-" + "0123456789abcdefXYZ"
TINY_DIM = 64  # embedding width of the fedmedclip-tiny backbone
LISTENING = re.compile(r"aggregator listening on \S+:(\d+)")
REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """Environment of every subprocess: offline, one torch thread each (two cores are shared)."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    env.update(extra)
    return env


def free_port() -> int:
    """A port the OS just handed out; used only where a restarted aggregator must keep its address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Aggregator:
    """``python -m aggregator_service serve`` on loopback with its own SQLite file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.database = workdir / "aggregator.sqlite3"
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self._channel: grpc.Channel | None = None

    def start(self, port: int = 0, timeout: float = 90.0) -> Aggregator:
        command = [
            sys.executable,
            "-m",
            "aggregator_service",
            "serve",
            "--port",
            str(port),
            "--insecure-loopback",
            "--database-url",
            f"sqlite:///{self.database}",
            "--metrics-port",
            "0",
        ]
        log = (self.workdir / "aggregator.log").open("a")
        env = child_env(FEDMEDCLIP_AGGREGATOR_SHUTDOWN_GRACE_S="1", FEDMEDCLIP_AGGREGATOR_SQLITE_SYNCHRONOUS="NORMAL")
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline()
                match = LISTENING.search(line)
                if match:
                    self.port = int(match.group(1))
                    return self
                if not line and self.process.poll() is not None:
                    break
        raise AssertionError(f"aggregator did not start; log:\n{(self.workdir / 'aggregator.log').read_text()[-3000:]}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    # --- the Admin service --------------------------------------------------------------------------------

    def _admin(self, method: str, request: Any) -> Any:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.target)
        stub = admin_pb2_grpc.AdminStub(self._channel)
        return getattr(stub, method)(request, metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),), timeout=20)

    def enrol(self, site: str) -> str:
        return str(self._admin("EnrolSite", admin_pb2.EnrolSiteRequest(site=site)).token)

    def start_run(self, config: RunConfig) -> str:
        return str(self._admin("StartRun", admin_pb2.StartRunRequest(config=run_config_to_proto(config))).run_id)

    def status(self, run_id: str) -> Any:
        return self._admin("GetRunStatus", admin_pb2.GetRunStatusRequest(run_id=run_id))

    def wait_for(self, predicate: Callable[[Any], bool], run_id: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status(run_id)
                if predicate(status):
                    return status
            except grpc.RpcError as error:  # the aggregator may be restarting
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                status = None
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting; last status: {status}")
            time.sleep(0.2)


def run_completed(status: Any) -> bool:
    return bool(status.state == admin_pb2.RUN_STATE_COMPLETED)


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[Aggregator]:
    server = Aggregator(tmp_path).start()
    yield server
    server.stop()


def tiny_run(rounds: int = 2, min_sites: int = 1, **overrides: Any) -> RunConfig:
    """A run on the random-init tiny backbone; training settings that learn the synth data in a few rounds."""
    values: dict[str, Any] = {
        "embed_dim": TINY_DIM,
        "rounds": rounds,
        "min_sites": min_sites,
        "round_timeout_s": 120.0,
        "backbone": BackboneRef(model="fedmedclip-tiny", weights="random", seed=0),
        "train": TrainConfig(local_epochs=5, head_hidden=128),
    }
    values.update(overrides)
    return RunConfig(**values)


def write_agent_config(
    directory: Path, site: str, aggregator: str, data_root: Path, token: str | None = None, **extra: Any
) -> Path:
    """An agent YAML for a loopback aggregator; ``token=None`` reads it from $FEDMEDCLIP_AGENT_TOKEN."""
    directory.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "site": site,
        "aggregator": aggregator,
        "token": token if token is not None else "${FEDMEDCLIP_AGENT_TOKEN}",
        "insecure_loopback": True,
        "data": {"adapter": "imagefolder", "root": str(data_root)},
        "state_dir": str(directory / "state"),
        "bundle_root": str(directory / "bundles"),
        "device": "cpu",
        "embed_workers": 0,
        "poll_wait_s": 5,
        "heartbeat_s": 1.0,
        "idle_poll_s": 1.0,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 1.0,
        "rpc_timeout_s": 30.0,
    }
    values.update(extra)
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def synth_sites(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    """Three synthetic sites, 150 images each at 64 px, nearly balanced (label_skew 5) so chance means something."""
    config = SynthConfig(sites=3, images_per_site=150, image_size=64, difficulty=0.0, label_skew=5.0, seed=0)
    return generate(config, tmp_path_factory.mktemp("synth"))


@pytest.fixture
def site_name() -> str:
    return f"site-{secrets.token_hex(3)}"
