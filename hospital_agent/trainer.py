"""Glue from the site's images to an encoded update: embed (through the cache), train, encode, evaluate.

Everything here is local computation: no network. The only things that leave the site are what
``RoundOutcome`` puts in ``payload``, ``num_samples`` and ``report`` (aggregate numbers), and the loop decides
to send them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from fedmedclip.data import sites as site_data
from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.data.imagefolder import LabeledImages
from fedmedclip.data.sites import SiteEmbeddings
from fedmedclip.federation.codec import CodecStats, encode_update
from fedmedclip.federation.delta import alive_rows_of_state, fam_delta
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.logs import event
from fedmedclip.model.backbone import Backbone, BackboneSpec
from fedmedclip.model.head import build_head
from fedmedclip.model.personalised import PersonalisedClassifier
from fedmedclip.model.prompts import DEFAULT_TEMPLATES
from fedmedclip.privacy.budget import RoundPlan
from fedmedclip.privacy.dp_round import DpSgdPlan, train_private_round
from fedmedclip.privacy.ledger import PrivacyLedger
from fedmedclip.training.calibration import Calibration, fit_temperature
from fedmedclip.training.local_round import train_local_round
from fedmedclip.training.metrics import ensemble_report

log = logging.getLogger("hospital_agent.trainer")
# What a site reports of an evaluation: accuracies and macro-F1, nothing per sample.
REPORTED = ("zero_shot_acc", "head_acc", "ensemble_acc", "macro_f1")
# Round metrics of train_local_round → the names sent to the aggregator (means over the round's batches).
_TRAIN_REPORTED = {
    "loss": "train_loss",
    "contrastive": "train_contrastive",
    "head_ce": "train_head_ce",
    "kd": "train_kd",
    "train_head_acc": "train_head_acc",
}


class IncompatibleRunError(ValueError):
    """The run cannot be served by this site as configured (backbone, width); the message says why."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IncompatibleRunError(f"device {name!r} is configured but CUDA is not available on this machine")
    return device


def run_templates(config: RunConfig) -> tuple[str, ...]:
    """The run's prompt templates (``{class}`` placeholders), or the library default."""
    return tuple(config.prompt_templates) or DEFAULT_TEMPLATES


def embed_site(
    backbone: Backbone,
    images: LabeledImages,
    cache: EmbeddingCache | None,
    *,
    site: str,
    split_seed: int,
    batch_size: int,
    num_workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> SiteEmbeddings:
    """Every usable image as a raw CLIP embedding (cached ones are not recomputed), split 60/20/20."""
    started = time.perf_counter()
    embedded = site_data.embed_site(
        backbone,
        images,
        cache,
        name=site,
        split_seed=split_seed,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    event(
        log,
        "embeddings ready",
        site=site,
        images=len(embedded.labels),
        computed=embedded.computed,
        reused=len(embedded.labels) - embedded.computed,
        seconds=round(time.perf_counter() - started, 3),
    )
    return embedded


def check_backbone(backbone: Backbone, config: RunConfig) -> None:
    """Refuse a run whose backbone or width differs from what this site computes (``IncompatibleRunError``)."""
    wanted = config.backbone
    if wanted.weights_digest and wanted.weights_digest != backbone.weights_digest:
        # Full digests: for a pack this is its manifest digest, which the operator compares with
        # `fedmedclip backbone verify PACK`.
        raise IncompatibleRunError(
            f"the run pins backbone weights digest {wanted.weights_digest}, but this site's backbone "
            f"({backbone.spec.describe()}) has weights digest {backbone.weights_digest}: its embeddings would not "
            "match the federation's; install the run's backbone pack (`fedmedclip backbone verify` prints a digest)"
        )
    if backbone.embed_dim != config.embed_dim:
        raise IncompatibleRunError(
            f"the run's FAM width is {config.embed_dim}, but backbone {backbone.spec.model} embeds to "
            f"{backbone.embed_dim} dimensions"
        )


def backbone_spec_for(config: RunConfig, local: BackboneSpec | None) -> BackboneSpec:
    """The run's backbone, loaded from this site's own weights when configured (same model required)."""
    wanted = config.backbone.to_spec()
    if local is None:
        return wanted
    if local.model != wanted.model or local.preprocess != wanted.preprocess:
        raise IncompatibleRunError(
            f"the run uses backbone {wanted.model} (preprocess {wanted.preprocess}), but this site is configured "
            f"for {local.model} (preprocess {local.preprocess}); change backbone: in the agent config"
        )
    # The local weights (a file or tag available here) stand in for the run's name for the same weights;
    # check_backbone compares digests when the run pins one.
    return BackboneSpec(
        model=wanted.model,
        weights=local.weights if local.weights is not None else wanted.weights,
        preprocess=wanted.preprocess,
        seed=wanted.seed,
    )


def compatible_head(
    head: Mapping[str, torch.Tensor] | None, classes: Sequence[str], head_classes: Sequence[str], dim: int, hidden: int
) -> dict[str, torch.Tensor] | None:
    """The saved head if it fits this label space, width and hidden size; ``None`` starts a new head."""
    if head is None or list(classes) != list(head_classes):
        return None
    try:
        build_head(dim, len(classes), dict(head), hidden=hidden)
    except (RuntimeError, ValueError):
        return None
    return dict(head)


def evaluate(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    prototypes: torch.Tensor,
    logit_scale: float,
    fam: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None,
    head_hidden: int,
) -> dict[str, float]:
    """Zero-shot, head and ensemble accuracy and macro-F1 on a labelled split (aggregate numbers only)."""
    metrics, _ = evaluate_and_calibrate(
        features, labels, classes, prototypes, logit_scale, fam, head, head_hidden, calibrate=False
    )
    return metrics


def evaluate_and_calibrate(
    features: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    prototypes: torch.Tensor,
    logit_scale: float,
    fam: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None,
    head_hidden: int,
    *,
    calibrate: bool = True,
) -> tuple[dict[str, float], Calibration | None]:
    """``evaluate``'s metrics and the ensemble's temperature fitted on the same (validation) predictions.

    One forward pass for both (the bundle's metrics and its calibration come from the same split). The
    calibration is ``None`` when there are too few images to fit one, or with ``calibrate=False``.
    """
    if labels.numel() == 0:
        return {}, None
    classifier = PersonalisedClassifier(classes, fam, prototypes, logit_scale, head, head_hidden)
    prediction = classifier.predict(features)
    report = ensemble_report(prediction, labels)
    metrics = {name: float(report[name]) for name in REPORTED if name in report}
    calibration = fit_temperature(prediction.probs, labels, split="val") if calibrate else None
    return metrics, calibration


def majority_rate(labels: torch.Tensor) -> float:
    """Accuracy of always predicting the split's most common class: the bar "above chance" means."""
    if labels.numel() == 0:
        return 0.0
    return Counter(labels.tolist()).most_common(1)[0][1] / labels.numel()


@dataclass(frozen=True)
class RoundOutcome:
    payload: bytes
    sha256: str
    residual: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    num_samples: int
    report: dict[str, float]  # what goes into the update header: train losses and validation accuracies
    stats: CodecStats
    seconds: float
    privacy: PrivacyLedger | None = None  # the guarantee after this round under record-level DP
    validation: dict[str, float] | None = None  # local validation of the round (logged, sent only without DP)
    fam: dict[str, torch.Tensor] | None = None  # the local FAM after the round (secure rounds encode from it)


def train_round(
    site: SiteEmbeddings,
    prototypes: torch.Tensor,
    logit_scale: float,
    config: RunConfig,
    *,
    round_number: int,
    global_fam: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None,
    residual: dict[str, torch.Tensor] | None,
    seed: int,
    device: torch.device,
    privacy: RoundPlan | None = None,
) -> RoundOutcome:
    """One local round from ``global_fam``; the update is ``Δ + residual`` encoded with the run's codec.

    With a ``privacy`` plan the FAM trains by DP-SGD (docs/design.md §3.15) and the header carries only the
    privacy ledger: train losses and validation accuracies are un-noised functions of the records, so under
    DP they stay in the site's log.
    """
    started = time.perf_counter()
    features, labels = site.part("train")
    if privacy is None:
        result = train_local_round(
            features.to(device),
            labels.to(device),
            prototypes.to(device),
            global_fam,
            head,
            logit_scale=logit_scale,
            config=config.train,
            round_index=round_number - 1,
            seed=seed,
        )
    else:
        result = train_private_round(
            features.to(device),
            labels.to(device),
            prototypes.to(device),
            global_fam,
            head,
            logit_scale=logit_scale,
            plan=DpSgdPlan(privacy.clip_norm, privacy.sigma, privacy.sample_rate, privacy.steps),
            config=config.train,
            round_index=round_number - 1,
            seed=seed,
        )
    local_fam = {name: tensor.cpu() for name, tensor in result.fam_state.items()}
    new_head = {name: tensor.cpu() for name, tensor in result.head_state.items()}
    if residual is not None and set(residual) != set(local_fam):
        residual = None  # from another FAM layout: nothing to carry over
    encoded = encode_update(fam_delta(local_fam, global_fam), alive_rows_of_state(local_fam), residual, config.codec)
    val_features, val_labels = site.part("val")
    validation = evaluate(
        val_features,
        val_labels,
        site.classes,
        prototypes,
        logit_scale,
        local_fam,
        new_head,
        config.train.head_hidden,
    )
    report = {wire: result.metrics[name] for name, wire in _TRAIN_REPORTED.items() if name in result.metrics}
    report.update({f"val_{name}": value for name, value in validation.items()})
    local_report = dict(report)
    if privacy is not None:
        report = {}
    return RoundOutcome(
        payload=encoded.payload,
        sha256=encoded.sha256,
        residual=encoded.residual,
        head=new_head,
        num_samples=result.num_samples,
        report=report,
        stats=encoded.stats,
        seconds=time.perf_counter() - started,
        privacy=None if privacy is None else privacy.ledger,
        validation=local_report,
        fam=local_fam,
    )
