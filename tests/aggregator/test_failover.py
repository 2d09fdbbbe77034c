"""Active/standby on PostgreSQL with real processes: SIGKILL the leader mid-round, SIGSTOP it past its lease.

Two ``python -m aggregator_service serve`` processes share one PostgreSQL schema; the sites are the agent's
own ``FederationClient`` given both addresses, so failover goes through the agent's retry logic. Each test
records how long the standby took to serve (printed; ``-s`` shows them).

PostgreSQL only: skipped, saying so, when FEDMEDCLIP_TEST_POSTGRES_URL is unset (CI sets it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from fedmedclip.federation import messages as m
from fedmedclip.federation.codec import CodecConfig, EncodedUpdate
from fedmedclip.rpc.v1 import admin_pb2, federation_pb2
from hospital_agent.client import FederationClient
from hospital_agent.settings import load_settings
from tests.aggregator.helpers import (
    ADMIN_TOKEN,
    LISTENING,
    AdminStub,
    SiteClient,
    bearer,
    health_status,
    make_update,
    run_config,
    upload,
    wait_serving,
)

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 5.0  # the tests' lease, to keep them short ...
DEFAULT_LEASE_KILL_POINT = "before any update"  # ... except this case, which runs with the default (10 s)
TAKEOVER_LIMIT_S = 15.0
SITES = 3

pytestmark = [pytest.mark.heavy, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]


class Aggregator:
    """One aggregator process on 127.0.0.1, port 0, with the admin token and a short lease."""

    def __init__(self, database_url: str, log_path: Path, lease_s: float | None) -> None:
        env = dict(os.environ)
        if lease_s is not None:
            env["FEDMEDCLIP_AGGREGATOR_LEADER_LEASE_S"] = str(lease_s)
        env.update(
            FEDMEDCLIP_AGGREGATOR_DATABASE_URL=database_url,
            FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN=ADMIN_TOKEN,
            FEDMEDCLIP_AGGREGATOR_SHUTDOWN_GRACE_S="2",
            FEDMEDCLIP_AGGREGATOR_LOG_FORMAT="json",
            HF_HUB_OFFLINE="1",
        )
        self.log_path = log_path
        self.log = log_path.open("w")
        command = [sys.executable, "-m", "aggregator_service", "serve", "--port", "0", "--insecure-loopback"]
        command += ["--metrics-port", "0"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def listening(self) -> Aggregator:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until bound (or the process died)
        match = LISTENING.search(line)
        assert match, f"no listening line, got {line!r}; log: {self.log_path.read_text()}"
        self.address = f"127.0.0.1:{match.group(1)}"
        self.channel = grpc.insecure_channel(self.address)
        return self

    def signal(self, signum: signal.Signals) -> float:
        self.process.send_signal(signum)
        return time.monotonic()

    def kill(self) -> float:
        killed = self.signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        return killed

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def lease_s(request: pytest.FixtureRequest) -> float | None:
    """The lease the pair runs with; None: the aggregator's default."""
    params = getattr(request.node, "callspec", None)
    kill_point = params.params.get("kill_point") if params is not None else None
    return None if kill_point == DEFAULT_LEASE_KILL_POINT else LEASE_S


@pytest.fixture
def pair(database_url: str, tmp_path: Path, lease_s: float | None) -> Iterator[tuple[Aggregator, Aggregator]]:
    """A leader, then a standby, on one database; the leader serves, the standby reports NOT_SERVING."""
    first = Aggregator(database_url, tmp_path / "leader.log", lease_s)
    leader = first.listening()
    wait_serving(leader.channel)
    standby = Aggregator(database_url, tmp_path / "standby.log", lease_s).listening()
    try:
        yield leader, standby
    finally:
        for process in (leader, standby):
            process.close()


def agent_client(tmp_path: Path, addresses: list[str], token: str, name: str) -> FederationClient:
    settings = load_settings(
        None,
        site=name,
        aggregator=",".join(addresses),
        token=token,
        insecure_loopback=True,
        data={"adapter": "imagefolder", "root": str(tmp_path)},
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        rpc_timeout_s=10.0,
    )
    return FederationClient(settings, settings.require_token(), threading.Event())


def submit(client: FederationClient, run_id: str, update: EncodedUpdate, samples: int) -> tuple[int, bool] | None:
    """Poll until a training task (None once the run is done), then send ``update``: (round, accepted)."""
    while True:
        task = client.poll(run_id, wait_s=2)
        if isinstance(task, m.DoneTask):
            return None
        if isinstance(task, m.TrainTask):
            break
        time.sleep(0.2)
    header = m.UpdateHeader(
        run_id,
        task.round,
        task.fam_version,
        samples,
        {"train_loss": 0.5},
        CodecConfig(),
        update.sha256,
        len(update.payload),
    )
    return task.round, client.submit(header, update.payload).accepted


def time_to_serve(aggregator: Aggregator, since: float) -> float:
    """Seconds from ``since`` until ``aggregator`` reports SERVING (fails past the 15 s target)."""
    while health_status(aggregator.channel) != "SERVING":
        assert time.monotonic() - since < TAKEOVER_LIMIT_S, "the standby did not serve within 15 s"
        time.sleep(0.05)
    return time.monotonic() - since


def round_state(engine: sa.Engine, run_id: str, number: int) -> str | None:
    with engine.connect() as connection:
        query = sa.text("SELECT state FROM rounds WHERE run_id = :run AND number = :n")
        return connection.execute(query, {"run": run_id, "n": number}).scalar()


def has_rounds(count: int, status: admin_pb2.RunStatus) -> bool:
    return len(status.rounds) >= count


def assert_standby_refuses(standby: Aggregator) -> None:
    assert health_status(standby.channel) == "NOT_SERVING"
    assert health_status(standby.channel, "fedmedclip.rpc.v1.Federation") == "NOT_SERVING"
    with pytest.raises(grpc.RpcError) as refused:
        AdminStub(standby.channel).status()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "standby" in (refused.value.details() or "")


@pytest.mark.parametrize("kill_point", ["before any update", "after some accepted updates", "during round close"])
def test_sigkill_the_leader_mid_round_the_standby_finishes_the_run(
    pair: tuple[Aggregator, Aggregator], database_url: str, tmp_path: Path, kill_point: str, lease_s: float | None
) -> None:
    leader, standby = pair
    assert_standby_refuses(standby)
    admin = AdminStub(leader.channel)
    tokens = {f"site-{i}": admin.enrol(f"site-{i}") for i in range(SITES)}
    rounds = 2
    run_id = admin.start(run_config(min_sites=SITES, rounds=rounds))
    addresses = [leader.address, standby.address]
    clients = {name: agent_client(tmp_path, addresses, token, name) for name, token in tokens.items()}
    accepted: set[tuple[int, str, int]] = set()  # (round, site, samples) the aggregator acknowledged

    def send(i: int, round_number: int) -> None:
        name = f"site-{i}"
        samples = 10 * round_number + i + 1
        result = submit(clients[name], run_id, make_update(seed=100 * round_number + i), samples)
        assert result is not None and result == (round_number, True), result
        accepted.add((round_number, name, samples))

    database = sa.create_engine(database_url)
    blocker = database.connect()
    try:
        if kill_point == "after some accepted updates":
            send(0, 1)
            send(1, 1)
        elif kill_point == "during round close":
            # Hold the version table so the leader's commit of round 1 waits, mid-close, then kill it there.
            blocker.execute(sa.text("LOCK TABLE fam_versions IN SHARE ROW EXCLUSIVE MODE"))
            for i in range(SITES):
                send(i, 1)
            deadline = time.monotonic() + 15
            while round_state(database, run_id, 1) != "AGGREGATING":
                assert time.monotonic() < deadline, "round 1 never started closing"
                time.sleep(0.05)
        killed_at = leader.kill()
        blocker.rollback()  # the dead leader's commit, if waiting, now fails: its session is gone
        takeover_s = time_to_serve(standby, killed_at)
        lease = "default 10" if lease_s is None else lease_s
        print(f"\nfailover [{kill_point}]: standby SERVING {takeover_s:.2f} s after SIGKILL (lease {lease} s)")

        for round_number in range(1, rounds + 1):
            for i in range(SITES):
                if any(r == round_number and s == f"site-{i}" for r, s, _ in accepted):
                    continue  # accepted before the kill (or closed with it): not sent again
                send(i, round_number)
            if round_number < rounds:
                AdminStub(standby.channel).wait_for(partial(has_rounds, round_number + 1), run_id)
    finally:
        blocker.close()
        for client in clients.values():
            client.close()

    admin = AdminStub(standby.channel)
    status = admin.wait_for(lambda s: s.state == admin_pb2.RUN_STATE_COMPLETED, run_id, timeout=30)
    assert [r.state for r in status.rounds] == [admin_pb2.ROUND_STATE_CLOSED] * rounds
    versions = admin.versions(run_id)
    assert [v.round for v in versions] == list(range(rounds + 1))  # exactly one version per round
    contributed = {(v.round, c.site, c.num_samples) for v in versions for c in v.contributions}
    assert contributed == accepted  # no accepted update lost, none counted twice
    assert len(accepted) == SITES * rounds
    database.dispose()


def test_a_paused_leader_resumed_after_a_takeover_commits_nothing(
    pair: tuple[Aggregator, Aggregator], database_url: str, tmp_path: Path
) -> None:
    old, new = pair
    admin = AdminStub(old.channel)
    tokens = {f"site-{i}": admin.enrol(f"site-{i}") for i in range(2)}
    run_id = admin.start(run_config(min_sites=2, rounds=1))
    site = SiteClient(old.channel, tokens["site-0"], "site-0")
    base = site.poll(run_id).train.fam_version
    update = make_update(seed=7)

    # An upload to the old leader, started before the pause and finished after it.
    gate = threading.Event()
    header = federation_pb2.UpdateHeader(
        run_id=run_id,
        round=1,
        base_version=base,
        num_samples=5,
        sha256=update.sha256,
        total_bytes=len(update.payload),
    )

    def chunks() -> Iterator[federation_pb2.UpdateChunk]:
        for number, chunk in enumerate(upload(header, update.payload, 1000)):
            if number == 2:
                gate.wait(60)
            yield chunk

    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["reply"] = site.stub.SubmitUpdate(chunks(), metadata=bearer(site.token), timeout=60)
        except grpc.RpcError as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.0)  # the old leader's handler has the header and is reading the payload

    paused_at = old.signal(signal.SIGSTOP)
    takeover_s = time_to_serve(new, paused_at)
    database = sa.create_engine(database_url)
    with database.connect() as connection:
        holder, token = connection.execute(sa.text("SELECT holder, token FROM leader_lease")).one()
    assert token == 2 and holder.split(":")[1] == str(new.process.pid)

    old.signal(signal.SIGCONT)
    gate.set()
    sender.join(timeout=60)
    error = outcome.get("error")
    assert error is not None, f"the deposed leader accepted the update: {outcome.get('reply')}"
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    deadline = time.monotonic() + 10
    while health_status(old.channel) != "NOT_SERVING":
        assert time.monotonic() < deadline, "the resumed old leader still reports SERVING"
        time.sleep(0.05)
    assert "write refused" in old.log_path.read_text()  # by the store's fence, not before reaching it
    print(f"\nfailover [SIGSTOP]: standby SERVING {takeover_s:.2f} s after the pause; old leader's upload refused")

    # Nothing of that upload reached the database; the sites finish the run on the new leader.
    with database.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM updates")).scalar() == 0
    admin = AdminStub(new.channel)
    addresses = [old.address, new.address]
    for i, (name, token_value) in enumerate(tokens.items()):
        client = agent_client(tmp_path, addresses, token_value, name)
        try:
            assert submit(client, run_id, make_update(seed=20 + i), 5 + i) == (1, True)
        finally:
            client.close()
    admin.wait_for(lambda s: s.state == admin_pb2.RUN_STATE_COMPLETED, run_id, timeout=30)
    versions = admin.versions(run_id)
    assert [v.round for v in versions] == [0, 1]
    assert sorted((c.site, c.num_samples) for c in versions[1].contributions) == [("site-0", 5), ("site-1", 6)]
    database.dispose()


def test_a_graceful_stop_hands_over_at_once(pair: tuple[Aggregator, Aggregator]) -> None:
    """SIGTERM releases the lease: the standby serves at its next look, not after the lease runs out."""
    leader, standby = pair
    stopped_at = leader.signal(signal.SIGTERM)
    took = time_to_serve(standby, stopped_at)
    assert leader.process.wait(timeout=30) == 0
    assert took < LEASE_S - 1, f"took {took:.2f} s: the lease was not released"
    print(f"\nfailover [SIGTERM]: standby SERVING {took:.2f} s after SIGTERM")
