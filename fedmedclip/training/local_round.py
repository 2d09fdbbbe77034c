"""One local round on cached embeddings: train the FAM and the private head together (docs/design.md §3).

Pure computation: tensors in, tensors and numbers out. No file, network or database access.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from fedmedclip.model.fam import FeatureAdaptationModule, build_fam, fam_state
from fedmedclip.model.head import PrivateHead, build_head, head_state
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.losses import adaptive_kd_loss, pairwise_contrastive_loss, prototype_contrastive_loss


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    contrastive: torch.Tensor
    head_ce: torch.Tensor
    kd: torch.Tensor
    head_logits: torch.Tensor | None


@dataclass(frozen=True)
class RoundResult:
    fam_state: dict[str, torch.Tensor]
    head_state: dict[str, torch.Tensor]
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)


def compute_loss(
    fam: FeatureAdaptationModule,
    head: PrivateHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    logit_scale: float,
    config: TrainConfig,
) -> LossTerms:
    """``L = L_contr + L_CE + λ·L_KD`` for one batch, each term switchable for ablations."""
    zero = features.new_zeros(())
    adapted = fam(features)  # f̂; not detached, so the head's CE also shapes the FAM
    if not config.use_contrastive:
        contrastive = zero
    elif config.contrastive == "prototype":
        contrastive = prototype_contrastive_loss(adapted, text_prototypes, labels, logit_scale)
    else:
        contrastive = pairwise_contrastive_loss(adapted, text_prototypes[labels], logit_scale)
    needs_head = config.use_head_ce or config.use_kd
    logits = head(adapted) if needs_head else None
    head_ce = F.cross_entropy(logits, labels) if config.use_head_ce and logits is not None else zero
    kd = zero
    if config.use_kd and logits is not None:
        kd = adaptive_kd_loss(adapted @ text_prototypes.T, logits, logit_scale, config.kd_temperature)
    total = contrastive + head_ce + config.kd_weight * kd
    return LossTerms(total, contrastive, head_ce, kd, logits)


def train_step(
    fam: FeatureAdaptationModule,
    head: PrivateHead,
    optimiser: torch.optim.Optimizer,
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    logit_scale: float,
    config: TrainConfig,
    sums: torch.Tensor,
    correct: torch.Tensor,
) -> None:
    """One optimiser step on one batch; adds (loss, contrastive, head_ce, kd) to ``sums`` and the head's
    correct predictions (of the logits seen by this step, before the update) to ``correct``, in place.

    Nothing here reads a tensor value on the host, so the GPU path (``training.device_round``) can capture
    this very function in a CUDA graph.
    """
    terms = compute_loss(fam, head, features, labels, text_prototypes, logit_scale, config)
    optimiser.zero_grad(set_to_none=True)
    terms.total.backward()
    optimiser.step()
    sums += torch.stack([terms.total, terms.contrastive, terms.head_ce, terms.kd]).detach()
    if terms.head_logits is not None:
        correct += (terms.head_logits.detach().argmax(dim=-1) == labels).sum()


def shuffled_batches(num_samples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(num_samples, generator=generator)
    batches = list(order.split(batch_size))
    # BatchNorm cannot normalise a batch of one; fold a trailing singleton into the previous batch.
    if len(batches) > 1 and batches[-1].numel() < 2:
        tail = batches.pop()
        batches[-1] = torch.cat([batches[-1], tail])
    return batches


@torch.no_grad()
def recalibrate_batchnorm(
    fam: FeatureAdaptationModule, head: PrivateHead, features: torch.Tensor, batch_size: int
) -> None:
    """Set the head's BatchNorm running statistics to the exact statistics of the whole training set.

    BatchNorm's running averages start at mean 0 / variance 1 and move by 10% a step. A site trains only a
    few steps per round, while the hidden activations of normalised CLIP features have variances around
    1e-4, so at evaluation the running variance is still dominated by its initial 1 and the head collapses
    to one class (measured: 98% train accuracy with batch statistics, 52% with running statistics). The
    paper's reference code does not do this.

    The statistics are computed layer by layer: BatchNorm ``k`` gets the mean and (population) variance of
    its input over all of ``features``, with the layers before it already in evaluation mode on their own
    exact statistics, which is what one full-batch pass would give. Averaging per-batch statistics instead
    is wrong for an ImageFolder site: its samples arrive sorted by class, each batch holds one class, and
    the between-class variance is lost (measured 0.72 of the true variance). ``batch_size`` only bounds
    the memory of each forward pass; the result does not depend on it or on the order of the rows.
    """
    was_training = head.training
    head.eval()
    fam.eval()
    adapted = torch.cat([fam(chunk) for chunk in features.split(batch_size)]) if features.shape[0] else features
    for index, layer in enumerate(head.body):
        if not isinstance(layer, torch.nn.BatchNorm1d):
            continue
        before = head.body[:index]
        total = torch.zeros(layer.num_features, dtype=torch.float64, device=features.device)
        squares = torch.zeros_like(total)
        for chunk in adapted.split(batch_size):
            inputs = before(chunk).to(torch.float64)
            total += inputs.sum(dim=0)
            squares += (inputs * inputs).sum(dim=0)
        count = max(adapted.shape[0], 1)
        mean = total / count
        # E[x²] - E[x]² in float64: the activations are small (variances ~1e-4), float32 would lose digits.
        variance = (squares / count - mean * mean).clamp_min(0.0)
        assert layer.running_mean is not None and layer.running_var is not None
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(variance.to(layer.running_var.dtype))
    head.train(was_training)


def check_round_inputs(
    features: torch.Tensor, labels: torch.Tensor, text_prototypes: torch.Tensor
) -> tuple[int, int, int]:
    """(samples, width, classes) of a site's training data, or ``ValueError`` saying what does not fit."""
    num_samples, dim = features.shape
    num_classes = text_prototypes.shape[0]
    if num_samples < 2:
        raise ValueError(f"a local round needs at least 2 training samples, got {num_samples}")
    if labels.shape != (num_samples,):
        raise ValueError(f"labels must have shape ({num_samples},), got {tuple(labels.shape)}")
    if text_prototypes.shape[1] != dim:
        raise ValueError(f"text prototypes have width {text_prototypes.shape[1]}, features have {dim}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]")
    return num_samples, dim, num_classes


def round_generator(seed: int, round_index: int) -> torch.Generator:
    """The round's shuffling generator: the same for the CPU and the device trainer, so both give one order."""
    return torch.Generator().manual_seed(seed * 100_003 + round_index)


def round_result(
    fam: FeatureAdaptationModule,
    head: PrivateHead,
    num_samples: int,
    mean_losses: torch.Tensor,
    correct: torch.Tensor,
    seen: int,
) -> RoundResult:
    """The trained state and the round's metrics (the one host synchronisation of a round)."""
    means = mean_losses.tolist()
    metrics = dict(zip(("loss", "contrastive", "head_ce", "kd"), means, strict=True))
    if seen:
        metrics["train_head_acc"] = float(correct) / seen
    metrics["fam_alive_rows"] = float(sum(int(layer.alive_rows().sum()) for layer in (fam.m1, fam.m2)))
    return RoundResult(fam_state(fam), head_state(head), num_samples, metrics)


def train_local_round(
    features: torch.Tensor,
    labels: torch.Tensor,
    text_prototypes: torch.Tensor,
    global_fam: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None,
    *,
    logit_scale: float,
    config: TrainConfig | None = None,
    round_index: int = 0,
    seed: int = 0,
) -> RoundResult:
    """Train one round starting from the global FAM and this site's head; return the new local state.

    ``features`` are cached raw CLIP image embeddings (N × D), ``labels`` site-local class indices,
    ``text_prototypes`` the site's normalised class text embeddings (C × D). ``head=None`` starts a new
    head (the site's first round). The shuffling is seeded by ``seed`` and ``round_index``.
    """
    config = config or TrainConfig()
    num_samples, dim, num_classes = check_round_inputs(features, labels, text_prototypes)

    device = features.device
    fam = build_fam(dim, global_fam).to(device).train()
    head_module = build_head(dim, num_classes, head, seed=seed, hidden=config.head_hidden).to(device).train()
    fam_lr, head_lr = config.learning_rates(round_index)
    optimiser = torch.optim.AdamW(
        [{"params": fam.parameters(), "lr": fam_lr}, {"params": head_module.parameters(), "lr": head_lr}],
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
    generator = round_generator(seed, round_index)
    text = text_prototypes.to(device)
    labels = labels.to(device)
    # Running sums stay on the device: a host sync per step would dominate a round on a GPU.
    sums = torch.zeros(4, device=device)  # loss, contrastive, head_ce, kd
    correct = torch.zeros((), device=device)
    seen = 0
    steps = 0
    for _ in range(config.local_epochs):
        for index in shuffled_batches(num_samples, config.batch_size, generator):
            batch_labels = labels[index.to(device)]
            batch_features = features[index.to(device)]
            train_step(
                fam, head_module, optimiser, batch_features, batch_labels, text, logit_scale, config, sums, correct
            )
            steps += 1
            if config.use_head_ce or config.use_kd:
                seen += batch_labels.numel()
    recalibrate_batchnorm(fam, head_module, features, config.batch_size)
    return round_result(fam, head_module, num_samples, sums / steps, correct, seen)
