"""The feature adaptation module (FAM), the only part of the model that is federated."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedmedclip.model.fam_layout import FAM_MATRIX_NAMES, FAM_TENSOR_NAMES, FAM_VECTOR_NAMES, fam_shapes
from fedmedclip.model.masked import MaskedLinear

__all__ = [
    "FAM_MATRIX_NAMES",
    "FAM_TENSOR_NAMES",
    "FAM_VECTOR_NAMES",
    "FeatureAdaptationModule",
    "build_fam",
    "fam_shapes",
    "fam_state",
]

_LN_EPS = 1e-5


class FeatureAdaptationModule(nn.Module):
    """``FAM(f) = softmax(M2(ReLU(LN(M1(f)))))``; ``adapt(f) = normalize(FAM(f) ⊙ f)``.

    LN is a per-sample standardisation over features without affine parameters: that is what the
    reference's ``InstanceNorm1d`` computes on a (B, D) tensor.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.m1 = MaskedLinear(dim, dim)
        self.m2 = MaskedLinear(dim, dim)

    def attention(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.m1(features)
        hidden = F.layer_norm(hidden, (self.dim,), eps=_LN_EPS)
        return torch.softmax(self.m2(F.relu(hidden)), dim=-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return the adapted, L2-normalised feature ``f̂``."""
        adapted = self.attention(features) * features
        return F.normalize(adapted, dim=-1)


def fam_state(fam: FeatureAdaptationModule) -> dict[str, torch.Tensor]:
    """Detached float32 copy of the FAM's tensors, keyed by ``FAM_TENSOR_NAMES``."""
    state = fam.state_dict()
    return {name: state[name].detach().to(torch.float32).clone() for name in FAM_TENSOR_NAMES}


def build_fam(dim: int, state: dict[str, torch.Tensor] | None = None, seed: int = 0) -> FeatureAdaptationModule:
    """A FAM for width ``dim``: seeded fresh initialisation, or loaded from ``state``."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        fam = FeatureAdaptationModule(dim)
    finally:
        torch.random.set_rng_state(generator_state)
    if state is not None:
        fam.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
    return fam
