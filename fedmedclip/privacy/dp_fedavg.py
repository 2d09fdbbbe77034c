"""Site-level DP-FedAvg with adaptive clipping (Andrew et al. 2021), for a trusted aggregator in plain mode.

numpy only: the aggregator runs without torch (docs/design.md §3.16). One round, given the current global
FAM, every participating site's dense update Δₖ and the clip bound Cₜ:

    Δ̃ₖ = Δₖ · min(1, Cₜ/‖Δₖ‖)                  each site's whole update clipped (all FAM tensors jointly)
    Δ̄  = (Σₖ Δ̃ₖ + N(0, z_Δ² Cₜ² I)) / m           m = expected participants (fixed: the count is not released)
    b̄  = (Σₖ 1[‖Δₖ‖ ≤ Cₜ] + N(0, σ_b²)) / m       noised fraction of unclipped updates
    Cₜ₊₁ = Cₜ · exp(−η_C (b̄ − γ))                 geometric step towards the γ-quantile of update norms

with ``z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2)``, so that the pair (Δ̄, b̄) together is a Gaussian mechanism with noise
multiplier z (Andrew et al., Theorem 1). Every coordinate of the FAM gets noise, including rows no site sent.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedmedclip.privacy.accountant import GaussianSteps, epsilon
from fedmedclip.privacy.config import PrivacyConfig

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class SiteDpRound:
    """What one DP-FedAvg round did: the clip bound used and the next one, noise, and how many clipped."""

    clip: float
    next_clip: float
    update_noise_multiplier: float
    unclipped_fraction: float  # the noised b̄ (what the clip update used)
    clipped_sites: int


def update_noise_multiplier(z: float, count_noise: float) -> float:
    """``z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2)``; the count noise must leave room for it (2σ_b > z)."""
    remainder = z**-2 - (2 * count_noise) ** -2
    if remainder <= 0:
        raise ValueError(f"site_count_noise {count_noise} is too small for site_noise_multiplier {z}: need 2σ_b > z")
    return remainder**-0.5


def dp_fedavg_round(
    parent: Arrays,
    updates: Sequence[Arrays],
    clip: float,
    config: PrivacyConfig,
    expected_sites: float,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray], SiteDpRound]:
    """The new global state ``parent + Δ̄`` and the round's record (see the module docstring)."""
    if not math.isfinite(clip) or clip <= 0:
        raise ValueError(f"clip bound must be positive, got {clip}")
    if expected_sites <= 0:
        raise ValueError(f"expected number of sites must be positive, got {expected_sites}")
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    z_update = update_noise_multiplier(config.site_noise_multiplier, config.site_count_noise)
    total = {name: np.zeros(np.shape(value), dtype=np.float64) for name, value in parent.items()}
    unclipped = 0
    for update in updates:
        if set(update) != set(parent):
            raise ValueError("a site update does not hold exactly the FAM's tensors")
        norm = math.sqrt(sum(float(np.sum(np.square(np.asarray(v, dtype=np.float64)))) for v in update.values()))
        factor = min(1.0, clip / norm) if norm > 0 else 1.0
        unclipped += int(norm <= clip)
        for name, value in update.items():
            total[name] += factor * np.asarray(value, dtype=np.float64)
    new_state = {
        name: (
            np.asarray(parent[name], dtype=np.float64)
            + (total[name] + rng.normal(0.0, z_update * clip, size=total[name].shape)) / expected_sites
        ).astype(np.float32)
        for name in sorted(parent)
    }
    fraction = (unclipped + rng.normal(0.0, config.site_count_noise)) / expected_sites
    next_clip = clip * math.exp(-config.site_clip_lr * (fraction - config.site_target_quantile))
    return new_state, SiteDpRound(clip, next_clip, z_update, fraction, len(updates) - unclipped)


def site_epsilon(config: PrivacyConfig, rounds: int, num_sites: int) -> tuple[float, float]:
    """(ε, δ) per site after ``rounds`` DP-FedAvg rounds; δ defaults to 1/(10 · number of sites)."""
    delta = config.delta if config.delta is not None else 1.0 / (10.0 * max(num_sites, 1))
    steps = [GaussianSteps(config.site_sample_rate, config.site_noise_multiplier, rounds)]
    return epsilon(steps, delta), delta
