"""FAM versions as bytes, as the aggregator stores them and sites download them (numpy, no torch).

Safetensors of the float32 tensors keyed by ``FAM_TENSOR_NAMES``; never pickle. The bytes are the same
whether the tensors come from torch or numpy (safetensors writes the same header and data for both).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from fedmedclip.federation.arrays import Array, to_numpy
from fedmedclip.model.fam_layout import FAM_MATRIX_NAMES, FAM_TENSOR_NAMES, fam_shapes

SAFETENSORS = "safetensors"


def fam_to_bytes(state: Mapping[str, Any]) -> bytes:
    """Deterministic bytes: safetensors sorts its keys, and there is no metadata with a timestamp."""
    return save_safetensors(
        {name: np.ascontiguousarray(to_numpy(state[name]), dtype=np.float32) for name in FAM_TENSOR_NAMES}
    )


def fam_from_bytes(data: bytes, dim: int | None = None) -> dict[str, Array]:
    """Parse and check a stored FAM as float32 arrays; ``dim`` also checks every shape. Raises ``ValueError``.

    Torch callers convert with ``fedmedclip.federation.arrays.to_torch``.
    """
    try:
        state = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types; all mean "not a FAM file"
        raise ValueError(f"not a safetensors FAM: {exc}") from exc
    if set(state) != set(FAM_TENSOR_NAMES):
        raise ValueError(f"FAM tensors {sorted(state)}, expected {sorted(FAM_TENSOR_NAMES)}")
    if dim is not None:
        expected = fam_shapes(dim)
        for name, array in state.items():
            if tuple(array.shape) != expected[name]:
                raise ValueError(f"FAM tensor {name!r} has shape {list(array.shape)}, expected {list(expected[name])}")
    for name, array in state.items():
        if not np.issubdtype(array.dtype, np.floating) or not bool(np.isfinite(array).all()):
            raise ValueError(f"FAM tensor {name!r} is not a finite float tensor")
    return {name: array.astype(np.float32) for name, array in state.items()}


def initial_fam(dim: int, seed: int) -> dict[str, Array]:
    """Version 1 of a run: the FAM's initial distribution drawn with numpy (docs/design.md §3.9).

    The same distribution as ``fedmedclip.model.fam.build_fam`` (torch's ``nn.Linear`` initialisation):
    weights and biases uniform in ``±1/sqrt(dim)``, kappa zero. The values differ from torch's for the same
    seed, which matters to nobody: every site starts from the version the aggregator serves.
    """
    if dim < 1:
        raise ValueError(f"initial_fam: dim must be >= 1, got {dim}")
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(dim)
    state: dict[str, Array] = {}
    for layer in ("m1", "m2"):
        state[f"{layer}.weight"] = rng.uniform(-bound, bound, size=(dim, dim)).astype(np.float32)
        state[f"{layer}.bias"] = rng.uniform(-bound, bound, size=dim).astype(np.float32)
        state[f"{layer}.kappa"] = np.zeros(dim, dtype=np.float32)
    assert {f"{layer}.weight" for layer in ("m1", "m2")} == set(FAM_MATRIX_NAMES)
    return {name: state[name] for name in FAM_TENSOR_NAMES}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
