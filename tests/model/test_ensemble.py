import math

import pytest
import torch

from fedmedclip.model.ensemble import ensemble, entropy_weight, shannon_entropy


def test_shannon_entropy_of_known_distributions():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    expected = [math.log(2), 0.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]
    assert shannon_entropy(probs).tolist() == pytest.approx(expected, abs=1e-6)


def test_alpha_moves_weight_to_the_head_when_zero_shot_is_unsure():
    p_f = torch.tensor([[0.5, 0.5], [0.99, 0.01]])
    p_m = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    alpha = entropy_weight(p_f, p_m)
    h_f0, h_m0 = math.log(2), -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert float(alpha[0]) == pytest.approx(h_f0 / (h_f0 + h_m0), abs=1e-6)
    assert float(alpha[0]) > 0.5 > float(alpha[1])


def test_ensemble_mixes_components_with_alpha():
    adapted = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    text = torch.eye(2)
    head_logits = torch.tensor([[0.0, 3.0], [2.0, -2.0]])
    out = ensemble(adapted, text, logit_scale=10.0, head_logits=head_logits)
    p_f = torch.softmax(10.0 * adapted @ text.T, dim=-1)
    p_m = torch.softmax(head_logits, dim=-1)
    alpha = entropy_weight(p_f, p_m)
    expected = (1 - alpha)[:, None] * p_f + alpha[:, None] * p_m
    assert torch.allclose(out.probs, expected)
    assert torch.allclose(out.probs.sum(dim=1), torch.ones(2))
    assert out.head is not None and torch.allclose(out.head, p_m)


def test_a_site_without_a_head_uses_zero_shot_alone():
    adapted = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1)
    out = ensemble(adapted, text, logit_scale=100.0, head_logits=None)
    assert torch.equal(out.probs, out.zero_shot)
    assert out.alpha.tolist() == [0.0, 0.0, 0.0]
