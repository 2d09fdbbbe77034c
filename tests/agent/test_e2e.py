"""End to end: a real aggregator and three real agent processes on synth data with the tiny backbone.

One agent is SIGKILLed mid-run and restarted; the run still finishes, the restarted agent embeds nothing
again (the cache), every site's ensemble accuracy beats its validation split's majority-class rate, and
SIGTERM stops every agent cleanly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fedmedclip.bundle import read_current
from fedmedclip.data.imagefolder import scan_imagefolder
from fedmedclip.data.splits import split_indices
from fedmedclip.data.synth import SynthSummary
from fedmedclip.rpc.v1 import admin_pb2
from fedmedclip.training.calibration import MIN_SAMPLES
from hospital_agent.state import StateStore
from tests.agent.conftest import REPO, Aggregator, child_env, run_completed, tiny_run, write_agent_config

SITES = ("site-1", "site-2", "site-3")
VICTIM = "site-2"


def spawn(config: Path, token: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hospital_agent", "run", "--config", str(config)],
        cwd=REPO,
        env=child_env(FEDMEDCLIP_AGENT_TOKEN=token),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def majority_rate(site_dir: Path) -> float:
    """The validation split's majority-class rate, computed here independently of the agent."""
    images = scan_imagefolder(site_dir)
    val = [images.labels[i] for i in split_indices(images.labels, seed=0).val]
    return Counter(val).most_common(1)[0][1] / len(val)


def validation_size(site_dir: Path) -> int:
    images = scan_imagefolder(site_dir)
    return len(split_indices(images.labels, seed=0).val)


def run_done(state_dir: Path) -> bool:
    summary = StateStore(state_dir).summary()
    return bool(summary and summary.get("run_done"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_three_agents_one_killed_and_restarted(aggregator: Aggregator, synth_sites: SynthSummary) -> None:
    work = aggregator.workdir
    tokens = {site: aggregator.enrol(site) for site in SITES}
    run_id = aggregator.start_run(tiny_run(rounds=4, min_sites=3))
    configs = {
        site: write_agent_config(
            work / site,
            site,
            aggregator.target,
            synth_sites.site_dir(site),
            log_format="json" if site == VICTIM else "text",
        )
        for site in SITES
    }
    logs = {site: work / f"{site}.log" for site in SITES}
    agents = {site: spawn(configs[site], tokens[site], logs[site]) for site in SITES}
    try:
        at_kill = aggregator.wait_for(lambda status: status.current_round >= 2, run_id, timeout=120)
        agents[VICTIM].send_signal(signal.SIGKILL)
        assert at_kill.state == admin_pb2.RUN_STATE_RUNNING  # really mid-run: the victim still owes rounds
        agents[VICTIM].wait(timeout=10)
        restarted_at = logs[VICTIM].stat().st_size
        time.sleep(1.0)
        agents[VICTIM] = spawn(configs[VICTIM], tokens[VICTIM], logs[VICTIM])

        status = aggregator.wait_for(run_completed, run_id, timeout=150)
        deadline = time.monotonic() + 60
        while not all(run_done(work / site / "state") for site in SITES):
            assert time.monotonic() < deadline, "agents did not record the finished run"
            time.sleep(0.2)
        for process in agents.values():
            process.send_signal(signal.SIGTERM)
        codes = {site: process.wait(timeout=30) for site, process in agents.items()}
    finally:
        for process in agents.values():
            if process.poll() is None:
                process.kill()
    assert codes == dict.fromkeys(SITES, 0), {site: logs[site].read_text()[-2000:] for site in SITES}
    assert len(status.rounds) == 4
    assert all(len(round_.participants) == 3 for round_ in status.rounds)

    # The restarted agent trained from the cache: its embedding pass computed nothing.
    after = logs[VICTIM].read_bytes()[restarted_at:].decode().splitlines()
    events = [json.loads(line) for line in after if line.startswith("{")]
    ready = [e for e in events if e["event"] == "embeddings ready"]
    assert ready and ready[0]["computed"] == 0 and ready[0]["reused"] == ready[0]["images"]

    for site in SITES:
        bundle = read_current(work / site / "bundles", site)
        assert bundle.fam_version == status.latest_version and bundle.has_head
        chance = majority_rate(synth_sites.site_dir(site))
        assert bundle.metrics["majority_acc"] == pytest.approx(chance)
        assert bundle.metrics["ensemble_acc"] > chance, (site, bundle.metrics)
        # The agent fits the ensemble's temperature on its validation split when it has enough images.
        if validation_size(synth_sites.site_dir(site)) >= MIN_SAMPLES:
            assert bundle.calibration is not None and bundle.calibration.samples == validation_size(
                synth_sites.site_dir(site)
            )
