"""Row-masked linear layer with a trainable per-row threshold (docs/design.md §3, "MaskedLinear").

Row ``i`` is alive when ``u_i - kappa_i > tau`` with ``u_i = mean_j |W_ij|``. The hard step is trained with
a straight-through estimator whose gradient passes where ``|u_i - kappa_i - tau| <= 1``. The paper's
reference code passes the gradient only where that quantity is *greater* than 1, so for any realistic
weight scale kappa never receives a gradient and no row is ever masked; we pass it inside the window.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

MASK_THRESHOLD = 0.01  # tau
STE_WINDOW = 1.0


class _StraightThroughStep(torch.autograd.Function):
    """Heaviside step forward; identity gradient inside ``|x| <= STE_WINDOW`` backward.

    Written in the ``setup_context`` style with a generated vmap rule so ``torch.func.vmap`` can batch it:
    the simulator trains a shard of sites' stacked FAMs at once through this same module code.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def setup_context(
        ctx: torch.autograd.function.FunctionCtx, inputs: tuple[torch.Tensor], output: torch.Tensor
    ) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, *grad_outputs: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        (grad,) = grad_outputs
        return grad * (x.abs() <= STE_WINDOW).to(grad.dtype)


def straight_through_step(x: torch.Tensor) -> torch.Tensor:
    """``1[x > 0]`` with the windowed straight-through gradient."""
    out = _StraightThroughStep.apply(x)
    assert isinstance(out, torch.Tensor)
    return out


class MaskedLinear(nn.Module):
    """``y = (W ⊙ m 1ᵀ) x + b`` with a learned row mask ``m``; the bias is never masked."""

    def __init__(self, in_features: int, out_features: int, tau: float = MASK_THRESHOLD) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.tau = tau
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.kappa = nn.Parameter(torch.zeros(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as nn.Linear, so mean|W| ≈ 0.5/sqrt(in) starts well above tau: all rows alive.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.kappa)

    def row_scores(self) -> torch.Tensor:
        """``u_i - kappa_i - tau``: positive for alive rows."""
        return self.weight.abs().mean(dim=1) - self.kappa - self.tau

    def row_mask(self) -> torch.Tensor:
        """The hard 0/1 mask per output row (with the straight-through gradient)."""
        return straight_through_step(self.row_scores())

    @torch.no_grad()
    def alive_rows(self) -> torch.Tensor:
        """Boolean vector of rows that currently contribute to the output."""
        return self.row_scores() > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masked_weight = self.weight * self.row_mask().unsqueeze(1)
        return F.linear(x, masked_weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}"

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the current mask folded into its weight (for inference)."""
        linear = nn.Linear(self.in_features, self.out_features, device=self.weight.device, dtype=self.weight.dtype)
        linear.weight.copy_(self.weight * self.alive_rows().to(self.weight.dtype).unsqueeze(1))
        linear.bias.copy_(self.bias)
        return linear.requires_grad_(False)


def fold_masks(module: nn.Module) -> nn.Module:
    """Replace every ``MaskedLinear`` inside ``module`` by its folded ``nn.Linear``, in place.

    Inference then skips recomputing row scores and masks on every call; outputs are unchanged.
    """
    for name, child in module.named_children():
        if isinstance(child, MaskedLinear):
            setattr(module, name, child.to_linear())
        else:
            fold_masks(child)
    return module
