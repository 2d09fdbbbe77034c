"""Evaluation metrics: accuracy, macro-F1 and expected calibration error, on tensors."""

from __future__ import annotations

import itertools

import torch

from fedmedclip.model.ensemble import EnsembleOutput


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((predictions == labels).float().mean())


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    scores = []
    for c in range(num_classes):
        predicted, actual = predictions == c, labels == c
        if not predicted.any() and not actual.any():
            continue
        true_pos = float((predicted & actual).sum())
        denominator = float(predicted.sum()) + float(actual.sum())
        scores.append(2 * true_pos / denominator)
    return sum(scores) / len(scores) if scores else 0.0


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins."""
    confidence, predictions = probs.max(dim=-1)
    correct = (predictions == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            gap = (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
            total += float(gap) * float(in_bin.float().mean())
    return total


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width bin of top-class ``confidence``: mean confidence, accuracy (mean of ``correct``, 0/1)
    and count; the reliability diagram's data. Takes confidences, not probabilities, so that samples from
    sites with different label spaces can be pooled."""
    confidence, correct = confidence.float().cpu(), correct.float().cpu()
    edges = torch.linspace(0, 1, bins + 1)
    out = []
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        count = int(in_bin.sum())
        out.append(
            {
                "low": float(low),
                "high": float(high),
                "confidence": float(confidence[in_bin].mean()) if count else float("nan"),
                "accuracy": float(correct[in_bin].mean()) if count else float("nan"),
                "count": float(count),
            }
        )
    return out


def ensemble_report(output: EnsembleOutput, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy of each component and of the mix, with macro-F1 and ECE of the mix."""
    labels = labels.to(output.probs.device)
    num_classes = output.probs.shape[1]
    report = {
        "zero_shot_acc": accuracy(output.zero_shot.argmax(dim=-1), labels),
        "ensemble_acc": accuracy(output.predictions, labels),
        "macro_f1": macro_f1(output.predictions, labels, num_classes),
        "ece": expected_calibration_error(output.probs, labels),
        "mean_alpha": float(output.alpha.mean()),
    }
    if output.head is not None:
        report["head_acc"] = accuracy(output.head.argmax(dim=-1), labels)
    return report
