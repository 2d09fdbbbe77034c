"""FAM deltas: ``local − global`` with validation, applying a delta, and which matrix rows are alive."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedmedclip.model.fam import FAM_MATRIX_NAMES, FeatureAdaptationModule, build_fam


def _check_same_layout(left: Mapping[str, torch.Tensor], right: Mapping[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(left) - set(right))
    extra = sorted(set(right) - set(left))
    if missing or extra:
        raise ValueError(f"{what}: tensor names differ (missing {missing}, unexpected {extra})")
    for name, tensor in left.items():
        if tuple(tensor.shape) != tuple(right[name].shape):
            raise ValueError(
                f"{what}: tensor {name!r} has shape {tuple(right[name].shape)}, expected {tuple(tensor.shape)}"
            )
        if not (tensor.is_floating_point() and right[name].is_floating_point()):
            raise ValueError(f"{what}: tensor {name!r} is not floating point")


def fam_delta(local: Mapping[str, torch.Tensor], global_: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``local − global_`` per tensor, float32; both states must hold the same names and shapes."""
    _check_same_layout(global_, local, "fam_delta")
    return {name: local[name].detach().to(torch.float32) - global_[name].detach().to(torch.float32) for name in global_}


def apply_delta(state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A new float32 state ``state + delta``; ``state`` is not modified. ``delta`` must match it exactly."""
    _check_same_layout(state, delta, "apply_delta")
    return {name: state[name].detach().to(torch.float32) + delta[name].detach().to(torch.float32) for name in state}


def alive_rows_of(fam: FeatureAdaptationModule) -> dict[str, torch.Tensor]:
    """Boolean alive-row vector of each FAM weight matrix: the rows the codec may send."""
    layers = {"m1.weight": fam.m1, "m2.weight": fam.m2}
    assert set(layers) == set(FAM_MATRIX_NAMES)
    return {name: layer.alive_rows().detach().clone() for name, layer in layers.items()}


def alive_rows_of_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``alive_rows_of`` for a FAM given as its tensors (what a local round returns)."""
    dim = state["m1.weight"].shape[1]
    return alive_rows_of(build_fam(dim, {name: tensor.detach().to(torch.float32) for name, tensor in state.items()}))
