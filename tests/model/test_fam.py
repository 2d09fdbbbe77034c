import math

import pytest
import torch

from fedmedclip.model.fam import FAM_TENSOR_NAMES, build_fam, fam_shapes, fam_state


def _manual_fam(state: dict[str, torch.Tensor], f: torch.Tensor) -> torch.Tensor:
    """The FAM written out step by step for one sample, from docs/design.md §3."""
    h = state["m1.weight"] @ f + state["m1.bias"]
    mean = sum(h.tolist()) / len(h)
    var = sum((v - mean) ** 2 for v in h.tolist()) / len(h)
    h = torch.tensor([(v - mean) / math.sqrt(var + 1e-5) for v in h.tolist()])
    z = state["m2.weight"] @ torch.relu(h) + state["m2.bias"]
    attention = torch.exp(z) / torch.exp(z).sum()
    adapted = attention * f
    return adapted / adapted.norm()


def test_fam_matches_the_equations_on_a_hand_made_input():
    fam = build_fam(4, seed=3)
    f = torch.tensor([0.3, -1.2, 0.8, 2.0])
    expected = _manual_fam(fam_state(fam), f)
    assert fam(f.unsqueeze(0))[0].tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_layer_norm_is_per_sample_standardisation_like_instance_norm_on_2d():
    fam = build_fam(8, seed=1)
    hidden = fam.m1(torch.randn(5, 8))
    ours = torch.nn.functional.layer_norm(hidden, (8,), eps=1e-5)
    reference = torch.nn.InstanceNorm1d(5)(
        hidden
    )  # unbatched (C=B, L=D) input: normalises each row  # what the paper's code applies to a (B, D) tensor
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(ours.mean(dim=1), torch.zeros(5), atol=1e-5)


def test_output_is_unit_norm_and_state_round_trips():
    fam = build_fam(16, seed=0)
    x = torch.randn(7, 16)
    out = fam(x)
    assert torch.allclose(out.norm(dim=1), torch.ones(7), atol=1e-5)
    state = fam_state(fam)
    assert tuple(state) == FAM_TENSOR_NAMES
    assert {k: tuple(v.shape) for k, v in state.items()} == fam_shapes(16)
    assert torch.equal(build_fam(16, state)(x), out)


def test_seeded_initialisation_is_deterministic_and_does_not_touch_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = fam_state(build_fam(8, seed=5))
    after = torch.rand(1)
    b = fam_state(build_fam(8, seed=5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(before, after)
