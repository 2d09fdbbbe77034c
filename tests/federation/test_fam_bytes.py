import pytest
import torch

from fedmedclip.federation.fam_bytes import fam_from_bytes, fam_to_bytes, initial_fam


def test_round_trip_is_exact_and_deterministic():
    state = initial_fam(8, seed=2)
    data = fam_to_bytes(state)
    assert data == fam_to_bytes(state)
    restored = fam_from_bytes(data, dim=8)
    assert all(torch.equal(restored[k], state[k]) for k in state)


def test_bad_bytes_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="not a safetensors FAM"):
        fam_from_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"has shape \[8.*expected \[16"):
        fam_from_bytes(fam_to_bytes(initial_fam(8, seed=0)), dim=16)
    broken = initial_fam(8, seed=0)
    broken["m2.bias"][0] = float("nan")
    with pytest.raises(ValueError, match=r"'m2\.bias' is not a finite"):
        fam_from_bytes(fam_to_bytes(broken))
