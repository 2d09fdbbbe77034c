"""The harness end to end on small synth data and on a fake ISIC 2019 tree, with the tiny random CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedmedclip.experiment import paper
from fedmedclip.experiment.config import parse_config
from fedmedclip.experiment.runner import run_experiment
from fedmedclip.federation.simulation import SimulationConfig, SiteTensors, run_federation
from fedmedclip.training.config import TrainConfig

from .conftest import tiny_experiment

SYNTH = {"kind": "synth", "sites": 2, "images_per_site": 24, "image_size": 32, "holdout": True, "seed": 3}


@pytest.mark.slow
def test_synth_experiment_runs_every_method_and_ablation(tmp_path):
    ablations = [
        {"name": "no-agg", "aggregate": False},
        {"name": "dense", "dense": True},
        {"name": "paper-pre", "preprocess": "paper", "use_kd": False},
    ]
    config = parse_config(tiny_experiment(SYNTH, ablations=ablations))
    result = run_experiment(config, tmp_path / "out")

    keys = [m.key for m in result.methods]
    assert keys == ["zero_shot", "local_head", "fedclip", "fedavg", "fedmedclip", "no-agg", "dense", "paper-pre"]
    assert list(result.sites) == ["site-1", "site-2"]
    assert result.holdout is not None and "site-holdout" in result.holdout
    for method in result.methods:
        assert set(method.per_site) == {"site-1", "site-2"}, method.key
        for metrics in method.per_site.values():
            assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["ece"] <= 1.0
    by_key = {m.key: m for m in result.methods}
    # Held-out: predicted by a global model only; methods without one have none.
    assert by_key["fedmedclip"].holdout is not None and by_key["zero_shot"].holdout is not None
    assert by_key["local_head"].holdout is None and by_key["no-agg"].holdout is None
    # Traffic: the masked update is far smaller than dense fp32, which is far smaller than a whole CLIP.
    masked, dense = by_key["fedmedclip"], by_key["dense"]
    assert masked.uploads == dense.uploads == 2 * 2
    assert 0 < masked.upload_bytes < dense.upload_bytes < by_key["fedavg"].upload_bytes
    assert by_key["no-agg"].upload_bytes == 0 and by_key["zero_shot"].upload_bytes == 0
    assert masked.selected_round in (1, 2) and len(masked.val_curve) == 2
    assert by_key["paper-pre"].switches["preprocess"] == "paper"
    assert set(result.embedding) == {"clip", "paper"}

    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["key"] for m in written["methods"]] == keys
    assert written["paper"]["fedmedclip"]["avg_acc"] == 80.4
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| FedMedCLIP |" in markdown and "Published figures" in markdown and "NOT measured here" in markdown
    # The published figures come from fedmedclip/experiment/paper_facts.json, with the paper's citation.
    assert "arXiv 2511.07929" in markdown
    assert all(f"{value:.2f}" in markdown for value in paper.ISIC2019["fedmedclip"].per_site_acc or ())
    # Per-round history behind the plots, and the plots themselves embedded in results.md.
    assert all(len(curve) == 2 for curve in masked.val_per_site.values()) and set(masked.val_per_site) == {
        "site-1",
        "site-2",
    }
    assert len(masked.upload_per_round) == 2 and sum(masked.upload_per_round) == masked.upload_bytes
    for name in ("accuracy_per_round.png", "upload_per_round.png"):
        assert (tmp_path / "out" / name).read_bytes().startswith(b"\x89PNG") and f"]({name})" in markdown


def test_federation_replay_is_exact():
    """Model selection replays the federation up to the chosen round: that needs bit-identical reruns."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.nn.functional.normalize(torch.randn(3, 16, generator=generator), dim=-1)

    def site(name: str) -> SiteTensors:
        labels = torch.randint(0, 3, (20,), generator=generator)
        features = prototypes[labels] + 0.3 * torch.randn(20, 16, generator=generator)
        return SiteTensors(name, ["a", "b", "c"], prototypes, (features, labels), (features[:8], labels[:8]))

    sites = [site("x"), site("y")]
    config = SimulationConfig(rounds=3, train=TrainConfig(head_hidden=16), seed=1)
    first = run_federation(sites, 10.0, config)
    again = run_federation(sites, 10.0, SimulationConfig(rounds=2, train=TrainConfig(head_hidden=16), seed=1))
    assert first.rounds[1].eval_metrics == again.final_metrics


@pytest.mark.slow
def test_cli_runs_the_isic2019_protocol_on_a_fake_tree(isic_root, tmp_path):
    from fedmedclip.experiment.cli import experiment

    config = tiny_experiment(
        {"kind": "isic2019", "root": str(isic_root), "min_images_per_site": 5, "max_images_per_site": 10},
        methods=["zero_shot", "fedmedclip"],
    )
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    out = tmp_path / "run"
    import typer

    app = typer.Typer()
    app.command()(experiment)
    outcome = CliRunner().invoke(app, ["--config", str(path), "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert "FedMedCLIP" in outcome.output and "Published figures" in outcome.output
    written = json.loads((out / "results.json").read_text())
    assert list(written["sites"]) == ["anterior-torso", "head-neck"]
    assert written["holdout"] == {"unknown": 8}
    assert any("oral-genital (3)" in note for note in written["notes"])
    assert written["methods"][1]["holdout"]["n"] == 8


def test_cli_reports_config_and_data_errors(tmp_path, isic_root):
    import typer

    from fedmedclip.experiment.cli import experiment

    app = typer.Typer()
    app.command()(experiment)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {kind: synth, sitez: 2}\n")
    outcome = CliRunner().invoke(app, ["--config", str(bad)])
    assert outcome.exit_code == 2 and "sitez" in outcome.output
    (isic_root / "ISIC_2019_Training_Metadata.csv").unlink()
    config = tmp_path / "isic.yaml"
    config.write_text(json.dumps(tiny_experiment({"kind": "isic2019", "root": str(isic_root)})))
    outcome = CliRunner().invoke(app, ["--config", str(config), "--out", str(tmp_path / "o")])
    assert outcome.exit_code == 2 and "metadata CSV" in outcome.output


def test_labeled_site_embedding_keeps_paths_aligned(tiny_backbone, isic_root):
    from fedmedclip.data.isic2019 import load_isic2019
    from fedmedclip.data.sites import embed_site

    images = load_isic2019(isic_root, min_images_per_site=5).sites["head-neck"]
    broken = images.records[0].path
    broken.write_bytes(b"not a jpeg")
    site = embed_site(tiny_backbone, images, None, name="head-neck", split_seed=1)
    assert len(site.paths) == site.features.shape[0] == 11
    assert (broken, "not a recognised image format") in site.skipped
    assert site.part_paths("test") == [site.paths[i] for i in site.split.test]
    held = embed_site(tiny_backbone, images, None, name="h", test_only=True)
    assert held.split.train == [] and len(held.split.test) == 11
    assert Path(held.paths[0]).suffix == ".jpg"


def _result_with_history(tmp_path: Path):
    from fedmedclip.experiment.results import ExperimentResult, MethodResult
    from fedmedclip.training.metrics import reliability_bins

    generator = torch.Generator().manual_seed(0)
    confidence = 0.5 + 0.5 * torch.rand(200, generator=generator)
    correct = (torch.rand(200, generator=generator) < 0.6).float()
    ours = MethodResult(
        "fedmedclip",
        "FedMedCLIP",
        per_site={"site-1": {"accuracy": 0.7, "macro_f1": 0.6, "ece": 0.2}},
        rounds_run=3,
        selected_round=2,
        val_curve=[0.5, 0.7, 0.6],
        val_per_site={"site-1": [0.5, 0.7, 0.6]},
        upload_per_round=[9000, 8000, 8500],
        upload_bytes=25500,
        uploads=3,
        calibration={
            "method": "temperature",
            "per_site": {
                "site-1": {
                    "temperature": 2.0,
                    "val_ece_before": 0.3,
                    "val_ece_after": 0.05,
                    "test_ece_before": 0.28,
                    "test_ece_after": 0.09,
                }
            },
            "test_ece_before": 0.28,
            "test_ece_after": 0.09,
            "reliability": {
                "uncalibrated": reliability_bins(confidence, correct),
                "calibrated": reliability_bins(0.6 * confidence, correct),
            },
        },
    )
    return ExperimentResult(
        config=parse_config(tiny_experiment(SYNTH)),
        backbone="tiny",
        device="cpu",
        embed_dim=16,
        sites={"site-1": {"train": 30, "val": 10, "test": 10}},
        holdout=None,
        methods=[ours],
        embedding={},
        machine={},
        wall_seconds=1.0,
        finished_at="now",
    )


def test_results_md_embeds_accuracy_upload_and_reliability_plots_and_the_ece_table(tmp_path):
    from PIL import Image

    from fedmedclip.experiment.report import write_reports

    paths = write_reports(_result_with_history(tmp_path), tmp_path)
    markdown = paths["markdown"].read_text()
    for name in ("accuracy_per_round.png", "upload_per_round.png", "reliability.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
        assert f"]({name})" in markdown
    assert "| site-1 | 2.00 | 30.0 | 5.0 | 28.0 | 9.0 |" in markdown
    written = json.loads(paths["json"].read_text())
    assert written["methods"][0]["upload_per_round"] == [9000, 8000, 8500]
    assert written["methods"][0]["calibration"]["test_ece_after"] == 0.09
