"""One method's outcome, measured the same way for every method: accuracy, macro-F1 and ECE of its class
probabilities on each site's test split, plus traffic and compute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

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
            "switches": self.switches,
            "notes": self.notes,
        }
