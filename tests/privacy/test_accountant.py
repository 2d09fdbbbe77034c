"""ε comes from dp-accounting exactly, σ calibration fits the budget, and the budget stops the right round."""

from __future__ import annotations

import pytest
from dp_accounting import dp_event, rdp

from fedmedclip.privacy.accountant import GaussianSteps, calibrate_sigma, epsilon
from fedmedclip.privacy.budget import BudgetSpent, RoundPlan, next_round, plan_sigma, steps_per_round
from fedmedclip.privacy.config import PrivacyConfig


def _library(q: float, sigma: float, steps: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)
    return float(accountant.get_epsilon(delta))


def test_epsilon_equals_the_library_called_directly() -> None:
    history = [GaussianSteps(0.1, 1.1, 10), GaussianSteps(0.1, 1.1, 10), GaussianSteps(0.1, 1.1, 10)]
    assert epsilon(history, 1e-5) == pytest.approx(_library(0.1, 1.1, 30, 1e-5), rel=1e-12)
    assert epsilon([], 1e-5) == 0.0
    assert epsilon([GaussianSteps(0.05, 0.8, 7)], 2e-6) == pytest.approx(_library(0.05, 0.8, 7, 2e-6), rel=1e-12)


def test_calibrated_sigma_spends_the_whole_budget_and_no_more() -> None:
    sigma = calibrate_sigma(3.0, 1e-5, 0.2, 25)
    spent = _library(0.2, sigma, 25, 1e-5)
    assert 2.9 < spent <= 3.0


def test_default_delta_and_sample_rate_follow_the_site_size() -> None:
    config = PrivacyConfig(mode="record", batch_size=50)
    assert config.delta_for(1000) == pytest.approx(1e-4)
    assert config.sample_rate_for(1000) == pytest.approx(0.05)
    assert config.sample_rate_for(20) == 1.0
    assert steps_per_round(0.05, 1) == 20
    assert steps_per_round(0.3, 2) == 7


def test_budget_refuses_exactly_the_round_that_would_exceed_the_target() -> None:
    config = PrivacyConfig(mode="record", target_epsilon=6.0, noise_multiplier=1.0, batch_size=25, delta=1e-5)
    n = 100  # q = 0.25, 4 steps a round
    per_round = [_library(0.25, 1.0, 4 * k, 1e-5) for k in range(1, 30)]
    allowed = sum(1 for value in per_round if value <= 6.0)
    assert 1 <= allowed < 29
    history: list[GaussianSteps] = []
    for round_number in range(1, allowed + 2):
        plan = next_round(config, n, 1.0, history, local_epochs=1)
        if round_number <= allowed:
            assert isinstance(plan, RoundPlan), round_number
            assert plan.ledger.epsilon == pytest.approx(per_round[round_number - 1], rel=1e-12)
            assert (plan.ledger.steps, plan.ledger.rounds) == (4 * round_number, round_number)
            history.append(GaussianSteps(plan.sample_rate, plan.sigma, plan.steps))
        else:
            assert isinstance(plan, BudgetSpent)
            assert plan.rounds == allowed and plan.epsilon_next > 6.0 >= plan.epsilon_spent
            assert "budget spent" in plan.message()


def test_planned_sigma_lets_every_round_of_the_run_fit() -> None:
    config = PrivacyConfig(mode="record", target_epsilon=8.0, batch_size=40)
    sigma = plan_sigma(config, 200, rounds=5, local_epochs=1)
    history: list[GaussianSteps] = []
    for _ in range(5):
        plan = next_round(config, 200, sigma, history, local_epochs=1)
        assert isinstance(plan, RoundPlan)
        history.append(GaussianSteps(plan.sample_rate, plan.sigma, plan.steps))
    assert 7.8 < plan.ledger.epsilon <= 8.0
    assert isinstance(next_round(config, 200, sigma, history, local_epochs=1), BudgetSpent)


def test_bad_privacy_settings_are_refused_with_their_names() -> None:
    with pytest.raises(ValueError, match="target_epsilon"):
        PrivacyConfig(mode="record", target_epsilon=0)
    with pytest.raises(ValueError, match="mode"):
        PrivacyConfig(mode="everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown privacy settings: epsilon"):
        PrivacyConfig.from_dict({"epsilon": 1})
