"""A poisoned site among honest ones: how far each aggregation rule lets it move the global FAM.

Five honest sites send small deltas around a common direction; the poisoned site sends the negated mean
delta ×1000 and claims 10^9 samples. "Shift" is the L2 distance between the new global FAM and the one the
five honest sites alone would have produced under the plain mean; "honest step" is the norm of that honest
update, for scale. ``python -m tests.federation.test_robust`` prints the table of the report.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.robust import capped_samples, clip_scale, median, trimmed_mean
from fedmedclip.federation.sparse import SparseTensor, SparseUpdate
from fedmedclip.model.fam import fam_shapes

DIM = 32


def _global() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=generator) * 0.1 for name, shape in fam_shapes(DIM).items()}


def _dense(delta: dict[str, torch.Tensor]) -> SparseUpdate:
    return SparseUpdate({name: SparseTensor(tuple(t.shape), None, t) for name, t in delta.items()})


def scenario() -> tuple[dict[str, torch.Tensor], list[SiteUpdate], SiteUpdate]:
    generator = torch.Generator().manual_seed(1)
    direction = {name: torch.randn(shape, generator=generator) * 0.01 for name, shape in fam_shapes(DIM).items()}
    honest = []
    for i in range(5):
        noise = {name: torch.randn(t.shape, generator=generator) * 0.003 for name, t in direction.items()}
        honest.append(SiteUpdate(f"honest-{i}", 100 + 10 * i, _dense({n: direction[n] + noise[n] for n in direction})))
    poisoned = SiteUpdate("poisoned", 10**9, _dense({n: -1000 * t for n, t in direction.items()}))
    return _global(), honest, poisoned


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Between FAMs given as numpy arrays (aggregates) or torch tensors (the global state built here)."""
    return math.sqrt(sum(float(np.sum((np.asarray(a[n], np.float64) - np.asarray(b[n], np.float64)) ** 2)) for n in a))


def shifts() -> dict[str, float]:
    """Shift of the global FAM caused by the poisoned site, per defence (the figures of the report)."""
    state, honest, poisoned = scenario()
    reference = aggregate(state, honest)
    everyone = [*honest, poisoned]
    honest_step = _distance(reference, state)
    clip = 2 * max(
        math.sqrt(sum(float(np.sum(t.values.astype(np.float64) ** 2)) for t in u.update.tensors.values()))
        for u in honest
    )
    capped = [SiteUpdate(u.site, capped_samples(u.num_samples, 1000), u.update) for u in everyone]
    return {
        "honest step (no attacker)": honest_step,
        "mean": _distance(aggregate(state, everyone), reference),
        "mean, samples capped at 1000": _distance(aggregate(state, capped), reference),
        "clipped mean (clip 2× honest norm)": _distance(aggregate(state, everyone, clip_norm=clip), reference),
        "clipped mean + cap": _distance(aggregate(state, capped, clip_norm=clip), reference),
        "trimmed mean (trim 0.2)": _distance(aggregate(state, everyone, rule="trimmed_mean"), reference),
        "median": _distance(aggregate(state, everyone, rule="median"), reference),
    }


def test_the_plain_mean_is_taken_over_by_the_poisoned_site() -> None:
    figures = shifts()
    assert figures["mean"] > 500 * figures["honest step (no attacker)"]


def test_the_clip_bounds_the_damage_by_the_clip_and_the_weight_cap_shrinks_it_further() -> None:
    figures = shifts()
    step = figures["honest step (no attacker)"]
    # A cap alone only lowers the attacker's weight (1000 vs 600 honest samples): still far off.
    assert figures["mean, samples capped at 1000"] < 0.7 * figures["mean"]
    # The clip bounds the attacker's whole contribution by the clip norm (2× an honest update's): with
    # a 10^9 weight it still takes the whole step, but no further than honest step + clip ≈ 3 steps.
    assert figures["clipped mean (clip 2× honest norm)"] < 3.2 * step
    assert figures["clipped mean + cap"] < 2.0 * step


def test_trimmed_mean_and_median_ignore_the_poisoned_site_without_any_bound() -> None:
    figures = shifts()
    step = figures["honest step (no attacker)"]
    assert figures["trimmed mean (trim 0.2)"] < 0.3 * step
    assert figures["median"] < 0.3 * step


def test_robust_rules_count_only_the_sites_that_sent_a_row() -> None:
    values = np.array([[[1.0]], [[2.0]], [[3.0]], [[1000.0]], [[9.0]]])
    sent = np.array([[True], [True], [True], [False], [True]])
    assert median(values, sent)[0, 0] == pytest.approx(2.5)  # 1000 was never sent: median of 1, 2, 3, 9
    assert trimmed_mean(values, sent, 0.25)[0, 0] == pytest.approx(2.5)  # cut 1 from each end of 4
    assert median(values, np.zeros_like(sent))[0, 0] == 0.0  # nobody sent the row: no change


def test_clip_scale_and_capped_samples() -> None:
    assert clip_scale(4.0, 1.0) == pytest.approx(0.5)
    assert clip_scale(0.25, 1.0) == 1.0
    assert clip_scale(1e12, None) == 1.0
    assert capped_samples(10**9, 1000, None) == 1000
    assert capped_samples(5, None) == 5


if __name__ == "__main__":
    for label, value in shifts().items():
        print(f"{label:40s} {value:12.4f}")


def test_the_plain_mode_defences_are_refused_with_secure_aggregation() -> None:
    from fedmedclip.federation.run_config import RunConfig
    from fedmedclip.secagg.config import SecureAggregationConfig

    secure = SecureAggregationConfig(enabled=True)
    with pytest.raises(ValueError, match="apply to plain rounds"):
        RunConfig(embed_dim=DIM, secure_aggregation=secure, aggregation_rule="trimmed_mean")
    with pytest.raises(ValueError, match="apply to plain rounds"):
        RunConfig(embed_dim=DIM, secure_aggregation=secure, clip_norm=1.0)
    RunConfig(embed_dim=DIM, aggregation_rule="median", clip_norm=1.0, max_samples_per_site=100)
