"""One method's outcome, measured the same way for every method: accuracy, macro-F1 and ECE of its class
probabilities on each site's test split, plus traffic and compute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from fedmedclip.experiment.config import ExperimentConfig
from fedmedclip.training.metrics import accuracy, expected_calibration_error, macro_f1

Kind = Literal["method", "ablation"]


def probs_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, macro-F1 and ECE of predicted class probabilities (N × C) against labels."""
    labels = labels.to(probs.device)
    predictions = probs.argmax(dim=-1)
    return {
        "accuracy": accuracy(predictions, labels),
        "macro_f1": macro_f1(predictions, labels, probs.shape[1]),
        "ece": expected_calibration_error(probs, labels),
        "n": float(labels.numel()),
    }


def select_round(curve: list[float], selection: str) -> int:
    """Index of the round to report: the first best mean validation accuracy, or the last round."""
    if not curve:
        raise ValueError("no rounds to select from")
    if selection == "last":
        return len(curve) - 1
    return max(range(len(curve)), key=lambda i: (curve[i], -i))


@dataclass
class MethodResult:
    key: str  # "fedmedclip", "fedavg", or the ablation's name
    label: str  # what the tables show
    kind: Kind = "method"
    per_site: dict[str, dict[str, float]] = field(default_factory=dict)  # site → metrics on its test split
    holdout: dict[str, float] | None = None  # held-out site, predicted by the global model's zero-shot side
    upload_bytes: int = 0  # every upload of every site over every round run
    uploads: int = 0  # number of (site, round) uploads behind upload_bytes
    train_seconds: float = 0.0
    embed_seconds: float = 0.0  # the embedding pass this method relies on (shared by the cached methods)
    rounds_run: int = 0
    selected_round: int | None = None  # 1-based round reported, when the method selects one
    val_curve: list[float] = field(default_factory=list)  # mean validation accuracy per round
    val_per_site: dict[str, list[float]] = field(default_factory=dict)  # site → validation accuracy per round
    upload_per_round: list[int] = field(default_factory=list)  # bytes all sites uploaded, per round
    # Temperature scaling of the ensemble fitted per site on validation, judged on test (FedMedCLIP runs only):
    # {"per_site": {site: {temperature, val_ece_before, val_ece_after, test_ece_before, test_ece_after}},
    #  "test_ece_before", "test_ece_after", "reliability": {"uncalibrated": bins, "calibrated": bins}}
    calibration: dict[str, Any] | None = None
    switches: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def compute_seconds(self) -> float:
        return self.train_seconds + self.embed_seconds

    @property
    def upload_per_site_round(self) -> float | None:
        return self.upload_bytes / self.uploads if self.uploads else None

    def average(self, metric: str) -> float:
        """Unweighted mean over the training sites, as the paper averages."""
        values = [metrics[metric] for metrics in self.per_site.values() if metric in metrics]
        return sum(values) / len(values) if values else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "kind": self.kind,
            "per_site": self.per_site,
            "average": {name: self.average(name) for name in ("accuracy", "macro_f1", "ece")},
            "holdout": self.holdout,
            "upload_bytes_total": self.upload_bytes,
            "upload_bytes_per_site_round": self.upload_per_site_round,
            "train_seconds": self.train_seconds,
            "embed_seconds": self.embed_seconds,
            "compute_seconds": self.compute_seconds,
            "rounds_run": self.rounds_run,
            "selected_round": self.selected_round,
            "val_curve": self.val_curve,
            "val_per_site": self.val_per_site,
            "upload_per_round": self.upload_per_round,
            "calibration": self.calibration,
            "switches": self.switches,
            "notes": self.notes,
        }


RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    backbone: str
    device: str
    embed_dim: int
    sites: dict[str, dict[str, int]]  # training site → split sizes
    holdout: dict[str, int] | None  # held-out site name → its number of test images
    methods: list[MethodResult]
    embedding: dict[str, Any]
    machine: dict[str, Any]
    wall_seconds: float
    finished_at: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "config": self.config.model_dump(mode="json"),
            "backbone": self.backbone,
            "device": self.device,
            "embed_dim": self.embed_dim,
            "sites": self.sites,
            "holdout": self.holdout,
            "methods": [method.to_json() for method in self.methods],
            "embedding": self.embedding,
            "machine": self.machine,
            "wall_seconds": self.wall_seconds,
            "finished_at": self.finished_at,
            "notes": self.notes,
        }
