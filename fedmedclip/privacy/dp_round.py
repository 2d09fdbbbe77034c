"""A record-level differentially private local round (docs/design.md §3.15).

The FAM, the only thing that leaves the site, trains by DP-SGD: Poisson sampling at rate q, per-sample
gradients of the per-sample-decomposable prototype loss clipped to C, Gaussian noise σ·C on their sum.
The private head trains without noise on the same batches, on *detached* adapted features, with its usual
CE and the head side of the adaptive KD: no gradient flows from the head back into the FAM, so the FAM's
trajectory depends on the records only through the noised sums, and everything derived from it (the delta,
the codec's error-feedback residual, the alive-row masks) is post-processing.

Pure computation: no file, network or database access.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.model.head import build_head, head_state
from fedmedclip.privacy.dp_sgd import noisy_mean_gradient
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import RoundResult, recalibrate_batchnorm
from fedmedclip.training.losses import adaptive_kd_loss


@dataclass(frozen=True)
class DpSgdPlan:
    """What one private round runs: ``steps`` DP-SGD steps at Poisson rate ``sample_rate``, noise σ·C.

    ``noise_seed`` seeds the sampling and noise generators; ``None`` (every real round) draws the seed from
    ``secrets``, so nobody can predict or replay the noise.
    """

    clip_norm: float
    sigma: float
    sample_rate: float
    steps: int
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        if self.clip_norm <= 0 or self.sigma < 0 or not (0 < self.sample_rate <= 1) or self.steps < 1:
            raise ValueError(f"invalid DP-SGD plan: {self}")


def train_private_round(
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    global_fam: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None,
    *,
    logit_scale: float,
    plan: DpSgdPlan,
    config: TrainConfig | None = None,
    round_index: int = 0,
    seed: int = 0,
) -> RoundResult:
    """Like ``train_local_round``, with the FAM trained by DP-SGD under ``plan`` (see the module docstring)."""
    config = config or TrainConfig()
    num_samples, dim = features.shape
    num_classes = text_prototypes.shape[0]
    if num_samples < 2:
        raise ValueError(f"a local round needs at least 2 training samples, got {num_samples}")
    if labels.shape != (num_samples,) or text_prototypes.shape[1] != dim:
        raise ValueError("features, labels and text prototypes do not fit together")
    device = features.device
    fam = build_fam(dim, global_fam).to(device).train()
    head_module = build_head(dim, num_classes, head, seed=seed, hidden=config.head_hidden).to(device).train()
    fam_lr, head_lr = config.learning_rates(round_index)
    fam_optimiser = torch.optim.AdamW(
        fam.parameters(), lr=fam_lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )
    head_optimiser = torch.optim.AdamW(
        head_module.parameters(), lr=head_lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )
    noise_seed = plan.noise_seed if plan.noise_seed is not None else secrets.randbits(62)
    sampler = torch.Generator().manual_seed(noise_seed)
    noise = torch.Generator(device=device).manual_seed(noise_seed ^ 0x5DEECE66D)
    text = text_prototypes.to(device)
    labels = labels.to(device)
    expected_batch = plan.sample_rate * num_samples
    sums = torch.zeros(3, device=device)  # contrastive, head_ce, kd
    correct, seen, clipped, sampled, head_steps = 0, 0, 0, 0, 0
    for _ in range(plan.steps):
        chosen = (torch.rand(num_samples, generator=sampler) < plan.sample_rate).nonzero().squeeze(1).to(device)
        batch_features, batch_labels = features[chosen], labels[chosen]
        gradient, batch_clipped = noisy_mean_gradient(
            fam,
            batch_features,
            batch_labels,
            text,
            logit_scale,
            clip_norm=plan.clip_norm,
            sigma=plan.sigma,
            expected_batch=expected_batch,
            generator=noise,
        )
        fam_optimiser.zero_grad(set_to_none=True)
        for name, parameter in fam.named_parameters():
            parameter.grad = gradient[name]
        fam_optimiser.step()
        clipped += batch_clipped
        sampled += int(chosen.numel())
        if chosen.numel() < 2:  # BatchNorm cannot normalise fewer than two samples
            continue
        with torch.no_grad():
            adapted = fam(batch_features)  # detached: the head's losses never reach the FAM
            cosines = adapted @ text.T
            contrastive = F.cross_entropy(logit_scale * cosines, batch_labels)
        logits = head_module(adapted)
        head_ce = F.cross_entropy(logits, batch_labels) if config.use_head_ce else logits.new_zeros(())
        kd = adaptive_kd_loss(cosines, logits, logit_scale, config.kd_temperature) if config.use_kd else head_ce * 0
        head_optimiser.zero_grad(set_to_none=True)
        (head_ce + config.kd_weight * kd).backward()
        head_optimiser.step()
        head_steps += 1
        sums += torch.stack([contrastive, head_ce.detach(), kd.detach()])
        correct += int((logits.detach().argmax(dim=-1) == batch_labels).sum())
        seen += int(batch_labels.numel())
    recalibrate_batchnorm(fam, head_module, features, config.batch_size)
    means = (sums / max(head_steps, 1)).tolist()
    metrics = dict(zip(("contrastive", "head_ce", "kd"), means, strict=True))
    metrics["loss"] = metrics["contrastive"] + metrics["head_ce"] + config.kd_weight * metrics["kd"]
    if seen:
        metrics["train_head_acc"] = correct / seen
    metrics["dp_clipped_fraction"] = clipped / max(sampled, 1)
    metrics["fam_alive_rows"] = float(sum(int(layer.alive_rows().sum()) for layer in (fam.m1, fam.m2)))
    return RoundResult(fam_state(fam), head_state(head_module), num_samples, metrics)
