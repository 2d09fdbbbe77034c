"""FAM deltas, applying them, and the alive-row masks the codec relies on."""

from __future__ import annotations

import pytest
import torch

from fedmedclip.federation.delta import alive_rows_of, alive_rows_of_state, apply_delta, fam_delta
from fedmedclip.model.fam import FAM_MATRIX_NAMES, build_fam, fam_state


def test_delta_then_apply_restores_the_local_state() -> None:
    global_, local = fam_state(build_fam(8, seed=0)), fam_state(build_fam(8, seed=1))
    before = {name: tensor.clone() for name, tensor in global_.items()}
    delta = fam_delta(local, global_)
    restored = apply_delta(global_, delta)
    for name in local:
        torch.testing.assert_close(restored[name], local[name], rtol=0, atol=1e-6)
        assert torch.equal(global_[name], before[name])  # inputs untouched


def test_delta_refuses_mismatched_states() -> None:
    state = fam_state(build_fam(8))
    with pytest.raises(ValueError, match="names differ"):
        fam_delta({k: v for k, v in state.items() if k != "m1.bias"}, state)
    with pytest.raises(ValueError, match=r"'m2\.weight' has shape"):
        fam_delta({**state, "m2.weight": torch.zeros(8, 4)}, state)
    with pytest.raises(ValueError, match="not floating point"):
        apply_delta(state, {**state, "m1.kappa": torch.zeros(8, dtype=torch.int64)})


def test_alive_rows_follow_the_mask_rule() -> None:
    fam = build_fam(8)
    with torch.no_grad():
        fam.m1.kappa[2] = 10.0  # u - kappa - tau < 0: row 2 of m1 is dead
    alive = alive_rows_of(fam)
    assert set(alive) == set(FAM_MATRIX_NAMES)
    assert alive["m1.weight"].dtype == torch.bool
    assert alive["m1.weight"].tolist() == [i != 2 for i in range(8)]
    assert alive["m2.weight"].all()
    from_state = alive_rows_of_state(fam_state(fam))
    assert all(torch.equal(from_state[name], alive[name]) for name in alive)
