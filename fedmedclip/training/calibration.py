"""Post-hoc calibration of a site's ensemble: one temperature fitted on the validation split (docs/design.md §3).

The ensemble ``p = (1-α) p_F + α p_M`` is a mixture of two softmaxes, so it has no single logit vector to
scale; we scale its log-probabilities instead, ``p_T = softmax(log p / T)``, which is temperature scaling
(Guo et al., 2017) applied to the mixture. It keeps every prediction (the argmax is unchanged) and only
reshapes how confident the probabilities are. One parameter cannot overfit a few dozen validation images
the way histogram binning or isotonic regression would, which is why it is the method here.

The negative log-likelihood of ``softmax(β·z)`` is convex in ``β = 1/T``, so a golden-section search over a
bracket finds the optimum without a learning rate or a random start. Pure computation: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fedmedclip.model.ensemble import calibrate_probs
from fedmedclip.training.metrics import expected_calibration_error

METHOD = "temperature"
MIN_SAMPLES = 20  # below this a fitted temperature says more about the few images than about the model
_BETA_RANGE = (0.02, 50.0)  # T from 0.02 to 50: far beyond anything a sane model needs
_ITERATIONS = 80
# What a stored temperature may be: wide of the fit's bracket, yet narrow enough that ``log p / T`` stays
# finite in float32 (log p ≥ -88), so a hand-edited manifest cannot make every probability NaN at predict.
TEMPERATURE_LIMITS = (1e-3, 1e3)


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did on the split it was fitted on."""

    temperature: float
    samples: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    method: str = METHOD
    split: str = "val"

    def __post_init__(self) -> None:
        low, high = TEMPERATURE_LIMITS
        if not (math.isfinite(self.temperature) and low <= self.temperature <= high):
            raise ValueError(f"calibration temperature must be between {low} and {high}, got {self.temperature!r}")
        if self.method != METHOD:
            raise ValueError(f"unknown calibration method {self.method!r}; this build knows {METHOD!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nll(log_probs: torch.Tensor, labels: torch.Tensor, beta: float) -> float:
    scaled = torch.log_softmax(beta * log_probs, dim=-1)
    return float(-scaled.gather(1, labels.unsqueeze(1)).mean())


def fit_temperature(probs: torch.Tensor, labels: torch.Tensor, split: str = "val") -> Calibration | None:
    """The temperature minimising the NLL of ``softmax(log p / T)`` on ``(probs, labels)``.

    ``probs`` are the uncalibrated ensemble probabilities (N × C). Returns ``None`` (stay uncalibrated) when
    there are fewer than ``MIN_SAMPLES`` samples or only one class among the labels.
    """
    if probs.dim() != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probs must be N × C and labels N, got {tuple(probs.shape)} and {tuple(labels.shape)}")
    labels = labels.to(probs.device, torch.int64)
    if labels.numel() < MIN_SAMPLES or labels.unique().numel() < 2:
        return None
    log_probs = torch.log(probs.detach().double().clamp_min(torch.finfo(torch.float64).tiny))
    low, high = _BETA_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = math.log(low), math.log(high)  # search log β: the bracket spans three orders of magnitude
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _nll(log_probs, labels, math.exp(c)), _nll(log_probs, labels, math.exp(d))
    for _ in range(_ITERATIONS):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _nll(log_probs, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _nll(log_probs, labels, math.exp(d))
    beta = math.exp((a + b) / 2)
    nll_before, nll_after = _nll(log_probs, labels, 1.0), _nll(log_probs, labels, beta)
    if nll_after > nll_before:  # a convex search never ends worse than T = 1 unless 1 lies outside the bracket
        beta, nll_after = 1.0, nll_before
    temperature = 1.0 / beta
    calibrated = calibrate_probs(probs.detach().float(), temperature)
    return Calibration(
        temperature=temperature,
        samples=int(labels.numel()),
        ece_before=expected_calibration_error(probs.detach().float(), labels),
        ece_after=expected_calibration_error(calibrated, labels),
        nll_before=nll_before,
        nll_after=nll_after,
        split=split,
    )
