import pytest
import torch

from fedmedclip.model.masked import MASK_THRESHOLD, MaskedLinear, straight_through_step


def _layer(weight: list[list[float]], kappa: list[float], bias: list[float] | None = None) -> MaskedLinear:
    rows, cols = len(weight), len(weight[0])
    layer = MaskedLinear(cols, rows)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.kappa.copy_(torch.tensor(kappa))
        layer.bias.copy_(torch.tensor(bias or [0.0] * rows))
    return layer


def test_row_below_threshold_is_dead_and_bias_is_kept():
    # Row 0: mean|W| = 0.5 > tau. Row 1: mean|W| = 0.005 < tau = 0.01 -> dead.
    layer = _layer([[0.5, -0.5], [0.005, -0.005]], kappa=[0.0, 0.0], bias=[1.0, 2.0])
    out = layer(torch.tensor([[1.0, 3.0]]))
    assert layer.alive_rows().tolist() == [True, False]
    assert out[0].tolist() == pytest.approx([1.0 + 0.5 - 1.5, 2.0])


def test_kappa_kills_a_row_that_would_otherwise_be_alive():
    layer = _layer([[0.5, -0.5], [0.2, 0.2]], kappa=[0.0, 0.25])  # u=0.2, 0.2-0.25-0.01 < 0
    assert layer.alive_rows().tolist() == [True, False]


def test_kappa_receives_gradient_inside_the_window():
    layer = _layer([[0.5, -0.5], [0.2, 0.2]], kappa=[0.0, 0.0])
    layer(torch.tensor([[1.0, 2.0]])).sum().backward()
    assert layer.kappa.grad is not None
    # d out_i / d m_i = W_i · x: row 0 -> -0.5, row 1 -> 0.6; d m / d kappa = -1 inside |u-kappa-tau| <= 1.
    assert layer.kappa.grad.tolist() == pytest.approx([0.5, -0.6])


def test_no_gradient_outside_the_window():
    # u - kappa - tau = 0.5 - (-2) - 0.01 > 1: outside the straight-through window.
    layer = _layer([[0.5, -0.5]], kappa=[-2.0])
    layer(torch.tensor([[1.0, 2.0]])).sum().backward()
    assert layer.kappa.grad is not None
    assert layer.kappa.grad.tolist() == [0.0]


def test_straight_through_step_forward_and_backward():
    x = torch.tensor([-1.5, -0.5, 0.0, 0.3, 1.0, 2.0], requires_grad=True)
    y = straight_through_step(x)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_default_initialisation_keeps_every_row_alive():
    layer = MaskedLinear(512, 512)
    assert bool(layer.alive_rows().all())
    assert float(layer.weight.detach().abs().mean(dim=1).min()) > MASK_THRESHOLD


def test_folding_masks_keeps_outputs_and_removes_masked_layers():
    from fedmedclip.model.fam import build_fam
    from fedmedclip.model.masked import fold_masks

    fam = build_fam(8, seed=0).eval()
    with torch.no_grad():
        fam.m1.kappa[:3] = 1.0  # kill three rows so the fold has a mask to apply
    x = torch.randn(4, 8)
    expected = fam(x)
    folded = fold_masks(fam)
    assert not any(isinstance(m, MaskedLinear) for m in folded.modules())
    assert torch.allclose(folded(x), expected, atol=1e-6)
