"""Local rounds with the site's cached embeddings resident on the device (docs/design.md §3 "GPU local round").

``train_local_round`` builds fresh modules and an optimiser every round and launches every kernel from
Python: on a GPU a FAM + head step on 32 cached 512-d vectors is microseconds of arithmetic and the round is
bound by kernel launches. ``DeviceRoundTrainer`` keeps, for one site and for all its rounds:

- the embeddings, labels and text prototypes on the device (copied once);
- one FAM, one head and one AdamW whose tensors are overwritten in place at the start of each round (the
  global FAM, the site's head, zeroed optimiser moments, this round's learning rates), so their addresses
  never change;
- on CUDA, the training step (``local_round.train_step``: forward, the three losses, backward, AdamW,
  the running loss/accuracy sums) captured once in a CUDA graph over a fixed-size batch whose indices are
  read from a device buffer. A round is then one host-to-device copy of the shuffled order and one graph
  replay per full batch; nothing reads a tensor value on the host until the round has ended.

Shuffling, batching, the losses and the BatchNorm recalibration are the ones of ``train_local_round`` (the
same functions are called), so both give the same numbers within float tolerance. A batch whose size is
not ``batch_size`` (the epoch's tail, or the tail with a folded-in singleton) runs the same step eagerly:
neither dropped (the CPU path trains on it) nor padded (padding would shift BatchNorm's batch statistics
and add false negatives to the pairwise contrastive loss).

Everything stays float32: the round is launch-bound, so half precision would save nothing, while the
loss's ``logit_scale``-sharpened softmaxes and the KD's batch-wise softmax lose digits in fp16/bf16.
Pure computation: no file, network or database access.
"""

from __future__ import annotations

import torch

from fedmedclip.model.fam import build_fam
from fedmedclip.model.head import build_head
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import (
    RoundResult,
    check_round_inputs,
    recalibrate_batchnorm,
    round_generator,
    round_result,
    shuffled_batches,
    train_step,
)

_WARMUP_STEPS = 3  # eager steps on a side stream before capture: lazy optimiser state, cuBLAS workspaces


class DeviceRoundTrainer:
    """One site's local rounds on ``device`` (default: the features' device); see the module docstring.

    ``capture=None`` captures a CUDA graph on CUDA devices and runs eagerly elsewhere; ``capture=False``
    forces the eager path (the same code, one launch per kernel). If capture fails, the trainer falls back
    to eager steps and says why in ``capture_error``. ``compile_modules=True`` also compiles the FAM and the
    head with ``torch.compile`` (fewer, fused kernels inside the graph; compiling costs seconds up front).
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        text_prototypes: torch.Tensor,
        *,
        logit_scale: float,
        config: TrainConfig | None = None,
        device: torch.device | str | None = None,
        capture: bool | None = None,
        compile_modules: bool = False,
    ) -> None:
        self.config = config or TrainConfig()
        # Checked once, when the site's data arrives: these read values on the host, rounds must not.
        num_samples, dim, num_classes = check_round_inputs(features, labels, text_prototypes)
        self.device = torch.device(device) if device is not None else features.device
        self.num_samples, self.dim, self.num_classes = num_samples, dim, num_classes
        self.logit_scale = logit_scale
        self.features = features.to(self.device, torch.float32).contiguous()
        self.labels = labels.to(self.device, torch.long)
        self.text = text_prototypes.to(self.device, torch.float32)
        self.fam = build_fam(dim).to(self.device).train()
        self.head = build_head(dim, num_classes, hidden=self.config.head_hidden).to(self.device).train()
        if compile_modules:
            # torch.compile (inductor) fuses the FAM's and head's elementwise chains, forward and backward,
            # into a few kernels; the captured graph then replays those. In place: state_dict keys unchanged.
            self.fam.compile()
            self.head.compile()
        on_cuda = self.device.type == "cuda"
        self.capture = on_cuda if capture is None else (capture and on_cuda)
        self.optimiser = _adamw(self.fam, self.head, self.config, on_cuda)
        self.sums = torch.zeros(4, device=self.device)  # loss, contrastive, head_ce, kd
        self.correct = torch.zeros((), device=self.device)
        self.index = torch.zeros(self.config.batch_size, dtype=torch.long, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capture_error: str | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def train_round(
        self,
        global_fam: dict[str, torch.Tensor],
        head: dict[str, torch.Tensor] | None,
        *,
        round_index: int = 0,
        seed: int = 0,
    ) -> RoundResult:
        """What ``train_local_round(features, labels, text_prototypes, global_fam, head, ...)`` returns."""
        config = self.config
        if self.capture and self.graph is None and self.capture_error is None:
            self._capture()
        self._load(global_fam, head, round_index, seed)
        generator = round_generator(seed, round_index)
        size = config.batch_size
        steps = 0
        for _ in range(config.local_epochs):
            batches = shuffled_batches(self.num_samples, size, generator)
            order = torch.cat(batches)
            if self.device.type == "cuda":
                order = order.pin_memory()
            order = order.to(self.device, non_blocking=True)  # one copy per epoch; no sync
            start = 0
            for batch in batches:
                rows = order[start : start + batch.numel()]
                start += batch.numel()
                if batch.numel() == size:
                    self.index.copy_(rows)
                    if self.graph is not None:
                        self.graph.replay()
                    else:
                        self._step(self.index)
                else:  # the epoch's tail: another shape, so the same step eagerly
                    self._step(rows)
                steps += 1
        recalibrate_batchnorm(self.fam, self.head, self.features, size)
        # The round is over: the one host synchronisation, to report its metrics.
        seen = self.num_samples * config.local_epochs if config.use_head_ce or config.use_kd else 0
        return round_result(self.fam, self.head, self.num_samples, self.sums / steps, self.correct, seen)

    def _step(self, index: torch.Tensor) -> None:
        train_step(
            self.fam,
            self.head,
            self.optimiser,
            self.features[index],
            self.labels[index],
            self.text,
            self.logit_scale,
            self.config,
            self.sums,
            self.correct,
        )

    @torch.no_grad()
    def _load(
        self, global_fam: dict[str, torch.Tensor], head: dict[str, torch.Tensor] | None, round_index: int, seed: int
    ) -> None:
        """Overwrite every tensor the step touches, in place: the captured graph keeps its addresses."""
        if head is None:  # the site's first round: a new head, seeded as train_local_round seeds it
            head = build_head(self.dim, self.num_classes, seed=seed, hidden=self.config.head_hidden).state_dict()
        for module, source in ((self.fam, global_fam), (self.head, head)):
            target = module.state_dict()
            if set(source) != set(target):
                missing, extra = sorted(set(target) - set(source)), sorted(set(source) - set(target))
                raise ValueError(f"{type(module).__name__} state mismatch: missing {missing}, unexpected {extra}")
            for name, tensor in target.items():
                if tuple(source[name].shape) != tuple(tensor.shape):
                    raise ValueError(f"{name} has shape {tuple(source[name].shape)}, expected {tuple(tensor.shape)}")
                tensor.copy_(source[name], non_blocking=True)  # device to device after the first round
        self.fam.train()
        self.head.train()  # recalibrate_batchnorm leaves the FAM in eval mode
        fam_lr, head_lr = self.config.learning_rates(round_index)
        for group, lr in zip(self.optimiser.param_groups, (fam_lr, head_lr), strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        # A fresh AdamW's state: step 0, zero moments (what train_local_round's new optimiser starts from).
        for state in self.optimiser.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.zero_()
        self.sums.zero_()
        self.correct.zero_()

    def _capture(self) -> None:
        """Capture one fixed-size step. The warm-up steps change weights and optimiser state; ``_load``
        overwrites all of it before the round's first step."""
        try:
            self.index.copy_(torch.arange(self.config.batch_size, device=self.device) % self.num_samples)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(_WARMUP_STEPS):
                    self._step(self.index)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.optimiser.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step(self.index)
            self.graph = graph
        except RuntimeError as error:  # fall back to eager steps, and say so
            self.graph = None
            self.capture_error = f"{error.__class__.__name__}: {error}"
            torch.cuda.synchronize(self.device)
            self.optimiser.zero_grad(set_to_none=True)


def _adamw(fam: torch.nn.Module, head: torch.nn.Module, config: TrainConfig, on_cuda: bool) -> torch.optim.Optimizer:
    """The optimiser of ``train_local_round``. On CUDA it is capturable, with the learning rates held in
    device tensors, so a captured step reads each round's (decayed) rate instead of baking in the first."""
    fam_lr, head_lr = config.learning_rates(0)
    if not on_cuda:
        groups = [{"params": fam.parameters(), "lr": fam_lr}, {"params": head.parameters(), "lr": head_lr}]
        return torch.optim.AdamW(groups, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)
    device = next(fam.parameters()).device
    groups = [
        {"params": list(fam.parameters()), "lr": torch.tensor(fam_lr, device=device)},
        {"params": list(head.parameters()), "lr": torch.tensor(head_lr, device=device)},
    ]
    return torch.optim.AdamW(
        groups,
        lr=torch.tensor(fam_lr, device=device),
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        capturable=True,
        foreach=True,
    )


def train_local_rounds_on_device(
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
    capture: bool | None = None,
) -> RoundResult:
    """A one-off ``train_local_round`` on this path (a trainer that lives for one round)."""
    trainer = DeviceRoundTrainer(
        features, labels, text_prototypes, logit_scale=logit_scale, config=config, capture=capture
    )
    return trainer.train_round(global_fam, head, round_index=round_index, seed=seed)
