"""Admin RPC refusals, run lifecycle seen by sites (poll, heartbeat, done), and late-policy behaviour."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from aggregator_service.server import RunningServer
from fedmedclip.federation.serde import run_config_to_proto
from fedmedclip.rpc.v1 import admin_pb2, common_pb2
from tests.aggregator.helpers import DIM, AdminStub, SiteClient, make_update, rpc_error, run_config

Code = grpc.StatusCode


def test_admin_refusals(admin: AdminStub, enrol: Callable[[str], SiteClient]) -> None:
    error = rpc_error(lambda: admin("StartRun", admin_pb2.StartRunRequest(config=common_pb2.RunConfig(rounds=2))))
    assert error.code() == Code.INVALID_ARGUMENT and "embed_dim" in (error.details() or "")
    run_id = admin.start(run_config())
    error = rpc_error(lambda: admin.start(run_config()))
    assert error.code() == Code.FAILED_PRECONDITION and run_id in (error.details() or "")
    assert rpc_error(lambda: admin.enrol("bad name!")).code() == Code.INVALID_ARGUMENT
    enrol("site-a")
    assert rpc_error(lambda: admin.enrol("site-a")).code() == Code.ALREADY_EXISTS
    assert rpc_error(lambda: admin.status("no-such-run")).code() == Code.NOT_FOUND
    missing = admin_pb2.ExportVersionRequest(version=999)
    assert rpc_error(lambda: list(admin.stub.ExportVersion(missing, metadata=admin.metadata))).code() == Code.NOT_FOUND
    stop = admin_pb2.RevokeSiteRequest(site="nobody")
    assert rpc_error(lambda: admin("RevokeSite", stop)).code() == Code.NOT_FOUND


def test_stop_run_sends_done_and_a_new_run_can_start_from_a_version(
    admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    site = enrol("site-a")
    run_id = admin.start(run_config(rounds=5))
    task = site.poll(run_id)
    assert site.heartbeat(run_id, task.train.round).abandon_round is False
    stopped = admin("StopRun", admin_pb2.StopRunRequest(run_id=run_id, reason="maintenance"))
    assert stopped.state == admin_pb2.RUN_STATE_STOPPED
    done = site.poll(run_id).done
    assert done.final_version == task.train.fam_version and "maintenance" in done.reason
    assert site.heartbeat(run_id, 1).abandon_round
    error = rpc_error(lambda: site.submit(run_id, 1, task.train.fam_version, make_update(1)))
    assert error.code() == Code.FAILED_PRECONDITION
    assert admin.status(run_id).rounds[0].state == admin_pb2.ROUND_STATE_ABANDONED

    request = admin_pb2.StartRunRequest(
        config=run_config_to_proto(run_config()), initial_version=task.train.fam_version
    )
    second = admin("StartRun", request)
    [initial] = admin.versions(second.run_id)
    assert initial.parent_version == task.train.fam_version and initial.version == second.initial_version
    assert site.join().run_id == second.run_id
    wrong_width = admin_pb2.StartRunRequest(
        config=run_config_to_proto(run_config(embed_dim=DIM * 2)), initial_version=task.train.fam_version
    )
    admin("StopRun", admin_pb2.StopRunRequest(run_id=second.run_id))
    assert rpc_error(lambda: admin("StartRun", wrong_width)).code() == Code.FAILED_PRECONDITION


def test_poll_waits_when_nothing_to_do_and_get_model_checks_versions(
    admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    sites = [enrol("site-a"), enrol("site-b")]
    assert sites[0].join().run_id == ""  # no run yet: poll again later
    run_id = admin.start(run_config(min_sites=2))
    base = sites[0].poll(run_id).train.fam_version
    sites[0].submit(run_id, 1, base, make_update(1))
    started = time.monotonic()
    wait = sites[0].poll(run_id, wait_seconds=1)  # already submitted: held, then told to wait
    assert wait.WhichOneof("kind") == "wait" and wait.wait.retry_after_seconds > 0
    assert time.monotonic() - started >= 0.9
    assert rpc_error(lambda: sites[0].get_model(0)).code() == Code.INVALID_ARGUMENT
    assert rpc_error(lambda: sites[0].get_model(12345)).code() == Code.NOT_FOUND
    assert rpc_error(lambda: sites[0].poll("no-such-run")).code() == Code.NOT_FOUND


def test_long_polls_beyond_the_limit_answer_at_once(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(max_workers=6)  # half the workers may hold long polls: three slots
    assert server.svc.limits.max_long_polls == 3
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        admin = AdminStub(channel)
        sites = [SiteClient(channel, admin.enrol(f"site-{i}"), f"site-{i}") for i in range(5)]
        run_id = admin.start(run_config(min_sites=5))
        base = sites[0].poll(run_id).train.fam_version
        for i, site in enumerate(sites[:4]):
            site.submit(run_id, 1, base, make_update(i))
        with ThreadPoolExecutor(3) as pool:
            held = [pool.submit(site.poll, run_id, 20) for site in sites[:3]]
            deadline = time.monotonic() + 15
            while server.svc.long_polls.in_use < 3:
                assert time.monotonic() < deadline, "the polls were not held"
                time.sleep(0.02)
            started = time.monotonic()
            assert sites[3].poll(run_id, wait_seconds=20).WhichOneof("kind") == "wait"
            assert time.monotonic() - started < 5  # not held: no slot was free
            sites[4].submit(run_id, 1, base, make_update(4))  # completes the round: held polls answer
            assert all(f.result(timeout=20).train.round == 2 for f in held)


def test_accept_until_quorum_takes_late_updates_then_closes(
    admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    sites = [enrol(f"site-{i}") for i in range(3)]
    run_id = admin.start(run_config(min_sites=2, round_timeout_s=0.3))
    base = sites[0].poll(run_id).train.fam_version
    sites[0].submit(run_id, 1, base, make_update(0))
    time.sleep(0.5)  # past the deadline, one short of quorum: the round keeps waiting
    assert admin.status(run_id).rounds[0].state == admin_pb2.ROUND_STATE_OPEN
    assert not sites[1].heartbeat(run_id, 1).abandon_round
    assert sites[1].submit(run_id, 1, base, make_update(1)).accepted  # late, but accepted: quorum now
    status = admin.wait_for(lambda s: s.current_round == 2, run_id)
    assert status.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED
    late = rpc_error(lambda: sites[2].submit(run_id, 1, base, make_update(2)))
    assert late.code() == Code.FAILED_PRECONDITION
