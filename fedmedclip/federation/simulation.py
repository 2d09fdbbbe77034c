"""An in-process federation on cached embeddings: the same training, codec and aggregation code the
services run, without the network. Used by the learning check, the demo and the experiment harness.

Pure computation: tensors in, tensors and numbers out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.arrays import to_torch
from fedmedclip.federation.codec import CodecConfig, decode_update, encode_update
from fedmedclip.federation.delta import alive_rows_of, fam_delta
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.model.personalised import PersonalisedClassifier
from fedmedclip.privacy.accountant import GaussianSteps
from fedmedclip.privacy.budget import RoundPlan, next_round, plan_sigma
from fedmedclip.privacy.config import PrivacyConfig
from fedmedclip.privacy.dp_round import DpSgdPlan, train_private_round
from fedmedclip.privacy.ledger import PrivacyLedger
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import RoundResult, train_local_round
from fedmedclip.training.metrics import ensemble_report

# Sending every alive row at full precision: the "dense fp32" update the masked codec is compared with.
DENSE_FP32 = CodecConfig(rho=1.0, quantization="fp32", compression="none")


@dataclass(frozen=True)
class SiteTensors:
    """One site's cached embeddings, split, with its own class list and text prototypes."""

    name: str
    classes: list[str]
    prototypes: torch.Tensor  # C × D, normalised
    train: tuple[torch.Tensor, torch.Tensor]  # (features N × D, labels N)
    evaluation: tuple[torch.Tensor, torch.Tensor]  # validation or test split


@dataclass(frozen=True)
class SimulationConfig:
    rounds: int = 5
    train: TrainConfig = field(default_factory=TrainConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    weighting: Literal["samples", "uniform"] = "samples"
    aggregate: bool = True  # False: each site keeps its own FAM (the "no aggregation" ablation)
    seed: int = 0
    # Record-level DP (docs/design.md §3.15): each site plans σ for all rounds and trains its FAM by DP-SGD.
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


@dataclass
class RoundRecord:
    round_index: int
    upload_bytes: dict[str, int]
    train_metrics: dict[str, dict[str, float]]
    eval_metrics: dict[str, dict[str, float]]


@dataclass
class SimulationResult:
    global_fam: dict[str, torch.Tensor]
    heads: dict[str, dict[str, torch.Tensor]]
    rounds: list[RoundRecord]

    @property
    def final_metrics(self) -> dict[str, dict[str, float]]:
        return self.rounds[-1].eval_metrics if self.rounds else {}


def evaluate_site(
    site: SiteTensors,
    fam: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None,
    logit_scale: float,
    head_hidden: int,
) -> dict[str, float]:
    classifier = PersonalisedClassifier(site.classes, fam, site.prototypes, logit_scale, head, head_hidden)
    features, labels = site.evaluation
    return ensemble_report(classifier.predict(features), labels)


def run_federation(
    sites: Sequence[SiteTensors],
    logit_scale: float,
    config: SimulationConfig | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> SimulationResult:
    """Run ``config.rounds`` rounds of local training, masked upload and aggregation over ``sites``."""
    config = config or SimulationConfig()
    if not sites:
        raise ValueError("a federation needs at least one site")
    dims = {site.prototypes.shape[1] for site in sites}
    if len(dims) != 1:
        raise ValueError(f"sites disagree on the embedding width: {sorted(dims)}")
    dim = dims.pop()
    initial = fam_state(build_fam(dim, seed=config.seed))
    global_fam = initial
    local_fams = {site.name: initial for site in sites}  # used only without aggregation
    heads: dict[str, dict[str, torch.Tensor] | None] = {site.name: None for site in sites}
    residuals: dict[str, dict[str, torch.Tensor] | None] = {site.name: None for site in sites}
    records: list[RoundRecord] = []
    budgets = {site.name: _SiteBudget(config, site) for site in sites} if config.privacy.record_level else {}
    for round_index in range(config.rounds):
        updates: list[SiteUpdate] = []
        record = RoundRecord(round_index, {}, {}, {})
        for site_index, site in enumerate(sites):
            start = global_fam if config.aggregate else local_fams[site.name]
            features, labels = site.train
            seed = config.seed * 1000 + site_index
            if site.name in budgets:
                result = budgets[site.name].train(start, heads[site.name], logit_scale, round_index, seed)
            else:
                result = train_local_round(
                    features,
                    labels,
                    site.prototypes,
                    start,
                    heads[site.name],
                    logit_scale=logit_scale,
                    config=config.train,
                    round_index=round_index,
                    seed=seed,
                )
            heads[site.name] = result.head_state
            local_fams[site.name] = result.fam_state
            record.train_metrics[site.name] = result.metrics
            if not config.aggregate:
                continue
            encoded = encode_update(
                fam_delta(result.fam_state, global_fam),
                alive_rows_of(build_fam(dim, result.fam_state)),
                residuals[site.name],
                config.codec,
            )
            residuals[site.name] = encoded.residual
            record.upload_bytes[site.name] = len(encoded.payload)
            updates.append(SiteUpdate(site.name, result.num_samples, decode_update(encoded.payload, encoded.sha256)))
        if config.aggregate:
            global_fam = to_torch(aggregate(global_fam, updates, weighting=config.weighting))
        for site in sites:
            fam = global_fam if config.aggregate else local_fams[site.name]
            record.eval_metrics[site.name] = evaluate_site(
                site, fam, heads[site.name], logit_scale, config.train.head_hidden
            )
        records.append(record)
        if on_round is not None:
            on_round(record)
    final_heads = {name: head for name, head in heads.items() if head is not None}
    return SimulationResult(global_fam, final_heads, records)


class _SiteBudget:
    """A simulated site's DP-SGD plan and ledger: σ calibrated so that all rounds fit the target ε."""

    def __init__(self, config: SimulationConfig, site: SiteTensors) -> None:
        self.privacy, self.site = config.privacy, site
        self.train_config = config.train
        self.num_samples = int(site.train[1].numel())
        self.sigma = plan_sigma(config.privacy, self.num_samples, config.rounds, config.train.local_epochs)
        self.history: list[GaussianSteps] = []
        self.ledger: PrivacyLedger | None = None

    def train(
        self,
        start: dict[str, torch.Tensor],
        head: dict[str, torch.Tensor] | None,
        logit_scale: float,
        round_index: int,
        seed: int,
    ) -> RoundResult:
        plan = next_round(self.privacy, self.num_samples, self.sigma, self.history, self.train_config.local_epochs)
        if not isinstance(plan, RoundPlan):
            raise ValueError(plan.message())
        self.history.append(GaussianSteps(plan.sample_rate, plan.sigma, plan.steps))
        self.ledger = plan.ledger
        features, labels = self.site.train
        result = train_private_round(
            features,
            labels,
            self.site.prototypes,
            start,
            head,
            logit_scale=logit_scale,
            plan=DpSgdPlan(
                plan.clip_norm, plan.sigma, plan.sample_rate, plan.steps, noise_seed=seed * 7919 + round_index
            ),
            config=self.train_config,
            round_index=round_index,
            seed=seed,
        )
        result.metrics["dp_epsilon"] = plan.ledger.epsilon
        return result
