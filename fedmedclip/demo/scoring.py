"""Per-site accuracy from the inference API's answers: each component and the ensemble, plus macro-F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fedmedclip.training.metrics import accuracy, macro_f1


@dataclass(frozen=True)
class SiteScore:
    n_images: int
    n_classes: int
    zero_shot_acc: float
    head_acc: float
    ensemble_acc: float
    macro_f1: float
    mean_alpha: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _argmax(probabilities: Mapping[str, float]) -> str:
    return max(probabilities.items(), key=lambda item: item[1])[0]


def score_site(truth: Sequence[str], answers: Sequence[Mapping[str, Any]]) -> SiteScore:
    """``answers`` are the API's per-image predictions, in the order of ``truth``."""
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
    return SiteScore(
        n_images=len(truth),
        n_classes=len(classes),
        zero_shot_acc=accuracy(zero_shot, labels),
        head_acc=accuracy(head, labels),
        ensemble_acc=accuracy(ensemble, labels),
        macro_f1=macro_f1(ensemble, labels, len(classes)),
        mean_alpha=sum(float(a["alpha"]) for a in answers) / len(answers),
    )
