import pytest
import torch

from fedmedclip.model.ensemble import ensemble
from fedmedclip.training.metrics import accuracy, ensemble_report, expected_calibration_error, macro_f1


def test_accuracy_and_macro_f1_on_a_hand_made_example():
    predictions = torch.tensor([0, 0, 1, 1, 2, 0])
    labels = torch.tensor([0, 1, 1, 1, 2, 2])
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)
    # class 0: tp 1, fp 2 -> 0.5; class 1: tp 2, fn 1 -> 0.8; class 2: tp 1, fn 1 -> 2/3
    assert macro_f1(predictions, labels, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_ece_is_zero_for_calibrated_certainty_and_large_for_confident_errors():
    labels = torch.tensor([0, 1])
    assert expected_calibration_error(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), labels) == pytest.approx(0.0)
    assert expected_calibration_error(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), labels) == pytest.approx(1.0)


def test_ensemble_report_covers_each_component():
    adapted = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    out = ensemble(adapted, text, 10.0, torch.randn(8, 3))
    report = ensemble_report(out, torch.randint(0, 3, (8,)))
    assert set(report) == {"zero_shot_acc", "head_acc", "ensemble_acc", "macro_f1", "ece", "mean_alpha"}


def test_accuracy_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        accuracy(torch.tensor([]), torch.tensor([]))
