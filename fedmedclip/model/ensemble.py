"""Entropy-weighted ensemble of CLIP zero-shot matching and the private head (docs/design.md §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

_EPS = 1e-12


def shannon_entropy(probs: torch.Tensor) -> torch.Tensor:
    """``H(p) = -Σ p log p`` over the last dimension (the reference used log_softmax(p); we do not)."""
    return -(probs * torch.log(probs.clamp_min(_EPS))).sum(dim=-1)


def zero_shot_probs(adapted: torch.Tensor, text_prototypes: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``p_F = softmax(s · f̂ Tᵀ)``."""
    return torch.softmax(logit_scale * adapted @ text_prototypes.T, dim=-1)


def entropy_weight(p_zero_shot: torch.Tensor, p_head: torch.Tensor) -> torch.Tensor:
    """``α = H(p_F) / (H(p_F) + H(p_M))`` per sample: large when the zero-shot side is unsure."""
    h_f = shannon_entropy(p_zero_shot)
    h_m = shannon_entropy(p_head)
    return h_f / (h_f + h_m).clamp_min(_EPS)


@dataclass(frozen=True)
class EnsembleOutput:
    probs: torch.Tensor  # p, B × C
    zero_shot: torch.Tensor  # p_F, B × C
    head: torch.Tensor | None  # p_M, B × C (None for a site without a head)
    alpha: torch.Tensor  # B, weight on the head

    @property
    def predictions(self) -> torch.Tensor:
        return self.probs.argmax(dim=-1)


def ensemble(
    adapted: torch.Tensor, text_prototypes: torch.Tensor, logit_scale: float, head_logits: torch.Tensor | None
) -> EnsembleOutput:
    """``p = (1-α) p_F + α p_M``; a site without a head uses ``p_F`` alone (α = 0)."""
    p_f = zero_shot_probs(adapted, text_prototypes, logit_scale)
    if head_logits is None:
        return EnsembleOutput(p_f, p_f, None, torch.zeros(p_f.shape[0], dtype=p_f.dtype, device=p_f.device))
    p_m = torch.softmax(head_logits, dim=-1)
    alpha = entropy_weight(p_f, p_m)
    probs = (1 - alpha).unsqueeze(-1) * p_f + alpha.unsqueeze(-1) * p_m
    return EnsembleOutput(probs, p_f, p_m, alpha)


def calibrate_probs(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log p / T)``: temperature scaling of a probability vector (docs/design.md §3, calibration).

    ``T = 1`` returns ``probs`` unchanged; ``T > 1`` softens, ``T < 1`` sharpens. The argmax never changes.
    """
    if temperature == 1.0:
        return probs
    log_probs = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return torch.softmax(log_probs / temperature, dim=-1)
