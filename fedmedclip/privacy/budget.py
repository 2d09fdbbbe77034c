"""A site's privacy budget: plan each round's DP-SGD, account for it, refuse the round that would overspend.

Torch-free (docs/design.md §3.15). The site is the authority on its own budget: it plans σ, q and the step
count from the run's ``PrivacyConfig`` and its own N, keeps the history of rounds it spent budget on, and
asks ``next_round`` before each round whether the round still fits ``target_epsilon``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedmedclip.privacy.accountant import GaussianSteps, calibrate_sigma, epsilon
from fedmedclip.privacy.config import PrivacyConfig
from fedmedclip.privacy.ledger import PrivacyLedger

_SLACK = 1e-9  # ε values equal up to floating-point noise count as within budget


@dataclass(frozen=True)
class RoundPlan:
    """One round's DP-SGD settings and the guarantee the site will hold once the round is sent."""

    sigma: float
    clip_norm: float
    sample_rate: float
    steps: int
    ledger: PrivacyLedger  # the cumulative guarantee after this round


@dataclass(frozen=True)
class BudgetSpent:
    """The next round would take ε past the target: the site stops contributing."""

    epsilon_spent: float
    epsilon_next: float
    target_epsilon: float
    rounds: int

    def message(self) -> str:
        return (
            f"privacy budget spent: {self.rounds} round(s) used ε = {self.epsilon_spent:.3f}; one more would "
            f"reach ε = {self.epsilon_next:.3f}, above the target {self.target_epsilon:g}"
        )


def plan_sigma(config: PrivacyConfig, num_samples: int, rounds: int, local_epochs: int) -> float:
    """The configured σ, or the smallest σ with which all ``rounds`` of the run fit the target ε."""
    if config.noise_multiplier is not None:
        return config.noise_multiplier
    q = config.sample_rate_for(num_samples)
    steps = rounds * steps_per_round(q, local_epochs)
    return calibrate_sigma(config.target_epsilon, config.delta_for(num_samples), q, steps)


def steps_per_round(sample_rate: float, local_epochs: int) -> int:
    """``⌈epochs / q⌉``: in expectation each record is sampled ``local_epochs`` times per round."""
    return max(1, math.ceil(local_epochs / sample_rate - 1e-9))


def history_from(entries: Sequence[Mapping[str, Any]]) -> list[GaussianSteps]:
    return [GaussianSteps(float(e["sample_rate"]), float(e["sigma"]), int(e["steps"])) for e in entries]


def next_round(
    config: PrivacyConfig,
    num_samples: int,
    sigma: float,
    history: Sequence[GaussianSteps],
    local_epochs: int,
) -> RoundPlan | BudgetSpent:
    """The plan for the next round, or ``BudgetSpent`` when it would exceed ``config.target_epsilon``."""
    q = config.sample_rate_for(num_samples)
    steps = steps_per_round(q, local_epochs)
    delta = config.delta_for(num_samples)
    after = [*history, GaussianSteps(q, sigma, steps)]
    eps_next = epsilon(after, delta)
    if eps_next > config.target_epsilon * (1 + _SLACK):
        return BudgetSpent(epsilon(history, delta), eps_next, config.target_epsilon, len(history))
    ledger = PrivacyLedger(
        epsilon=eps_next,
        delta=delta,
        sigma=sigma,
        clip_norm=config.clip_norm,
        sample_rate=q,
        steps=sum(h.steps for h in after),
        rounds=len(after),
        target_epsilon=config.target_epsilon,
    )
    return RoundPlan(sigma, config.clip_norm, q, steps, ledger)
