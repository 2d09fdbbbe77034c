"""One local round for a shard of S sites at once: the real FAM, head and loss code, batched by ``vmap``.

Every site's FAM and head are stacked along a leading site axis. ``torch.func.functional_call`` runs the real
``FeatureAdaptationModule`` and ``PrivateHead`` modules on one site's slice, ``compute_loss`` (the function
``train_local_round`` calls) gives that site's loss, and ``vmap`` batches it over the shard, so the matrix
products become batched products. AdamW is elementwise, so one optimiser over the stacked tensors takes
exactly the step each site's own optimiser would. The BatchNorm recalibration is the real
``recalibrate_batchnorm``, called per site on modules whose tensors are views of the stacked ones.

Sites in one call must share the sample count and the class count: their batches then line up step by
step (the caller groups sites into such buckets). Pure computation, no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.func import functional_call, vmap

from fedmedclip.model.fam import FeatureAdaptationModule, build_fam
from fedmedclip.model.head import PrivateHead, build_head
from fedmedclip.model.masked import MaskedLinear, fold_masks
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import compute_loss, recalibrate_batchnorm, shuffled_batches

Stacked = dict[str, torch.Tensor]  # tensor name -> (S, *shape)
METRIC_NAMES = ("loss", "contrastive", "head_ce", "kd")


@dataclass(frozen=True)
class ShardRoundResult:
    fam: Stacked  # each site's new FAM, stacked
    head: Stacked  # each site's new head (parameters and BatchNorm buffers), stacked
    num_samples: int  # per site (equal within a shard call)
    metrics: list[dict[str, float]]  # per site, the keys train_local_round reports


class _Bound:
    """Calls ``module`` with the given tensors in place of its own: what ``compute_loss`` sees as a module."""

    def __init__(self, module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
        self.module = module
        self.tensors = tensors

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.module, dict(self.tensors), (x,))
        assert isinstance(out, torch.Tensor)
        return out


def stack_states(states: Sequence[Mapping[str, torch.Tensor]]) -> Stacked:
    """Stack per-site state dicts (same names and shapes) along a new leading site axis."""
    if not states:
        raise ValueError("stack_states: no states")
    return {name: torch.stack([state[name] for state in states]) for name in states[0]}


def unstack_state(stacked: Mapping[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """Site ``index``'s own copy of a stacked state."""
    return {name: tensor[index].clone() for name, tensor in stacked.items()}


def initial_heads(dim: int, num_classes: int, seeds: Sequence[int], hidden: int) -> Stacked:
    """The heads each site's first round starts from: ``build_head`` with the site's seed, as the agent does."""
    return stack_states([build_head(dim, num_classes, None, seed=seed, hidden=hidden).state_dict() for seed in seeds])


def _site_loss(
    fam: FeatureAdaptationModule,
    head: PrivateHead,
    text: torch.Tensor,
    logit_scale: float,
    config: TrainConfig,
    fam_tensors: dict[str, torch.Tensor],
    head_tensors: dict[str, torch.Tensor],
    features: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One site's loss terms and correct-prediction count for one batch; ``vmap`` maps this over the shard."""
    terms = compute_loss(
        cast(FeatureAdaptationModule, _Bound(fam, fam_tensors)),
        cast(PrivateHead, _Bound(head, head_tensors)),
        features,
        labels,
        text,
        logit_scale,
        config,
    )
    stacked_terms = torch.stack([terms.total, terms.contrastive, terms.head_ce, terms.kd])
    if terms.head_logits is None:
        correct = features.new_zeros(())
    else:
        correct = (terms.head_logits.detach().argmax(dim=-1) == labels).sum().to(features.dtype)
    return terms.total, stacked_terms.detach(), correct


def _site_batches(num_samples: int, config: TrainConfig, seed: int, round_index: int) -> list[torch.Tensor]:
    # The same generator and seeding as train_local_round, so each site sees the same batches.
    generator = torch.Generator().manual_seed(seed * 100_003 + round_index)
    return [
        index
        for _ in range(config.local_epochs)
        for index in shuffled_batches(num_samples, config.batch_size, generator)
    ]


def train_shard_round(
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    global_fam: Mapping[str, torch.Tensor],
    heads: Mapping[str, torch.Tensor] | None,
    *,
    logit_scale: float,
    seeds: Sequence[int],
    config: TrainConfig | None = None,
    round_index: int = 0,
) -> ShardRoundResult:
    """``train_local_round`` for S sites at once, from the same global FAM.

    ``features`` S × N × D, ``labels`` S × N, ``text_prototypes`` C × D (shared) or S × C × D, ``heads``
    the stacked head states (``None``: every site's first round), ``seeds`` the per-site seeds that
    ``train_local_round`` would get.
    """
    config = config or TrainConfig()
    if features.dim() != 3:
        raise ValueError(f"features must be S × N × D, got shape {tuple(features.shape)}")
    num_sites, num_samples, dim = features.shape
    if len(seeds) != num_sites:
        raise ValueError(f"{num_sites} sites but {len(seeds)} seeds")
    if labels.shape != (num_sites, num_samples):
        raise ValueError(f"labels must have shape ({num_sites}, {num_samples}), got {tuple(labels.shape)}")
    if num_samples < 2:
        raise ValueError(f"a local round needs at least 2 training samples, got {num_samples}")
    text = text_prototypes if text_prototypes.dim() == 3 else text_prototypes.expand(num_sites, -1, -1)
    num_classes = text.shape[1]
    if text.shape != (num_sites, num_classes, dim):
        raise ValueError(
            f"text prototypes have shape {tuple(text_prototypes.shape)} for {num_sites} sites of width {dim}"
        )
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")

    device = features.device
    fam_module = build_fam(dim).to(device).train()
    head_module = build_head(dim, num_classes, hidden=config.head_hidden).to(device).train()
    start_heads = heads if heads is not None else initial_heads(dim, num_classes, seeds, config.head_hidden)
    fam_params = {
        name: tensor.detach().to(device, torch.float32).unsqueeze(0).repeat(num_sites, *([1] * tensor.dim()))
        for name, tensor in global_fam.items()
    }
    parameter_names = {name for name, _ in head_module.named_parameters()}
    head_params = {n: t.detach().to(device).clone() for n, t in start_heads.items() if n in parameter_names}
    head_buffers = {n: t.detach().to(device).clone() for n, t in start_heads.items() if n not in parameter_names}
    for tensor in (*fam_params.values(), *head_params.values()):
        tensor.requires_grad_(True)
    fam_lr, head_lr = config.learning_rates(round_index)
    optimiser = torch.optim.AdamW(
        [{"params": list(fam_params.values()), "lr": fam_lr}, {"params": list(head_params.values()), "lr": head_lr}],
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=True,
    )
    site_batches = [_site_batches(num_samples, config, seed, round_index) for seed in seeds]
    labels = labels.to(device)

    def batch_loss(
        fam_tensors: dict[str, torch.Tensor],
        head_tensors: dict[str, torch.Tensor],
        site_text: torch.Tensor,
        batch_features: torch.Tensor,
        batch_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _site_loss(
            fam_module,
            head_module,
            site_text,
            logit_scale,
            config,
            fam_tensors,
            head_tensors,
            batch_features,
            batch_labels,
        )

    batched_loss = vmap(batch_loss)
    sums = torch.zeros(num_sites, 4, device=device)
    correct = torch.zeros(num_sites, device=device)
    seen = 0
    steps = len(site_batches[0])
    for step in range(steps):
        index = torch.stack([batches[step] for batches in site_batches]).to(device)  # S × B
        batch_features = torch.gather(features, 1, index.unsqueeze(-1).expand(-1, -1, dim))
        batch_labels = torch.gather(labels, 1, index)
        totals, terms, step_correct = batched_loss(
            fam_params, {**head_params, **head_buffers}, text, batch_features, batch_labels
        )
        optimiser.zero_grad(set_to_none=True)
        # Each site's loss depends only on its own slice, so the gradient of the sum is every site's gradient.
        totals.sum().backward()
        optimiser.step()
        sums += terms
        correct += step_correct
        seen += index.shape[1]

    fam_out = {name: tensor.detach() for name, tensor in fam_params.items()}
    head_out = {name: tensor.detach() for name, tensor in {**head_params, **head_buffers}.items()}
    alive = _recalibrate_each(fam_module, head_module, fam_out, head_out, features, config.batch_size)
    metrics = _round_metrics(sums / steps, correct, seen, alive, config)
    return ShardRoundResult(fam_out, head_out, num_samples, metrics)


@torch.no_grad()
def _recalibrate_each(
    fam: FeatureAdaptationModule,
    head: PrivateHead,
    fam_tensors: Stacked,
    head_tensors: Stacked,
    features: torch.Tensor,
    batch_size: int,
) -> list[int]:
    """The real ``recalibrate_batchnorm`` per site; returns each site's count of alive FAM rows.

    The modules are folded first (``fold_masks``: each ``MaskedLinear`` becomes the ``nn.Linear`` with its
    row mask applied, the same outputs), and every site's masked weights are computed once for the whole
    shard, so the pass does not recompute row scores and masks for every batch of every site. The BatchNorm
    buffers are views of the stacked ones, so the recalibrated statistics land in ``head_tensors``.
    """
    masked = {**_masked_weights(fam, fam_tensors), **_masked_weights(head, head_tensors)}
    fam_alive = _alive_masks(fam, fam_tensors)
    alive = [int(n) for n in (fam_alive["m1"].sum(dim=-1) + fam_alive["m2"].sum(dim=-1)).tolist()]
    folded_fam, folded_head = fold_masks(copy.deepcopy(fam)), fold_masks(copy.deepcopy(head))
    fam_names, head_names = set(folded_fam.state_dict()), set(folded_head.state_dict())
    for site in range(features.shape[0]):
        fam_state = {n: masked[n][site] if n in masked else fam_tensors[n][site] for n in fam_names}
        folded_fam.load_state_dict(fam_state, assign=True)
        head_state = {n: masked[n][site] if n in masked else head_tensors[n][site] for n in head_names}
        folded_head.load_state_dict(head_state, assign=True)
        recalibrate_batchnorm(
            cast(FeatureAdaptationModule, folded_fam), cast(PrivateHead, folded_head), features[site], batch_size
        )
    return alive


class _RowScores(nn.Module):
    """``layer.row_scores()`` as a forward, so ``functional_call`` + ``vmap`` run the model's own rule."""

    def __init__(self, layer: MaskedLinear) -> None:
        super().__init__()
        self.layer = layer

    def forward(self) -> torch.Tensor:
        return self.layer.row_scores()


def _alive_masks(module: nn.Module, tensors: Stacked) -> dict[str, torch.Tensor]:
    """Per masked layer (by module name), every site's alive rows (``MaskedLinear.alive_rows``), S × rows."""
    masks = {}
    for name, layer in module.named_modules():
        if isinstance(layer, MaskedLinear):
            scores = _RowScores(layer)

            def site_scores(weight: torch.Tensor, kappa: torch.Tensor, scores: _RowScores = scores) -> torch.Tensor:
                out = functional_call(scores, {"layer.weight": weight, "layer.kappa": kappa}, (), strict=False)
                assert isinstance(out, torch.Tensor)
                return out

            masks[name] = vmap(site_scores)(tensors[f"{name}.weight"], tensors[f"{name}.kappa"]) > 0
    return masks


def _masked_weights(module: nn.Module, tensors: Stacked) -> Stacked:
    """Every site's weights with its row masks applied, as ``MaskedLinear.to_linear`` folds them."""
    return {
        f"{name}.weight": tensors[f"{name}.weight"] * alive.to(tensors[f"{name}.weight"].dtype).unsqueeze(-1)
        for name, alive in _alive_masks(module, tensors).items()
    }


def _round_metrics(
    means: torch.Tensor, correct: torch.Tensor, seen: int, alive: list[int], config: TrainConfig
) -> list[dict[str, float]]:
    metrics = []
    for site, row in enumerate(means.tolist()):
        values = dict(zip(METRIC_NAMES, row, strict=True))
        if seen and (config.use_head_ce or config.use_kd):
            values["train_head_acc"] = float(correct[site]) / seen
        values["fam_alive_rows"] = float(alive[site])
        metrics.append(values)
    return metrics
