"""Process life: SIGKILL mid-round and restart on the same database; SIGTERM drains; stragglers; reopen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aggregator_service.server import RunningServer
from aggregator_service.store.sql import SqlStore
from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.codec import decode_update
from fedmedclip.federation.fam_bytes import fam_from_bytes
from fedmedclip.rpc.v1 import admin_pb2, federation_pb2
from tests.aggregator.helpers import (
    ADMIN_TOKEN,
    DIM,
    LISTENING,
    AdminStub,
    SiteClient,
    bearer,
    make_update,
    rpc_error,
    run_config,
    upload,
    wait_serving,
)

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``python -m aggregator_service serve`` as a real child process on 127.0.0.1, port 0."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        env = dict(os.environ)
        env.update(
            FEDMEDCLIP_AGGREGATOR_DATABASE_URL=database_url,
            FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN=ADMIN_TOKEN,
            FEDMEDCLIP_AGGREGATOR_SHUTDOWN_GRACE_S="5",
            FEDMEDCLIP_AGGREGATOR_LOG_FORMAT="json",
            # PostgreSQL: a restarted aggregator serves once the killed one's leader lease has expired
            FEDMEDCLIP_AGGREGATOR_LEADER_LEASE_S="3",
            HF_HUB_OFFLINE="1",
        )
        self.log = log_path.open("w")
        command = [sys.executable, "-m", "aggregator_service", "serve", "--port", "0", "--insecure-loopback"]
        command += ["--metrics-port", "0"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until bound (or the process died)
        match = LISTENING.search(line)
        assert match, f"no listening line, got {line!r}; log: {log_path.read_text()}"
        self.port = int(match.group(1))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        wait_serving(self.channel)

    def kill(self) -> None:
        self.channel.close()
        self.process.kill()  # SIGKILL: no cleanup of any kind
        self.process.wait(timeout=30)

    def terminate(self) -> int:
        self.channel.close()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[Callable[[], ServerProcess]]:
    started: list[ServerProcess] = []

    def launch() -> ServerProcess:
        started.append(ServerProcess(database_url, tmp_path / f"server-{len(started)}.log"))
        return started[-1]

    yield launch
    for process in started:
        process.close()


@pytest.mark.both_backends
def test_sigkill_mid_round_then_restart_resumes_without_loss_or_double_count(
    processes: Callable[[], ServerProcess], tmp_path: Path
) -> None:
    first = processes()
    admin = AdminStub(first.channel)
    tokens = {f"site-{i}": admin.enrol(f"site-{i}") for i in range(3)}
    run_id = admin.start(run_config(min_sites=3, rounds=2))
    sites = [SiteClient(first.channel, token, name) for name, token in tokens.items()]
    base = sites[0].poll(run_id).train.fam_version
    _, initial_bytes = sites[0].get_model(base)
    updates = [make_update(seed=10 + i) for i in range(3)]
    for i in range(2):
        assert sites[i].submit(run_id, 1, base, updates[i], num_samples=5 + i).accepted

    first.kill()
    second = processes()
    admin = AdminStub(second.channel)
    sites = [SiteClient(second.channel, token, name) for name, token in tokens.items()]
    resumed = admin.status(run_id).rounds[0]
    assert resumed.state == admin_pb2.ROUND_STATE_OPEN
    assert [p.state for p in resumed.participants] == [
        admin_pb2.PARTICIPATION_STATE_ACCEPTED,
        admin_pb2.PARTICIPATION_STATE_ACCEPTED,
        admin_pb2.PARTICIPATION_STATE_MISSING,
    ]
    # A site unsure whether its update arrived before the crash sends it again: acknowledged, not re-counted.
    again = sites[0].submit(run_id, 1, base, updates[0], num_samples=5)
    assert again.accepted and again.duplicate
    assert sites[2].submit(run_id, 1, base, updates[2], num_samples=7).accepted

    status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED, run_id)
    versions = admin.versions(run_id)
    assert [v.round for v in versions] == [0, 1]  # exactly one new version
    assert [(c.site, c.num_samples) for c in versions[1].contributions] == [("site-0", 5), ("site-1", 6), ("site-2", 7)]
    expected = aggregate(
        fam_from_bytes(initial_bytes, DIM),
        [SiteUpdate(f"site-{i}", 5 + i, decode_update(u.payload)) for i, u in enumerate(updates)],
    )
    _, produced = sites[1].get_model(status.rounds[0].output_version)
    for name, tensor in fam_from_bytes(produced, DIM).items():
        np.testing.assert_array_equal(tensor, expected[name])

    assert second.terminate() == 0  # SIGTERM: graceful stop, clean exit
    log = (tmp_path / "server-1.log").read_text()
    assert '"event": "resumed run"' in log and '"event": "shutting down"' in log and '"event": "stopped"' in log


def test_stop_drains_in_flight_calls_and_reports_not_serving(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient], channel: grpc.Channel
) -> None:
    site = enrol("site-a")
    run_id = admin.start(run_config(min_sites=1, rounds=1))
    base = site.poll(run_id).train.fam_version
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    update = make_update(1)
    started = threading.Event()

    def slow_upload() -> Iterator[federation_pb2.UpdateChunk]:
        header = federation_pb2.UpdateHeader(
            run_id=run_id, round=1, base_version=base, num_samples=3, sha256=update.sha256,
            total_bytes=len(update.payload),
        )  # fmt: skip
        chunks = list(upload(header, update.payload, 200))
        yield chunks[0]
        started.set()
        time.sleep(0.6)  # the stop begins while this upload is in flight
        yield from chunks[1:]

    result: dict[str, object] = {}

    def submit() -> None:
        try:
            result["r"] = site.stub.SubmitUpdate(slow_upload(), metadata=bearer(site.token), timeout=30)
        except grpc.RpcError as error:  # reported below, so a failure says why
            result["r"] = error

    uploader = threading.Thread(target=submit)
    uploader.start()
    assert started.wait(10)
    # A grace well above the upload's own 0.6 s, so a loaded machine still drains it.
    stopper = threading.Thread(target=server.stop, kwargs={"grace_s": 10.0})
    stopper.start()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()  # a watch is itself an in-flight call: it would hold the drain for the whole grace
    uploader.join(30)
    stopper.join(30)
    accepted = result.get("r")
    assert isinstance(accepted, federation_pb2.SubmitUpdateResponse) and accepted.accepted, accepted
    assert rpc_error(lambda: site.join()).code() == grpc.StatusCode.UNAVAILABLE


def test_straggler_past_deadline_round_closes_at_quorum(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    sites = [enrol(f"site-{i}") for i in range(3)]
    opened = time.monotonic()
    run_id = admin.start(run_config(min_sites=2, rounds=2, round_timeout_s=2.0))
    base = sites[0].poll(run_id).train.fam_version
    for i in range(2):
        assert sites[i].submit(run_id, 1, base, make_update(i)).accepted
    if time.monotonic() - opened < 1.5:  # (a very slow machine may already be past the deadline)
        # Two of three sites: quorum, but the round waits for the third until its deadline.
        assert admin.status(run_id).rounds[0].state == admin_pb2.ROUND_STATE_OPEN
    task = sites[0].poll(run_id, wait_seconds=10)  # long poll: answered when round 2 opens
    assert task.train.round == 2
    late = rpc_error(lambda: sites[2].submit(run_id, 1, base, make_update(2)))
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION and "closed" in (late.details() or "")
    assert sites[2].heartbeat(run_id, 1).abandon_round
    status = admin.status(run_id)
    assert [p.state for p in status.rounds[0].participants] == [
        admin_pb2.PARTICIPATION_STATE_ACCEPTED,
        admin_pb2.PARTICIPATION_STATE_ACCEPTED,
        admin_pb2.PARTICIPATION_STATE_REJECTED,
    ]
    assert [c.site for c in admin.versions(run_id)[1].contributions] == ["site-0", "site-1"]


def test_reopen_policy_abandons_a_round_without_quorum(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    sites = [enrol(f"site-{i}") for i in range(2)]
    run_id = admin.start(run_config(min_sites=2, rounds=1, round_timeout_s=1.5, late_policy="reopen"))
    base = sites[0].poll(run_id).train.fam_version
    assert sites[0].submit(run_id, 1, base, make_update(0)).accepted
    status = admin.wait_for(lambda s: s.current_round == 2, run_id)
    assert status.rounds[0].state == admin_pb2.ROUND_STATE_ABANDONED
    assert status.rounds[1].input_version == base  # same FAM version, fresh round
    task = sites[0].poll(run_id)
    assert (task.train.round, task.train.fam_version) == (2, base)
    for site in sites:
        assert site.submit(run_id, 2, base, make_update(7)).accepted
    done = admin.wait_for(lambda s: s.state == admin_pb2.RUN_STATE_COMPLETED, run_id)
    assert sites[1].poll(run_id).done.final_version == done.latest_version


def test_a_round_left_aggregating_by_a_crash_is_finished_on_start(
    server_factory: Callable[..., RunningServer], database_url: str
) -> None:
    first = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        admin = AdminStub(channel)
        site = SiteClient(channel, admin.enrol("site-a"), "site-a")
        admin.enrol("site-b")  # never reports: the round stays open
        run_id = admin.start(run_config(min_sites=1, rounds=2))
        base = site.poll(run_id).train.fam_version
        site.submit(run_id, 1, base, make_update(5))
    current = first.svc.store.current_round(run_id)
    assert current is not None
    first.stop(grace_s=0)
    store = SqlStore.open(database_url)  # what a crash between "aggregating" and "commit" leaves behind
    assert store.begin_aggregation(current.id)
    store.close()

    second = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
        admin = AdminStub(channel)
        status = admin.wait_for(lambda s: s.current_round == 2, run_id)
        assert status.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED
        assert [c.site for c in admin.versions(run_id)[1].contributions] == ["site-a"]
