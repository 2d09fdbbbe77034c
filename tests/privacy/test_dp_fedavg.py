"""Site-level DP-FedAvg: whole-update clipping, noise of z_Δ·C, the adaptive clip, its own accountant."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event, rdp

from fedmedclip.privacy.config import PrivacyConfig
from fedmedclip.privacy.dp_fedavg import dp_fedavg_round, site_epsilon, update_noise_multiplier

SHAPES = {"m1.weight": (6, 6), "m1.bias": (6,)}


def _update(scale: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
    norm = math.sqrt(sum(float(np.sum(v**2)) for v in raw.values()))
    return {name: (v / norm * scale).astype(np.float32) for name, v in raw.items()}


PARENT = {name: np.zeros(shape, dtype=np.float32) for name, shape in SHAPES.items()}


def test_updates_are_clipped_as_a_whole_and_averaged_over_the_expected_sites() -> None:
    config = PrivacyConfig(mode="site", site_noise_multiplier=1e-9, site_count_noise=1e-8)
    small, large = _update(0.5, 1), _update(4.0, 2)
    new, record = dp_fedavg_round(PARENT, [small, large], 1.0, config, expected_sites=2.0)
    for name in SHAPES:
        expected = (small[name] + large[name] / 4.0) / 2.0  # the large update scaled to norm C = 1
        np.testing.assert_allclose(new[name], expected, atol=1e-6)
    assert record.clipped_sites == 1 and record.unclipped_fraction == pytest.approx(0.5, abs=1e-6)


def test_noise_on_the_sum_has_standard_deviation_z_delta_times_clip() -> None:
    config = PrivacyConfig(mode="site", site_noise_multiplier=0.8, site_count_noise=5.0)
    z_delta = update_noise_multiplier(0.8, 5.0)
    assert z_delta == pytest.approx((0.8**-2 - 10.0**-2) ** -0.5) and z_delta > 0.8
    rng = np.random.default_rng(3)
    samples = [dp_fedavg_round(PARENT, [], 2.0, config, 1.0, rng)[0] for _ in range(300)]
    noise = np.concatenate([np.concatenate([s[n].ravel() for n in SHAPES]) for s in samples])
    n = noise.size
    assert abs(noise.std() - z_delta * 2.0) < 4 * z_delta * 2.0 / math.sqrt(2 * n)
    with pytest.raises(ValueError, match="too small"):
        update_noise_multiplier(1.0, 0.4)


def test_the_clip_bound_moves_towards_the_target_quantile() -> None:
    config = PrivacyConfig(mode="site", site_noise_multiplier=0.5, site_count_noise=0.3, site_target_quantile=0.5)
    updates = [_update(norm, seed) for seed, norm in enumerate((1.0, 2.0, 3.0, 4.0))]
    clip = 0.1  # below every norm: nothing unclipped, so the bound must grow
    for step in range(60):
        _, record = dp_fedavg_round(PARENT, updates, clip, config, 4.0, np.random.default_rng(step))
        clip = record.next_clip
    assert 2.0 <= clip <= 3.0  # the median of the update norms
    _, shrink = dp_fedavg_round(PARENT, updates, 10.0, config, 4.0, np.random.default_rng(0))
    assert shrink.next_clip < 10.0


def test_site_level_epsilon_equals_the_library() -> None:
    config = PrivacyConfig(mode="site", site_noise_multiplier=1.2, site_sample_rate=0.1)
    eps, delta = site_epsilon(config, 50, 200)
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(1.2)), 50)
    assert delta == pytest.approx(1 / 2000) and eps == pytest.approx(accountant.get_epsilon(delta), rel=1e-12)
