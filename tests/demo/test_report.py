"""The demo's report pieces on their own: round history from a run status, scoring, report.md and plots."""

from __future__ import annotations

import json

import pytest
import torch

from fedmedclip.demo.history import round_history
from fedmedclip.demo.report import write_report
from fedmedclip.demo.scoring import score_site
from fedmedclip.model.ensemble import calibrate_probs
from fedmedclip.training.metrics import expected_calibration_error


def _participant(site: str, size: int, acc: float) -> dict[str, object]:
    return {
        "site": site,
        "state": "PARTICIPATION_STATE_ACCEPTED",
        "payload_bytes": str(size),  # protobuf JSON prints uint64 as a string
        "metrics": {"val_zero_shot_acc": 0.25, "val_head_acc": acc, "val_ensemble_acc": acc + 0.05, "train_loss": 1.0},
    }


STATUS = {
    "state": "RUN_STATE_COMPLETED",
    "rounds": [
        {
            "round": 1,
            "state": "ROUND_STATE_CLOSED",
            "opened_at": "2026-12-01T10:00:00.123456789Z",
            "closed_at": "2026-12-01T10:00:12.623456789Z",
            "input_version": "1",
            "output_version": "2",
            "participants": [_participant("site-1", 9000, 0.5), _participant("site-2", 8000, 0.6)],
        },
        {
            "round": 2,
            "state": "ROUND_STATE_CLOSED",
            "opened_at": "2026-12-01T10:00:13Z",
            "closed_at": "2026-12-01T10:00:20.5Z",
            "output_version": "3",
            "participants": [
                _participant("site-1", 8500, 0.7),
                {"site": "site-2", "state": "PARTICIPATION_STATE_MISSING"},
            ],
        },
        {"round": 3, "state": "ROUND_STATE_OPEN", "opened_at": "2026-12-01T10:00:21Z"},
    ],
}


def test_round_history_reads_versions_close_times_bytes_and_reported_metrics():
    history = round_history(STATUS)
    assert [h["round"] for h in history] == [1, 2] and [h["version"] for h in history] == [2, 3]
    assert history[0]["close_s"] == pytest.approx(12.5) and history[1]["close_s"] == pytest.approx(7.5)
    assert history[0]["bytes"] == {"site-1": 9000, "site-2": 8000} and history[1]["bytes"] == {"site-1": 8500}
    assert history[0]["metrics"]["site-2"] == {"zero_shot_acc": 0.25, "head_acc": 0.6, "ensemble_acc": 0.65}


def _answers(probs: torch.Tensor, classes: list[str]) -> list[dict[str, object]]:
    return [
        {
            "predicted_class": classes[int(row.argmax())],
            "probabilities": dict(zip(classes, row.tolist(), strict=True)),
            "zero_shot": dict(zip(classes, row.tolist(), strict=True)),
            "head": None,
            "alpha": 0.0,
        }
        for row in probs
    ]


def test_scoring_undoes_the_temperature_to_report_uncalibrated_ece():
    classes = ["a", "b", "c"]
    generator = torch.Generator().manual_seed(0)
    raw = torch.softmax(3 * torch.randn(50, 3, generator=generator), dim=-1)
    labels = torch.randint(0, 3, (50,), generator=generator)
    served = calibrate_probs(raw, 2.0)
    truth = [classes[i] for i in labels]
    record = {"temperature": 2.0, "ece_before": 0.3, "ece_after": 0.1}
    score = score_site(truth, _answers(served, classes), record)
    assert score.ece == pytest.approx(expected_calibration_error(served, labels), abs=1e-6)
    assert score.ece_uncalibrated == pytest.approx(expected_calibration_error(raw, labels), abs=1e-5)
    assert score.temperature == 2.0 and score.val_ece_after == 0.1
    plain = score_site(truth, _answers(raw, classes))
    assert plain.temperature is None and plain.ece == pytest.approx(plain.ece_uncalibrated)


def test_report_md_embeds_the_three_plots(tmp_path):
    classes = ["a", "b"]
    probs = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    sites = {name: score_site(["a", "b", "b"], _answers(probs, classes)).to_json() for name in ("site-1", "site-2")}
    report = {
        "backbone": {"name": "tiny", "weights": "random", "pretrained": False},
        "rounds_configured": 2,
        "rounds": round_history(STATUS),
        "sites": sites,
        "wall_time_s": 12.0,
    }
    json.dumps(report)  # what report.json holds
    markdown = write_report(report, tmp_path).read_text()
    for name in ("accuracy_per_round.png", "upload_per_round.png", "round_times.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG") and f"]({name})" in markdown
    assert "random init" in markdown and "| 1 | 2 | 12.5 | 17000 |" in markdown
