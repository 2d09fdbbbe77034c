import math

import numpy as np
import pytest

from fedmedclip.federation.fam_bytes import fam_from_bytes, fam_to_bytes, initial_fam


def test_round_trip_is_exact_and_deterministic():
    state = initial_fam(8, seed=2)
    data = fam_to_bytes(state)
    assert data == fam_to_bytes(state)
    restored = fam_from_bytes(data, dim=8)
    assert all(np.array_equal(restored[k], state[k]) for k in state)


def test_bad_bytes_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="not a safetensors FAM"):
        fam_from_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"has shape \[8.*expected \[16"):
        fam_from_bytes(fam_to_bytes(initial_fam(8, seed=0)), dim=16)
    broken = initial_fam(8, seed=0)
    broken["m2.bias"][0] = float("nan")
    with pytest.raises(ValueError, match=r"'m2\.bias' is not a finite"):
        fam_from_bytes(fam_to_bytes(broken))


def test_initial_fam_has_the_torch_initialisers_distribution():
    """Version 1 is drawn in numpy with nn.Linear's law: uniform in ±1/sqrt(D) for weights and biases."""
    from fedmedclip.model.fam import build_fam, fam_state

    numpy_state, torch_state = initial_fam(256, seed=3), fam_state(build_fam(256, seed=3))
    assert initial_fam(256, seed=3)["m1.weight"].tobytes() == numpy_state["m1.weight"].tobytes()  # seeded
    bound = 1 / 16
    for name, array in numpy_state.items():
        reference = torch_state[name].numpy()
        assert array.dtype == np.float32 and array.shape == reference.shape
        if name.endswith("kappa"):
            assert not array.any() and not reference.any()
            continue
        assert np.abs(array).max() <= bound
        # Same law: mean 0, variance bound²/3 (sample of 65,536 or 256 values, 5 standard errors).
        tolerance = 5 * bound**2 / 3 / math.sqrt(array.size / 2)
        assert abs(array.var() - reference.var()) <= 2 * tolerance, name
        assert abs(array.mean()) <= 5 * bound / math.sqrt(3 * array.size)


def test_version_one_trains_like_the_torch_module():
    """The numpy FAM loads into the torch module: every row alive, as with torch's own initialisation."""
    from fedmedclip.federation.arrays import to_torch
    from fedmedclip.federation.delta import alive_rows_of
    from fedmedclip.model.fam import build_fam

    fam = build_fam(64, to_torch(initial_fam(64, seed=0)))
    assert all(bool(alive.all()) for alive in alive_rows_of(fam).values())
