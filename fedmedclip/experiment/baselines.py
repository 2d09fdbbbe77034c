"""The cached-embedding baselines: CLIP zero-shot, local-only head, FedCLIP.

They read the same embeddings and splits as FedMedCLIP, so their differences come from the method alone.
Compute time counts training rounds (validation excluded) plus the shared embedding pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from fedmedclip.experiment.config import FederationSettings
from fedmedclip.experiment.data import PreparedData, PreparedSite, zero_shot_probs
from fedmedclip.experiment.reporter import Reporter
from fedmedclip.experiment.results import MethodResult, probs_metrics, select_round
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.model.personalised import PersonalisedClassifier
from fedmedclip.training.baselines import (
    build_fedclip_adapter,
    fedavg_average,
    fedclip_predict,
    train_fedclip_round,
)
from fedmedclip.training.local_round import train_local_round


def run_zero_shot(data: PreparedData) -> MethodResult:
    scale = data.backbone.logit_scale
    result = MethodResult("zero_shot", "CLIP zero-shot", embed_seconds=data.embed_seconds)
    for site in data.sites:
        result.per_site[site.name] = probs_metrics(zero_shot_probs(site, "test", scale), site.part("test")[1])
    if data.holdout is not None:
        result.holdout = probs_metrics(zero_shot_probs(data.holdout, "test", scale), data.holdout.part("test")[1])
    return result


def run_local_head(data: PreparedData, settings: FederationSettings, reporter: Reporter) -> MethodResult:
    """Each site trains only its private head (cross-entropy), alone: no FAM training, no aggregation.

    The FAM stays at its seeded initialisation (fam_lr = 0): a fixed positive reweighting of the embedding,
    the same one FedMedCLIP starts from, so the head architecture and its input path are FedMedCLIP's.
    Prediction uses the head alone.
    """
    config = settings.train_config(fam_lr=0.0, use_contrastive=False, use_kd=False, use_head_ce=True)
    scale = data.backbone.logit_scale
    dim = data.sites[0].prototypes.shape[1]
    fam = fam_state(build_fam(dim, seed=settings.seed))
    result = MethodResult("local_head", "local-only head", embed_seconds=data.embed_seconds, rounds_run=settings.rounds)
    heads: dict[str, list[dict[str, torch.Tensor]]] = {site.name: [] for site in data.sites}
    with reporter.progress("local-only head: rounds") as update:
        for round_index in range(settings.rounds):
            for index, site in enumerate(data.sites):
                features, labels = site.part("train")
                previous = heads[site.name][-1] if heads[site.name] else None
                started = time.perf_counter()
                trained = train_local_round(
                    features,
                    labels,
                    site.prototypes,
                    fam,
                    previous,
                    logit_scale=scale,
                    config=config,
                    round_index=round_index,
                    seed=settings.seed * 1000 + index,
                )
                result.train_seconds += time.perf_counter() - started
                heads[site.name].append(trained.head_state)
            _record_val_accuracy(
                result,
                data.sites,
                lambda site: _head_probs(site, fam, heads[site.name][-1], "val", scale, config.head_hidden),
            )
            update(round_index + 1, settings.rounds)
    chosen = select_round(result.val_curve, settings.selection)
    result.selected_round = chosen + 1
    for site in data.sites:
        probs = _head_probs(site, fam, heads[site.name][chosen], "test", scale, config.head_hidden)
        result.per_site[site.name] = probs_metrics(probs, _labels(site, "test"))
    result.notes.append("no global model: the held-out site has no prediction")
    return result


def run_fedclip(data: PreparedData, settings: FederationSettings, reporter: Reporter) -> MethodResult:
    """FedCLIP: a federated attention adapter, contrastive loss only, dense fp32 uploads, zero-shot prediction."""
    config = settings.train_config()
    scale = data.backbone.logit_scale
    dim = data.sites[0].prototypes.shape[1]
    global_state = {k: v.clone() for k, v in build_fedclip_adapter(dim, seed=settings.seed).state_dict().items()}
    adapter_bytes = sum(t.numel() * 4 for t in global_state.values())  # sent whole, in fp32, every round
    result = MethodResult("fedclip", "FedCLIP", embed_seconds=data.embed_seconds, rounds_run=settings.rounds)
    history: list[dict[str, torch.Tensor]] = []
    with reporter.progress("FedCLIP: rounds") as update:
        for round_index in range(settings.rounds):
            started = time.perf_counter()
            states, weights = [], []
            for index, site in enumerate(data.sites):
                features, labels = site.part("train")
                state, _ = train_fedclip_round(
                    features,
                    labels,
                    site.prototypes,
                    global_state,
                    logit_scale=scale,
                    config=config,
                    round_index=round_index,
                    seed=settings.seed * 1000 + index,
                )
                states.append(state)
                weights.append(float(labels.numel()) if settings.weighting == "samples" else 1.0)
                result.upload_bytes += adapter_bytes
                result.uploads += 1
            global_state = fedavg_average(states, weights)
            result.train_seconds += time.perf_counter() - started
            history.append(global_state)
            result.upload_per_round.append(adapter_bytes * len(data.sites))
            _record_val_accuracy(result, data.sites, _fedclip_val(global_state, scale))
            update(round_index + 1, settings.rounds)
    chosen = select_round(result.val_curve, settings.selection)
    result.selected_round = chosen + 1
    final = history[chosen]
    for site in data.sites:
        result.per_site[site.name] = probs_metrics(_fedclip_probs(site, final, "test", scale), _labels(site, "test"))
    if data.holdout is not None:
        holdout = data.holdout
        result.holdout = probs_metrics(_fedclip_probs(holdout, final, "test", scale), _labels(holdout, "test"))
    return result


def _head_probs(
    site: PreparedSite,
    fam: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor],
    part: str,
    scale: float,
    hidden: int,
) -> torch.Tensor:
    classifier = PersonalisedClassifier(site.classes, fam, site.prototypes, scale, head, hidden)
    output = classifier.predict(site.part(part)[0])
    assert output.head is not None  # a head was given
    return output.head


def _fedclip_probs(site: PreparedSite, adapter: dict[str, torch.Tensor], part: str, scale: float) -> torch.Tensor:
    return fedclip_predict(adapter, site.part(part)[0], site.prototypes, scale)


def _labels(site: PreparedSite, part: str) -> torch.Tensor:
    return site.part(part)[1]


def _fedclip_val(adapter: dict[str, torch.Tensor], scale: float) -> Callable[[PreparedSite], torch.Tensor]:
    return lambda site: _fedclip_probs(site, adapter, "val", scale)


def _record_val_accuracy(
    result: MethodResult, sites: Sequence[PreparedSite], probs: Callable[[PreparedSite], torch.Tensor]
) -> None:
    """Append this round's validation accuracy per site and its mean over the sites that have a validation
    split (tiny sites may not)."""
    values = []
    for site in sites:
        if _labels(site, "val").numel():
            accuracy = probs_metrics(probs(site), _labels(site, "val"))["accuracy"]
            result.val_per_site.setdefault(site.name, []).append(accuracy)
            values.append(accuracy)
    result.val_curve.append(sum(values) / len(values) if values else 0.0)
