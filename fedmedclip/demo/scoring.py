"""Per-site accuracy from the inference API's answers: each component and the ensemble, plus macro-F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fedmedclip.model.ensemble import calibrate_probs
from fedmedclip.training.metrics import accuracy, expected_calibration_error, macro_f1


@dataclass(frozen=True)
class SiteScore:
    n_images: int
    n_classes: int
    zero_shot_acc: float
    head_acc: float
    ensemble_acc: float
    macro_f1: float
    mean_alpha: float
    ece: float  # of the probabilities the API served (calibrated when the bundle carries a temperature)
    ece_uncalibrated: float  # the same answers with the temperature undone
    temperature: float | None = None  # the bundle's, None when uncalibrated
    val_ece_before: float | None = None  # as recorded in the bundle manifest at fitting time
    val_ece_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _argmax(probabilities: Mapping[str, float]) -> str:
    return max(probabilities.items(), key=lambda item: item[1])[0]


def score_site(
    truth: Sequence[str], answers: Sequence[Mapping[str, Any]], calibration: Mapping[str, Any] | None = None
) -> SiteScore:
    """``answers`` are the API's per-image predictions, in the order of ``truth``; ``calibration`` is the
    site's manifest record (temperature, validation ECE before/after), or ``None``."""
    if len(truth) != len(answers) or not truth:
        raise ValueError(f"{len(answers)} answers for {len(truth)} images")
    classes = sorted(set(truth) | {c for a in answers for c in a["probabilities"]})
    index = {name: i for i, name in enumerate(classes)}
    labels = torch.tensor([index[name] for name in truth])

    def predicted(names: Sequence[str]) -> torch.Tensor:
        return torch.tensor([index[name] for name in names])

    ensemble = predicted([a["predicted_class"] for a in answers])
    zero_shot = predicted([_argmax(a["zero_shot"]) for a in answers])
    head = predicted([_argmax(a["head"]) if a.get("head") else a["predicted_class"] for a in answers])
    served = torch.tensor([[float(a["probabilities"].get(name, 0.0)) for name in classes] for a in answers])
    temperature = float(calibration["temperature"]) if calibration else None
    # Served p = softmax(log p_raw / T), so p_raw ∝ p^T: the uncalibrated answers, recovered exactly.
    raw = served if temperature is None else calibrate_probs(served, 1.0 / temperature)
    return SiteScore(
        n_images=len(truth),
        n_classes=len(classes),
        zero_shot_acc=accuracy(zero_shot, labels),
        head_acc=accuracy(head, labels),
        ensemble_acc=accuracy(ensemble, labels),
        macro_f1=macro_f1(ensemble, labels, len(classes)),
        mean_alpha=sum(float(a["alpha"]) for a in answers) / len(answers),
        ece=expected_calibration_error(served, labels),
        ece_uncalibrated=expected_calibration_error(raw, labels),
        temperature=temperature,
        val_ece_before=float(calibration["ece_before"]) if calibration else None,
        val_ece_after=float(calibration["ece_after"]) if calibration else None,
    )
