import math

import pytest
import torch

from fedmedclip.model.fam import build_fam
from fedmedclip.model.head import build_head
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import compute_loss
from fedmedclip.training.losses import (
    adaptive_kd_loss,
    kd_balance,
    pairwise_contrastive_loss,
    prototype_contrastive_loss,
)


def test_pairwise_contrastive_on_a_two_sample_example():
    adapted = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    class_text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # S = 2 * I: each row's CE is log(1 + e^-2); both directions are equal.
    expected = math.log(1 + math.exp(-2.0))
    assert float(pairwise_contrastive_loss(adapted, class_text, 2.0)) == pytest.approx(expected, abs=1e-6)


def test_prototype_contrastive_is_cross_entropy_over_classes():
    adapted = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    protos = torch.eye(2)
    labels = torch.tensor([0, 1])
    logits = 3.0 * adapted @ protos.T
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert float(prototype_contrastive_loss(adapted, protos, labels, 3.0)) == pytest.approx(float(expected))


def test_kd_is_zero_for_identical_views():
    cosines = torch.randn(6, 3)
    assert float(adaptive_kd_loss(cosines, cosines.clone(), logit_scale=1.0)) == pytest.approx(0.0, abs=1e-7)


def test_kd_is_positive_for_different_views_and_reaches_both_inputs():
    cosines = torch.randn(6, 3, requires_grad=True)
    logits = torch.randn(6, 3, requires_grad=True)
    loss = adaptive_kd_loss(cosines, logits, logit_scale=10.0)
    assert loss.item() > 0
    loss.backward()
    assert cosines.grad is not None and logits.grad is not None
    assert float(cosines.grad.abs().sum()) > 0 and float(logits.grad.abs().sum()) > 0


def test_kd_balance_matches_hand_computation_and_has_no_gradient():
    cosines = torch.zeros(1, 2, requires_grad=True)  # p_F uniform: H = ln 2
    logits = torch.tensor([[math.log(9.0), 0.0]], requires_grad=True)  # p_M = (0.9, 0.1)
    h_m = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    balance = kd_balance(cosines, logits, logit_scale=100.0)
    assert float(balance) == pytest.approx(math.log(2) / (math.log(2) + h_m), abs=1e-6)
    assert not balance.requires_grad


def test_kd_direction_follows_the_balance():
    # With balance -> 1 the loss is KL(Q‖P); with balance -> 0 it is KL(P‖Q). Build both extremes.
    torch.manual_seed(0)
    cosines = torch.randn(5, 2)
    sharp_head = torch.tensor([[20.0, -20.0]] * 5)
    p = torch.softmax(cosines / 2, dim=0)
    q = torch.softmax(sharp_head / 2, dim=0)
    kl_qp = float((q * (q.log() - p.log())).sum(dim=0).mean())
    # zero-shot uniform (scale 0) and head certain: balance = 1.
    assert float(adaptive_kd_loss(cosines, sharp_head, logit_scale=0.0)) == pytest.approx(kl_qp, rel=1e-4)


def test_total_loss_combines_terms_and_switches_work():
    fam, head = build_fam(8, seed=0), build_head(8, 3, hidden=16, seed=0)
    features, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    protos = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    config = TrainConfig(kd_weight=0.5)
    terms = compute_loss(fam, head, features, labels, protos, 10.0, config)
    expected = terms.contrastive + terms.head_ce + 0.5 * terms.kd
    assert terms.total.item() == pytest.approx(expected.item())
    only_ce = compute_loss(fam, head, features, labels, protos, 10.0, TrainConfig(use_contrastive=False, use_kd=False))
    assert float(only_ce.contrastive) == 0.0 and float(only_ce.kd) == 0.0
    assert float(only_ce.total) == pytest.approx(float(only_ce.head_ce))


def test_head_cross_entropy_shapes_the_fam():
    fam, head = build_fam(8, seed=0), build_head(8, 3, hidden=16, seed=0)
    features, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    protos = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    config = TrainConfig(use_contrastive=False, use_kd=False)
    compute_loss(fam, head, features, labels, protos, 10.0, config).total.backward()
    assert fam.m1.weight.grad is not None and float(fam.m1.weight.grad.abs().sum()) > 0
    assert fam.m1.kappa.grad is not None and float(fam.m1.kappa.grad.abs().sum()) > 0


def _kd_reference(cosines: torch.Tensor, logits: torch.Tensor, balance: float, temperature: float) -> float:
    """The KD term in float64 from log-softmax, written out independently of the library."""
    log_p = torch.log_softmax(cosines.double() / temperature, dim=0)
    log_q = torch.log_softmax(logits.double() / temperature, dim=0)
    kl_qp = (log_q.exp() * (log_q - log_p)).sum(dim=0)
    kl_pq = (log_p.exp() * (log_p - log_q)).sum(dim=0)
    return float((balance * kl_qp + (1 - balance) * kl_pq).mean())


@pytest.mark.parametrize("spread", [10.0, 80.0, 200.0])
def test_kd_equals_a_log_softmax_reference_at_large_logit_spreads(spread):
    # Each class column's logits spread by `spread` over the batch, in opposite order for the two views, so
    # every column has entries whose probability underflows any clamp floor.
    generator = torch.Generator().manual_seed(3)
    ramp = torch.linspace(-spread / 2, spread / 2, 8).unsqueeze(1)
    cosines = ramp + 0.1 * torch.randn(8, 3, generator=generator)
    logits = -ramp + 0.1 * torch.randn(8, 3, generator=generator)
    balance = float(kd_balance(cosines, logits, logit_scale=1.0))
    expected = _kd_reference(cosines, logits, balance, temperature=2.0)
    actual = float(adaptive_kd_loss(cosines, logits, logit_scale=1.0, temperature=2.0))
    assert actual == pytest.approx(expected, rel=1e-4)


def test_kd_gives_a_gradient_to_entries_far_in_the_tail():
    ramp = torch.linspace(-100.0, 100.0, 6).unsqueeze(1).repeat(1, 2)
    logits = (-ramp).clone().requires_grad_(True)
    adaptive_kd_loss(ramp, logits, logit_scale=1.0).backward()
    assert logits.grad is not None and bool((logits.grad.abs() > 0).all())
