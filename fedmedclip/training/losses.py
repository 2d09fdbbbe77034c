"""The three local losses of FedMedCLIP (docs/design.md §3, "Local loss")."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from fedmedclip.model.ensemble import shannon_entropy

_EPS = 1e-12


def pairwise_contrastive_loss(adapted: torch.Tensor, class_text: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """CLIP-style symmetric loss: row i of ``S = s · f̂ T_yᵀ`` should pick column i, and vice versa.

    ``class_text`` holds the text embedding of each sample's own class (B × D).
    """
    logits = logit_scale * adapted @ class_text.T
    targets = torch.arange(adapted.shape[0], device=adapted.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def prototype_contrastive_loss(
    adapted: torch.Tensor, text_prototypes: torch.Tensor, labels: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """``CE(s · f̂ Tᵀ, y)``: no same-class false negatives, unlike the pairwise form."""
    return F.cross_entropy(logit_scale * adapted @ text_prototypes.T, labels)


def _kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p‖q) = Σ p (log p - log q)`` over dim 0 (the batch), one value per column, from log-probabilities.

    Working in log space keeps the term exact for any logit spread: clamping probabilities at a floor
    (as an earlier version did) underestimates it once a column's logits spread by more than about 55
    and gives the clamped entries no gradient.
    """
    return (log_p.exp() * (log_p - log_q)).sum(dim=0)


def kd_balance(cosines: torch.Tensor, head_logits: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``ϖ = mean_i H(p_F,i) / (H(p_F,i) + H(p_M,i))``, without gradient.

    Large when the zero-shot side is unsure: then the head's view is distilled into the FAM's
    (``KL(Q‖P)`` dominates); small when the head is unsure, which flips the direction.
    """
    with torch.no_grad():
        h_f = shannon_entropy(torch.softmax(logit_scale * cosines, dim=-1))
        h_m = shannon_entropy(torch.softmax(head_logits, dim=-1))
        return (h_f / (h_f + h_m).clamp_min(_EPS)).mean()


def adaptive_kd_loss(
    cosines: torch.Tensor, head_logits: torch.Tensor, logit_scale: float, temperature: float = 2.0
) -> torch.Tensor:
    """Class-level adaptive KD: for each class column compare distributions over the batch.

    ``P_c = softmax_batch(Z[:, c] / T)``, ``Q_c = softmax_batch(G[:, c] / T)``,
    ``L = (1/C) Σ_c [ϖ·KL(Q_c‖P_c) + (1-ϖ)·KL(P_c‖Q_c)]``.
    """
    balance = kd_balance(cosines, head_logits, logit_scale)
    log_p = torch.log_softmax(cosines / temperature, dim=0)
    log_q = torch.log_softmax(head_logits / temperature, dim=0)
    per_class = balance * _kl_divergence(log_q, log_p) + (1 - balance) * _kl_divergence(log_p, log_q)
    return per_class.mean()
