"""A run that pins a backbone pack's digest refuses a site that brings another pack, naming both digests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmedclip.data.synth import SynthSummary
from fedmedclip.federation.run_config import BackboneRef
from fedmedclip.model import packing
from fedmedclip.model.backbone import TINY_MODEL, BackboneSpec, load_backbone
from hospital_agent.cli import EXIT_CONFIG, app
from hospital_agent.trainer import check_backbone
from tests.agent.conftest import Aggregator, tiny_run, write_agent_config
from tests.model.snapshots import write_snapshot

TINY_CONFIG = Path(__file__).resolve().parents[2] / "fedmedclip" / "model" / "configs" / f"{TINY_MODEL}.json"


def tiny_pack(root: Path, seed: int) -> tuple[Path, str]:
    config = {"model_cfg": json.loads(TINY_CONFIG.read_text()), "preprocess_cfg": {}}
    write_snapshot(config, root / f"snapshot-{seed}", seed=seed)
    manifest = packing.pack(root / f"snapshot-{seed}", root / f"pack-{seed}", model_name=TINY_MODEL)
    return root / f"pack-{seed}", manifest.digest


def test_site_with_another_pack_is_refused_naming_both_digests(
    tmp_path: Path, aggregator: Aggregator, synth_sites: SynthSummary
) -> None:
    run_pack, run_digest = tiny_pack(tmp_path, seed=3)
    site_pack, site_digest = tiny_pack(tmp_path, seed=4)
    pinned = tiny_run(backbone=BackboneRef(model=TINY_MODEL, weights=str(run_pack), weights_digest=run_digest))

    # The run's own pack passes the check the agent makes after Join.
    check_backbone(load_backbone(BackboneSpec(TINY_MODEL, str(run_pack)), device="cpu"), pinned)

    token = aggregator.enrol("site-a")
    aggregator.start_run(pinned)
    config = write_agent_config(
        tmp_path / "site-a",
        "site-a",
        aggregator.target,
        synth_sites.site_dir("site-1"),
        token=token,
        backbone={"model": TINY_MODEL, "weights": str(site_pack)},
    )
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        result = CliRunner().invoke(app, ["run", "--config", str(config)])
    finally:
        root.handlers[:], root.level = handlers, level  # `run` configured logging onto the runner's stream
    assert result.exit_code == EXIT_CONFIG, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"pins backbone weights digest {run_digest}" in errors[0]
    assert f"has weights digest {site_digest}" in errors[0]


@pytest.mark.parametrize("weights", ["random", None])
def test_unpinned_runs_still_accept_any_weights(weights: str | None) -> None:
    backbone = load_backbone(BackboneSpec(TINY_MODEL, weights), device="cpu")
    check_backbone(backbone, tiny_run(backbone=BackboneRef(model=TINY_MODEL, weights=weights)))
