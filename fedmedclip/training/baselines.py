"""Baselines the experiment harness and benchmarks compare against (docs/design.md §3, "Baselines").

- FedCLIP: a federated attention adapter ``Linear → Tanh → Linear → Softmax``, contrastive loss only,
  zero-shot prediction;
- FedAvg full fine-tune of CLIP: every weight of the image and text towers trains and is averaged. No
  embedding cache is possible, which makes it the compute and traffic anchor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import shuffled_batches
from fedmedclip.training.losses import pairwise_contrastive_loss


class FedCLIPAdapter(nn.Module):
    """``f̂ = normalize(softmax(L2(tanh(L1(f)))) ⊙ f)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim), nn.Softmax(dim=-1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features) * features, dim=-1)


def build_fedclip_adapter(dim: int, state: dict[str, torch.Tensor] | None = None, seed: int = 0) -> FedCLIPAdapter:
    rng = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        adapter = FedCLIPAdapter(dim)
    finally:
        torch.random.set_rng_state(rng)
    if state is not None:
        adapter.load_state_dict(state, strict=True)
    return adapter


def train_fedclip_round(
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    global_adapter: dict[str, torch.Tensor],
    *,
    logit_scale: float,
    config: TrainConfig | None = None,
    round_index: int = 0,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One FedCLIP local round on cached embeddings; returns the new adapter state and the mean loss."""
    config = config or TrainConfig()
    adapter = build_fedclip_adapter(features.shape[1], global_adapter).train()
    fam_lr, _ = config.learning_rates(round_index)
    optimiser = torch.optim.AdamW(
        adapter.parameters(), lr=fam_lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(seed * 100_003 + round_index)
    losses = []
    for _ in range(config.local_epochs):
        for index in shuffled_batches(features.shape[0], config.batch_size, generator):
            loss = pairwise_contrastive_loss(adapter(features[index]), text_prototypes[labels[index]], logit_scale)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
    return state, {"loss": sum(losses) / len(losses)}


@torch.inference_mode()
def fedclip_predict(
    adapter_state: dict[str, torch.Tensor], features: torch.Tensor, text_prototypes: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """Zero-shot class probabilities through the adapter."""
    adapter = build_fedclip_adapter(features.shape[1], adapter_state).eval()
    return torch.softmax(logit_scale * adapter(features) @ text_prototypes.T, dim=-1)


def fedavg_finetune_round(
    model: Any,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    class_tokens: torch.Tensor,
    *,
    lr: float = 1e-5,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """One local epoch of full CLIP fine-tuning with the CLIP contrastive loss, in place on ``model``.

    ``model`` is a trainable open_clip CLIP (a copy of the global one), ``pixels`` the preprocessed
    images, ``class_tokens`` the tokenised prompt of every class. Every step runs both towers forward and
    backward: that is the cost the FAM avoids.
    """
    device = next(model.parameters()).device
    model.train().requires_grad_(True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    scale = float(model.logit_scale.detach().exp())
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for index in shuffled_batches(pixels.shape[0], batch_size, generator):
        images = F.normalize(model.encode_image(pixels[index].to(device)), dim=-1)
        texts = F.normalize(model.encode_text(class_tokens[labels[index]].to(device)), dim=-1)
        loss = pairwise_contrastive_loss(images, texts, scale)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval().requires_grad_(False)
    return {"loss": sum(losses) / len(losses)}


def fedavg_average(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted average of full state dicts (floating tensors only; integer buffers taken from the first)."""
    if not states or len(states) != len(weights):
        raise ValueError("need one weight per state and at least one state")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    averaged: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            averaged[key] = first.clone()
            continue
        averaged[key] = sum(
            (s[key].float() * (w / total) for s, w in zip(states, weights, strict=True)),
            torch.zeros_like(first, dtype=torch.float32),
        ).to(first.dtype)
    return averaged
