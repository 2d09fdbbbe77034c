"""A real agent process under record-level DP: its ledger reaches the aggregator, and it stops contributing at
exactly the round its budget cannot pay for, says so, keeps its last bundle, and the aggregator records
"budget spent" rather than a fault."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from dp_accounting import dp_event, rdp

from fedmedclip.bundle import read_current
from fedmedclip.data.imagefolder import scan_imagefolder
from fedmedclip.data.splits import split_indices
from fedmedclip.data.synth import SynthSummary
from fedmedclip.privacy.config import PrivacyConfig
from fedmedclip.rpc.v1 import admin_pb2
from fedmedclip.training.config import TrainConfig
from hospital_agent.state import StateStore
from tests.agent.conftest import REPO, Aggregator, child_env, tiny_run, write_agent_config

SITE = "site-1"
SIGMA, BATCH, STEPS_PER_ROUND = 0.9, 30, 3  # q = 30/90 and one local epoch: 3 DP-SGD steps a round


def library_epsilon(q: float, steps: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(SIGMA)), steps)
    return float(accountant.get_epsilon(delta))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_agent_stops_at_the_round_its_budget_cannot_pay_for(aggregator: Aggregator, synth_sites: SynthSummary) -> None:
    site_dir = synth_sites.site_dir(SITE)
    train_count = len(split_indices(scan_imagefolder(site_dir).labels, seed=0).train)
    q, delta = min(1.0, BATCH / train_count), 1 / (10 * train_count)
    eps = [library_epsilon(q, STEPS_PER_ROUND * k, delta) for k in (1, 2, 3)]
    eps.append(library_epsilon(q, STEPS_PER_ROUND * 4, delta))
    # The run allows three rounds; the site's own cap (max_epsilon) only two: the site's budget decides.
    run_target, site_cap = (eps[2] + eps[3]) / 2, (eps[1] + eps[2]) / 2
    privacy = PrivacyConfig(mode="record", target_epsilon=run_target, noise_multiplier=SIGMA, batch_size=BATCH)
    token = aggregator.enrol(SITE)
    run_id = aggregator.start_run(
        tiny_run(rounds=4, train=TrainConfig(local_epochs=1, head_hidden=128), privacy=privacy)
    )
    work = aggregator.workdir / SITE
    config = write_agent_config(work, SITE, aggregator.target, site_dir, log_format="json", max_epsilon=site_cap)
    log = aggregator.workdir / "agent.log"
    agent = subprocess.Popen(
        [sys.executable, "-m", "hospital_agent", "run", "--config", str(config)],
        cwd=REPO,
        env=child_env(FEDMEDCLIP_AGENT_TOKEN=token),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def third_round_budget_spent(status: admin_pb2.RunStatus) -> bool:
            return len(status.rounds) >= 3 and any(
                p.state == admin_pb2.PARTICIPATION_STATE_BUDGET_SPENT for p in status.rounds[2].participants
            )

        status = aggregator.wait_for(third_round_budget_spent, run_id, timeout=200)
        time.sleep(2.0)  # it must not send anything for round 3 afterwards either
        status = aggregator.status(run_id)
        status_cli = subprocess.run(
            [sys.executable, "-m", "hospital_agent", "status", "--config", str(config), "--json"],
            cwd=REPO,
            env=child_env(FEDMEDCLIP_AGENT_TOKEN=token),
            capture_output=True,
            text=True,
            timeout=120,
        )
        aggregator._admin("StopRun", admin_pb2.StopRunRequest(run_id=run_id, reason="test over"))
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]

    # The aggregator: rounds 1 and 2 accepted with the ledger the site computed, round 3 "budget spent".
    first, second, third = status.rounds[:3]
    for index, round_status in enumerate((first, second)):
        [part] = round_status.participants
        assert part.state == admin_pb2.PARTICIPATION_STATE_ACCEPTED
        ledger = part.privacy
        assert ledger.epsilon == pytest.approx(eps[index], rel=1e-9)
        assert (ledger.delta, ledger.sigma, ledger.sample_rate) == (pytest.approx(delta), SIGMA, pytest.approx(q))
        assert (ledger.steps, ledger.rounds, ledger.clip_norm) == (STEPS_PER_ROUND * (index + 1), index + 1, 1.0)
        assert dict(part.metrics) == {}  # un-noised losses and accuracies stay at the site under DP
    [spent] = third.participants
    assert spent.state == admin_pb2.PARTICIPATION_STATE_BUDGET_SPENT and third.state == admin_pb2.ROUND_STATE_OPEN

    # The agent: said so in its log and in `agent status`, charged exactly two rounds.
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    stops = [e for e in events if e["event"].startswith("privacy budget spent")]
    assert len(stops) == 1 and stops[0]["round"] == 3, stops
    assert stops[0]["epsilon"] == pytest.approx(eps[1], abs=1e-4)
    assert stops[0]["target_epsilon"] == pytest.approx(site_cap)
    assert not [e for e in events if e["event"] == "round trained" and e.get("round", 0) >= 3]
    assert status_cli.returncode == 0, status_cli.stderr
    assert "privacy budget spent" in json.loads(status_cli.stdout)["privacy"]
    saved = StateStore(work / "state").summary()
    assert saved is not None and len(saved["privacy"]["history"]) == 2

    # It keeps serving its last bundle: FAM version 3 (after its second update), with ε after two rounds.
    bundle = read_current(work / "bundles", SITE)
    assert bundle.fam_version == 3 and bundle.fam_privacy is not None
    assert bundle.fam_privacy.epsilon == pytest.approx(eps[1], rel=1e-9)
    assert bundle.fam_privacy.delta == pytest.approx(delta) and bundle.head_privacy is None
