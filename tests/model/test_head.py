import pytest
import torch

from fedmedclip.model.head import PrivateHead, build_head, head_state
from fedmedclip.model.masked import MaskedLinear


def test_head_architecture_is_three_masked_blocks_and_a_masked_classifier():
    head = PrivateHead(dim=16, num_classes=5, hidden=8)
    masked = [m for m in head.modules() if isinstance(m, MaskedLinear)]
    norms = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in masked] == [(16, 8), (8, 8), (8, 8), (8, 5)]
    assert len(norms) == 3
    assert head(torch.randn(4, 16)).shape == (4, 5)


def test_head_state_includes_batchnorm_statistics_and_round_trips():
    head = build_head(16, 3, hidden=8, seed=2).train()
    head(torch.randn(10, 16))  # updates running statistics
    state = head_state(head)
    assert any(k.endswith("running_mean") for k in state)
    restored = build_head(16, 3, state, hidden=8).eval()
    x = torch.randn(4, 16)
    assert torch.equal(restored(x), head.eval()(x))


def test_head_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        PrivateHead(8, 1)
