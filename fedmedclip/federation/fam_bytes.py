"""FAM versions as bytes, as the aggregator stores them and sites download them.

Safetensors of the float32 tensors keyed by ``FAM_TENSOR_NAMES``; never pickle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fedmedclip.model.fam import FAM_TENSOR_NAMES, build_fam, fam_shapes, fam_state

SAFETENSORS = "safetensors"


def fam_to_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    """Deterministic bytes: safetensors sorts its keys, and there is no metadata with a timestamp."""
    return save_safetensors({name: state[name].detach().to(torch.float32).contiguous() for name in FAM_TENSOR_NAMES})


def fam_from_bytes(data: bytes, dim: int | None = None) -> dict[str, torch.Tensor]:
    """Parse and check a stored FAM; ``dim`` also checks every tensor's shape. Raises ``ValueError``."""
    try:
        state = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types; all mean "not a FAM file"
        raise ValueError(f"not a safetensors FAM: {exc}") from exc
    if set(state) != set(FAM_TENSOR_NAMES):
        raise ValueError(f"FAM tensors {sorted(state)}, expected {sorted(FAM_TENSOR_NAMES)}")
    if dim is not None:
        expected = fam_shapes(dim)
        for name, tensor in state.items():
            if tuple(tensor.shape) != expected[name]:
                raise ValueError(f"FAM tensor {name!r} has shape {list(tensor.shape)}, expected {list(expected[name])}")
    for name, tensor in state.items():
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"FAM tensor {name!r} is not a finite float tensor")
    return {name: tensor.to(torch.float32) for name, tensor in state.items()}


def initial_fam(dim: int, seed: int) -> dict[str, torch.Tensor]:
    """The FAM every site starts a fresh run from: the library's seeded initialisation."""
    return fam_state(build_fam(dim, seed=seed))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
