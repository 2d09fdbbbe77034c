"""The private classifier head: trained and kept on the site, never uploaded."""

from __future__ import annotations

import torch
from torch import nn

from fedmedclip.model.masked import MaskedLinear

DEFAULT_HIDDEN = 512


class PrivateHead(nn.Module):
    """``[MaskedLinear(D,H) → BatchNorm1d(H) → ReLU] × 3 → MaskedLinear(H, C)``."""

    def __init__(self, dim: int, num_classes: int, hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier head needs at least 2 classes, got {num_classes}")
        self.dim = dim
        self.num_classes = num_classes
        self.hidden = hidden
        layers: list[nn.Module] = []
        width = dim
        for _ in range(3):
            layers += [MaskedLinear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.classifier = MaskedLinear(hidden, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits for adapted features ``f̂`` (B × D)."""
        return self.classifier(self.body(features))


def build_head(
    dim: int,
    num_classes: int,
    state: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    hidden: int = DEFAULT_HIDDEN,
) -> PrivateHead:
    """A head for this site: seeded fresh initialisation, or loaded from ``state``."""
    rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        head = PrivateHead(dim, num_classes, hidden)
    finally:
        torch.random.set_rng_state(rng)
    if state is not None:
        head.load_state_dict(state, strict=True)
    return head


def head_state(head: PrivateHead) -> dict[str, torch.Tensor]:
    """Detached copy of the head's parameters and BatchNorm buffers."""
    return {k: v.detach().clone() for k, v in head.state_dict().items()}
