"""Temperature scaling of the ensemble (docs/design.md §3, calibration)."""

from __future__ import annotations

import pytest
import torch

from fedmedclip.model.ensemble import calibrate_probs
from fedmedclip.training.calibration import MIN_SAMPLES, Calibration, fit_temperature
from fedmedclip.training.metrics import expected_calibration_error


def _overconfident(n: int = 600, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities from logits 4x too sharp for how often they are right: a known true temperature of 4."""
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, classes, generator=generator) * 1.5
    labels = torch.multinomial(torch.softmax(true_logits, dim=-1), 1, generator=generator).squeeze(1)
    return torch.softmax(4.0 * true_logits, dim=-1), labels


def test_fit_recovers_the_true_temperature_and_lowers_ece():
    probs, labels = _overconfident()
    fitted = fit_temperature(probs, labels)
    assert fitted is not None
    assert fitted.temperature == pytest.approx(4.0, rel=0.15)
    assert fitted.nll_after < fitted.nll_before
    assert fitted.ece_after < 0.5 * fitted.ece_before
    # On fresh data from the same model the fitted temperature still helps: not fitted to the noise.
    fresh, fresh_labels = _overconfident(seed=1)
    before = expected_calibration_error(fresh, fresh_labels)
    after = expected_calibration_error(calibrate_probs(fresh, fitted.temperature), fresh_labels)
    assert after < 0.5 * before


def test_calibration_never_changes_a_prediction():
    probs, _ = _overconfident()
    for temperature in (0.3, 1.0, 5.0):
        assert torch.equal(calibrate_probs(probs, temperature).argmax(-1), probs.argmax(-1))
        assert torch.allclose(calibrate_probs(probs, temperature).sum(-1), torch.ones(len(probs)))


def test_too_little_or_one_class_validation_data_stays_uncalibrated():
    probs, labels = _overconfident(n=MIN_SAMPLES - 1)
    assert fit_temperature(probs, labels) is None
    probs, _ = _overconfident(n=50)
    assert fit_temperature(probs, torch.zeros(50, dtype=torch.int64)) is None
    with pytest.raises(ValueError, match="N × C"):
        fit_temperature(probs, torch.zeros(3, dtype=torch.int64))


def test_a_calibration_record_refuses_a_bad_temperature():
    with pytest.raises(ValueError, match="must be between"):
        Calibration(temperature=0.0, samples=30, ece_before=0.1, ece_after=0.05, nll_before=1.0, nll_after=0.9)
