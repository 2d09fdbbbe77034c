"""FedMedCLIP and its ablations, through ``run_federation``: the services' training, codec and aggregation.

Model selection follows the paper (the round with the best mean validation accuracy) when
``federation.selection = best_val``. ``run_federation`` returns only the final state, so the harness runs
once evaluating on the validation splits, picks the round, then replays the federation up to that round
evaluating on the test splits. Every step is seeded, so the replay retraces the same rounds exactly; the
compute time reported is the first run's alone.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from fedmedclip.experiment.config import AblationSettings, FederationSettings, Preprocess
from fedmedclip.experiment.data import PreparedData
from fedmedclip.experiment.reporter import Reporter
from fedmedclip.experiment.results import Kind, MethodResult, select_round
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.simulation import (
    DENSE_FP32,
    RoundRecord,
    SimulationConfig,
    SimulationResult,
    evaluate_site,
    run_federation,
)
from fedmedclip.model.ensemble import calibrate_probs
from fedmedclip.model.personalised import PersonalisedClassifier
from fedmedclip.training.calibration import fit_temperature
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.metrics import expected_calibration_error, reliability_bins

_REPORTED = ("zero_shot_acc", "head_acc", "mean_alpha")


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    kind: Kind
    train: TrainConfig
    codec: CodecConfig
    aggregate: bool
    preprocess: Preprocess

    def switches(self) -> dict[str, object]:
        return {
            "use_contrastive": self.train.use_contrastive,
            "use_head_ce": self.train.use_head_ce,
            "use_kd": self.train.use_kd,
            "aggregate": self.aggregate,
            "codec": self.codec.to_dict(),
            "preprocess": self.preprocess,
        }


def main_variant(settings: FederationSettings, preprocess: Preprocess) -> Variant:
    return Variant(
        "fedmedclip", "FedMedCLIP", "method", settings.train_config(), settings.codec.to_codec(), True, preprocess
    )


def ablation_variant(ablation: AblationSettings, settings: FederationSettings, preprocess: Preprocess) -> Variant:
    overrides = {
        name: value
        for name in ("use_contrastive", "use_head_ce", "use_kd")
        if (value := getattr(ablation, name)) is not None
    }
    train = settings.train_config(**overrides)
    if not (train.use_contrastive or train.use_head_ce):
        raise ValueError(f"ablation {ablation.name!r} turns off both the contrastive and the head CE loss")
    codec = DENSE_FP32 if ablation.dense else settings.codec.to_codec()
    aggregate = True if ablation.aggregate is None else ablation.aggregate
    return Variant(ablation.name, ablation.name, "ablation", train, codec, aggregate, ablation.preprocess or preprocess)


def run_variant(data: PreparedData, variant: Variant, settings: FederationSettings, reporter: Reporter) -> MethodResult:
    """Train ``variant`` for ``settings.rounds`` rounds and report the selected round on the test splits."""
    scale = data.backbone.logit_scale
    simulation = SimulationConfig(
        rounds=settings.rounds,
        train=variant.train,
        codec=variant.codec,
        weighting=settings.weighting,
        aggregate=variant.aggregate,
        seed=settings.seed,
    )
    result = MethodResult(
        variant.key,
        variant.label,
        variant.kind,
        embed_seconds=data.embed_seconds,
        rounds_run=settings.rounds,
        switches=variant.switches(),
    )
    evaluate_on = "val" if settings.selection == "best_val" else "test"
    with reporter.progress(f"{variant.label}: rounds") as update:

        def on_round(record: RoundRecord) -> None:
            update(record.round_index + 1, settings.rounds)

        started = time.perf_counter()
        first = run_federation([site.tensors(evaluate_on) for site in data.sites], scale, simulation, on_round)
        result.train_seconds = time.perf_counter() - started
    for record in first.rounds:
        result.upload_bytes += sum(record.upload_bytes.values())
        result.uploads += len(record.upload_bytes)
        result.upload_per_round.append(sum(record.upload_bytes.values()))
    if evaluate_on == "val":
        result.val_curve = [_mean_accuracy(record) for record in first.rounds]
        result.val_per_site = {
            site.name: [record.eval_metrics[site.name]["ensemble_acc"] for record in first.rounds]
            for site in data.sites
        }
    chosen = select_round(result.val_curve, "best_val") if evaluate_on == "val" else settings.rounds - 1
    result.selected_round = chosen + 1
    final = first
    if evaluate_on == "val":
        replay = dataclasses.replace(simulation, rounds=chosen + 1)
        with reporter.progress(f"{variant.label}: replaying to round {chosen + 1} for the test splits") as update:
            final = run_federation(
                [site.tensors("test") for site in data.sites],
                scale,
                replay,
                lambda record: update(record.round_index + 1, chosen + 1),
            )
    for name, metrics in final.final_metrics.items():
        result.per_site[name] = _as_row(metrics)
    result.holdout = _holdout(data, final, variant, settings)
    result.calibration = calibration_report(data, final, variant.train.head_hidden)
    if not variant.aggregate:
        result.notes.append("no aggregation: no global FAM, so the held-out site has no prediction")
    return result


def calibration_report(data: PreparedData, final: SimulationResult, head_hidden: int) -> dict[str, Any] | None:
    """Fit each site's temperature on its validation split (as the agent does) and judge it on test.

    ``None`` when no site has enough validation images to fit one.
    """
    scale = data.backbone.logit_scale
    per_site: dict[str, dict[str, float]] = {}
    raw_all, calibrated_all, labels_all = [], [], []
    for site in data.sites:
        classifier = PersonalisedClassifier(
            site.classes, final.global_fam, site.prototypes, scale, final.heads.get(site.name), head_hidden
        )
        val_features, val_labels = site.part("val")
        test_features, test_labels = site.part("test")
        fitted = fit_temperature(classifier.predict(val_features).probs, val_labels)
        if fitted is None or test_labels.numel() == 0:
            continue
        raw = classifier.predict(test_features).probs
        calibrated = calibrate_probs(raw, fitted.temperature)
        per_site[site.name] = {
            "temperature": fitted.temperature,
            "val_ece_before": fitted.ece_before,
            "val_ece_after": fitted.ece_after,
            "test_ece_before": expected_calibration_error(raw, test_labels),
            "test_ece_after": expected_calibration_error(calibrated, test_labels),
        }
        # Pooled over sites for one reliability diagram: the label spaces may differ, but confidence and
        # correctness do not depend on which classes they are about.
        raw_all.append(raw.max(dim=-1).values)
        calibrated_all.append(calibrated.max(dim=-1).values)
        labels_all.append((raw.argmax(-1) == test_labels).float())
    if not per_site:
        return None
    correct = torch.cat(labels_all)
    return {
        "method": "temperature",
        "per_site": per_site,
        "test_ece_before": sum(s["test_ece_before"] for s in per_site.values()) / len(per_site),
        "test_ece_after": sum(s["test_ece_after"] for s in per_site.values()) / len(per_site),
        "reliability": {
            "uncalibrated": reliability_bins(torch.cat(raw_all), correct),
            "calibrated": reliability_bins(torch.cat(calibrated_all), correct),
        },
    }


def _mean_accuracy(record: RoundRecord) -> float:
    values = [metrics["ensemble_acc"] for metrics in record.eval_metrics.values()]
    return sum(values) / len(values)


def _as_row(metrics: dict[str, float]) -> dict[str, float]:
    row = {"accuracy": metrics["ensemble_acc"], "macro_f1": metrics["macro_f1"], "ece": metrics["ece"]}
    row.update({name: metrics[name] for name in _REPORTED if name in metrics})
    return row


def _holdout(
    data: PreparedData, final: SimulationResult, variant: Variant, settings: FederationSettings
) -> dict[str, float] | None:
    """The held-out site has no head: the global FAM's zero-shot matching alone predicts it."""
    if data.holdout is None or not variant.aggregate:
        return None
    site = data.holdout.tensors("test")
    metrics = evaluate_site(site, final.global_fam, None, data.backbone.logit_scale, variant.train.head_hidden)
    return _as_row(metrics) | {"n": float(site.evaluation[1].numel())}
