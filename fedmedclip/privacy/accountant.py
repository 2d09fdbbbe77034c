"""ε from Google's ``dp-accounting`` RDP accountant, for Poisson-sampled Gaussian steps (docs/design.md §3.15).

Torch-free (the aggregator's site-level accountant uses it too). Every ε this project reports comes from
here: the steps a site ran are composed afresh each time, so the number is exactly what the library says
for those parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dp_accounting
from dp_accounting import dp_event, rdp


@dataclass(frozen=True)
class GaussianSteps:
    """``steps`` applications of the sampled Gaussian mechanism: rate ``sample_rate``, multiplier ``sigma``."""

    sample_rate: float
    sigma: float
    steps: int

    def event(self) -> dp_event.DpEvent:
        single: dp_event.DpEvent = dp_event.GaussianDpEvent(self.sigma)
        if self.sample_rate < 1.0:
            single = dp_event.PoissonSampledDpEvent(self.sample_rate, single)
        return dp_event.SelfComposedDpEvent(single, self.steps)


@contextmanager
def _quiet_absl() -> Iterator[None]:
    # The RDP code warns for every fractional order whose series does not converge and then just skips it.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def epsilon(history: Iterable[GaussianSteps], delta: float) -> float:
    """ε at ``delta`` for the composition of ``history`` (0 for no steps)."""
    events = [entry.event() for entry in history if entry.steps > 0]
    if not events:
        return 0.0
    accountant = rdp.RdpAccountant()
    with _quiet_absl():
        for item in events:
            accountant.compose(item)
        return float(accountant.get_epsilon(delta))


def calibrate_sigma(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier σ for which ``steps`` sampled Gaussian steps stay within ``target_epsilon``."""
    if steps < 1:
        raise ValueError("calibrate_sigma needs at least one step")

    def event(sigma: float) -> dp_event.DpEvent:
        return GaussianSteps(sample_rate, sigma, steps).event()

    with _quiet_absl():
        sigma = dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant,
            event,
            target_epsilon,
            delta,
            dp_accounting.ExplicitBracketInterval(0.05, 500.0),
            tol=1e-4,
        )
    return float(sigma) * (1 + 1e-4)  # the bisection stops within tol; stay on the safe side of the target
