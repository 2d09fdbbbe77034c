"""DP-SGD pieces for the FAM: exact per-sample gradients, clipping to C, Gaussian noise (docs/design.md §3.15).

Per-sample gradients come from ``torch.func`` (``vmap`` of ``grad`` over ``functional_call``). Opacus would
compute the FAM's per-sample gradients through the same functorch route, because the FAM's layers are custom
``MaskedLinear`` modules it has no grad sampler for; calling ``torch.func`` directly keeps the computation
visible and adds no dependency. The per-sample loss is ``CE(s · f̂ Tᵀ, y)`` (the prototype contrastive loss),
which depends on one sample only: the FAM normalises per sample (LayerNorm over features, softmax over
features, L2 norm) and the text prototypes are public.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from fedmedclip.model.fam import FeatureAdaptationModule

_CHUNK = 64  # samples per vmap call: bounds memory at CHUNK × |FAM| floats


def per_sample_loss(
    fam: FeatureAdaptationModule,
    params: dict[str, torch.Tensor],
    feature: torch.Tensor,
    label: torch.Tensor,
    text_prototypes: torch.Tensor,
    logit_scale: float,
) -> torch.Tensor:
    """``CE(s · f̂(x) Tᵀ, y)`` for one sample (``feature`` of shape (D,), ``label`` a 0-d tensor)."""
    adapted = functional_call(fam, params, (feature.unsqueeze(0),))
    return F.cross_entropy(logit_scale * adapted @ text_prototypes.T, label.unsqueeze(0))


def per_sample_gradients(
    fam: FeatureAdaptationModule,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    logit_scale: float,
) -> dict[str, torch.Tensor]:
    """Each sample's gradient of its own loss w.r.t. every FAM parameter: name → (B, *shape)."""
    params = {name: p.detach() for name, p in fam.named_parameters()}

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_loss(fam, p, x, y, text_prototypes, logit_scale)

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0), randomness="error")
    result: dict[str, torch.Tensor] = per_sample(params, features, labels)
    return result


def clipped_sum(
    fam: FeatureAdaptationModule,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    logit_scale: float,
    clip_norm: float,
) -> tuple[dict[str, torch.Tensor], int]:
    """``Σᵢ gᵢ · min(1, C/‖gᵢ‖)`` over the batch, the L2 norm taken over all FAM parameters jointly.

    Returns the sum and how many samples were actually clipped. An empty batch sums to zeros: the noise is
    added regardless, as Poisson-sampled DP-SGD requires.
    """
    total = {name: torch.zeros_like(p) for name, p in fam.named_parameters()}
    clipped = 0
    for start in range(0, features.shape[0], _CHUNK):
        grads = per_sample_gradients(
            fam, features[start : start + _CHUNK], labels[start : start + _CHUNK], text_prototypes, logit_scale
        )
        norms = torch.sqrt(sum((g.flatten(1) ** 2).sum(dim=1) for g in grads.values()))  # type: ignore[arg-type]
        factors = (clip_norm / (norms + 1e-12)).clamp(max=1.0)
        clipped += int((norms > clip_norm).sum())
        for name, g in grads.items():
            total[name] += torch.einsum("b,b...->...", factors, g)
    return total, clipped


def add_gaussian_noise(
    summed: dict[str, torch.Tensor], sigma: float, clip_norm: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``sum + N(0, (σ·C)² I)``, the noise drawn from ``generator`` on the tensors' device."""
    std = sigma * clip_norm
    return {
        name: value + std * torch.randn(value.shape, generator=generator, device=value.device, dtype=value.dtype)
        for name, value in summed.items()
    }


def noisy_mean_gradient(
    fam: FeatureAdaptationModule,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    logit_scale: float,
    *,
    clip_norm: float,
    sigma: float,
    expected_batch: float,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], int]:
    """One DP-SGD gradient: (clipped sum + noise) / expected batch size (fixed, so it reveals nothing)."""
    if not math.isfinite(expected_batch) or expected_batch <= 0:
        raise ValueError(f"expected batch size must be positive, got {expected_batch}")
    summed, clipped = clipped_sum(fam, features, labels, text_prototypes, logit_scale, clip_norm)
    noisy = add_gaussian_noise(summed, sigma, clip_norm, generator)
    return {name: value / expected_batch for name, value in noisy.items()}, clipped
