"""``fedmedclip simulate``: configuration errors, the round loop, reports, memory bound and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from fedmedclip.cli import app
from fedmedclip.simulation.config import ConfigError, load_simulate_config, parse_simulate_config
from fedmedclip.simulation.runner import choose_sites, run_simulation
from fedmedclip.simulation.sites import build_shard, write_pool


def test_unknown_keys_and_impossible_rates_are_clear_errors(small_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="participaton"):
        parse_simulate_config({**small_config, "participaton": 0.5})
    with pytest.raises(ConfigError, match="dropout \\+ stragglers"):
        parse_simulate_config({**small_config, "dropout": 0.6, "stragglers": 0.5})
    with pytest.raises(ConfigError, match="unknown training settings: lr"):
        parse_simulate_config({**small_config, "train": {"lr": 1.0}})


def test_unreadable_or_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read simulation config .*missing\.yaml"):
        load_simulate_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("sites: [1, 2\n")
    with pytest.raises(ConfigError, match=r"simulation config .*bad\.yaml is not valid YAML"):
        load_simulate_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"simulation config .*list\.yaml must be a mapping"):
        load_simulate_config(tmp_path / "list.yaml")


def test_participants_are_seeded_and_statuses_follow_the_rates(small_config: dict[str, Any]) -> None:
    config = parse_simulate_config({**small_config, "sites": {**small_config["sites"], "count": 2000}})
    first, again = choose_sites(config, 4), choose_sites(config, 4)
    assert first == again
    statuses = [status for part in first.values() for _, status in part]
    assert len(statuses) == 1500  # 75% of 2000
    assert 0.05 < statuses.count("drop") / 1500 < 0.15
    assert 0.05 < statuses.count("straggle") / 1500 < 0.15
    assert first != choose_sites(config, 5)


def test_a_run_learns_counts_bytes_and_writes_reports(small_config: dict[str, Any], tmp_path: Path) -> None:
    config = parse_simulate_config({**small_config, "rounds": 3, "dropout": 0.0, "stragglers": 0.0})
    seen: list[int] = []
    outcome = run_simulation(config, on_round=lambda summary: seen.append(summary.round))
    assert seen == [1, 2, 3]
    for summary in outcome.rounds:
        assert summary.trained == summary.aggregated == 9
        assert summary.upload_bytes > 0
        assert summary.accuracy["ensemble_acc"]["min"] <= summary.accuracy["ensemble_acc"]["mean"]
    initial_loss, last_loss = outcome.rounds[0].train_loss, outcome.rounds[-1].train_loss
    assert initial_loss is not None and last_loss is not None and last_loss < initial_loss
    assert len(outcome.final_site_accuracy) == 12
    assert [m.sites for m in outcome.memory] == [6, 6]
    assert all(m.state_bytes > 0 for m in outcome.memory)

    from fedmedclip.simulation.report import write_reports

    paths = write_reports(outcome, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert [r["aggregated"] for r in data["rounds"]] == [9, 9, 9]
    assert "| 3 | 9 | 9 |" in paths["markdown"].read_text()
    for key in ("accuracy", "bytes", "spread"):
        assert paths[key].read_bytes().startswith(b"\x89PNG")


def test_stragglers_train_but_are_not_aggregated(small_config: dict[str, Any]) -> None:
    config = parse_simulate_config({**small_config, "rounds": 1, "dropout": 0.3, "stragglers": 0.3, "seed": 11})
    summary = run_simulation(config).rounds[0]
    assert summary.asked == 9
    assert summary.trained == summary.asked - summary.dropped
    assert summary.aggregated == summary.trained - summary.stragglers
    assert summary.stragglers > 0 and summary.dropped > 0
    assert summary.late_bytes > 0


def test_shards_over_the_memory_bound_are_refused(small_config: dict[str, Any]) -> None:
    config = parse_simulate_config({**small_config, "max_shard_memory_mb": 0.01})
    with pytest.raises(ValueError, match="max_shard_memory_mb"):
        run_simulation(config)


def test_embedding_pool_is_split_with_dirichlet_skew(small_config: dict[str, Any], tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    prototypes = torch.nn.functional.normalize(torch.randn(3, 32, generator=generator), dim=-1)
    features = prototypes[labels] + 0.5 * torch.randn(300, 32, generator=generator)
    write_pool(tmp_path / "pool.npz", features, labels, prototypes)
    raw = {
        **small_config,
        "sites": {**small_config["sites"], "dirichlet_alpha": 0.1, "data": {"kind": "embeddings", "path": "pool.npz"}},
    }
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump(raw))
    config = load_simulate_config(tmp_path / "sim.yaml")
    shard = build_shard(config, [0, 1, 2, 3])
    counts = torch.stack([torch.bincount(row, minlength=3) for row in shard.train_labels])
    assert (counts.max(dim=1).values >= 0.6 * 24).float().mean() >= 0.5  # alpha 0.1: most sites dominated by one class
    # Every sampled feature is a pool row with its own label.
    matches = (shard.train_features[0].unsqueeze(1) == features.unsqueeze(0)).all(dim=-1)
    assert bool(matches.any(dim=1).all())
    assert torch.equal(labels[matches.float().argmax(dim=1)], shard.train_labels[0])
    assert run_simulation(config).rounds[-1].aggregated > 0


def test_cli_runs_a_simulation_and_reports_bad_files(small_config: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "sim.yaml").write_text(yaml.safe_dump({**small_config, "rounds": 1}))
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "-c", str(tmp_path / "sim.yaml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "results.json").exists()
    assert (tmp_path / "out" / "spread.png").exists()
    (tmp_path / "bad.yaml").write_text("name: x\nrounds: 0\n")
    result = runner.invoke(app, ["simulate", "-c", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2
    assert "rounds" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["simulate", "-c", str(tmp_path / "sim.yaml"), "--backend", "spark"])
    assert result.exit_code == 2 and "--backend" in result.output


def test_parallel_encoding_gives_the_same_result(small_config: dict[str, Any]) -> None:
    serial = run_simulation(parse_simulate_config({**small_config, "rounds": 1}))
    parallel = run_simulation(parse_simulate_config({**small_config, "rounds": 1, "codec_threads": 3}))
    assert all(torch.equal(t, parallel.global_fam[n]) for n, t in serial.global_fam.items())
    assert serial.rounds[0].upload_bytes == parallel.rounds[0].upload_bytes


def test_only_trained_sites_hold_state_and_files_give_the_same_result(
    small_config: dict[str, Any], tmp_path: Path
) -> None:
    raw = {**small_config, "rounds": 1, "participation": 0.5, "dropout": 0.0, "stragglers": 0.0}
    in_memory = run_simulation(parse_simulate_config(raw))
    # Half the sites trained: only they hold a head and a residual, the others only their embeddings.
    assert sum(m.sites_with_state for m in in_memory.memory) == in_memory.rounds[0].trained == 6
    data_only = run_simulation(parse_simulate_config({**raw, "participation": 1 / 12})).memory
    assert sum(m.state_bytes for m in in_memory.memory) > sum(m.state_bytes for m in data_only) + 5 * 16 * 32 * 4
    # Two rounds, so heads and residuals are read back from the files.
    twice = run_simulation(parse_simulate_config({**raw, "rounds": 2}))
    on_disk = run_simulation(parse_simulate_config({**raw, "rounds": 2, "state_dir": str(tmp_path / "state")}))
    assert all(torch.equal(t, on_disk.global_fam[n]) for n, t in twice.global_fam.items())
    assert on_disk.final_site_accuracy == twice.final_site_accuracy
    assert [r.upload_bytes for r in on_disk.rounds] == [r.upload_bytes for r in twice.rounds]
    assert sum(m.disk_bytes for m in on_disk.memory) > 0
    assert sum(m.state_bytes for m in on_disk.memory) < sum(m.state_bytes for m in twice.memory)
    assert not any((tmp_path / "state").rglob("*.pt"))  # the run's scratch files are gone
