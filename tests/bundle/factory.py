"""Real bundles for tests: a local round of the actual training code on random features, then write_bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from fedmedclip.bundle import Bundle, write_bundle
from fedmedclip.model.backbone import Backbone
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.model.prompts import DEFAULT_TEMPLATES
from fedmedclip.training.calibration import Calibration
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import RoundResult, train_local_round

CLASSES = ("melanoma", "nevus", "basal_cell_carcinoma")
HEAD_HIDDEN = 32


_TRAINED: dict[tuple[str, tuple[str, ...], int], tuple[RoundResult, torch.Tensor]] = {}


def train_site(backbone: Backbone, classes: Sequence[str] = CLASSES, seed: int = 0) -> tuple[RoundResult, torch.Tensor]:
    """One real local round (FAM + private head) on 48 random embeddings; returns it and the prototypes.

    Deterministic, so results are memoised: the suite trains each (backbone, classes, seed) once.
    """
    key = (backbone.weights_digest, tuple(classes), seed)
    if key not in _TRAINED:
        _TRAINED[key] = _train(backbone, classes, seed)
    return _TRAINED[key]


def _train(backbone: Backbone, classes: Sequence[str], seed: int) -> tuple[RoundResult, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(48, backbone.embed_dim, generator=generator)
    labels = torch.arange(48) % len(classes)
    prototypes = backbone.class_prototypes(classes, DEFAULT_TEMPLATES)
    result = train_local_round(
        features,
        labels,
        prototypes,
        fam_state(build_fam(backbone.embed_dim, seed=seed)),
        None,
        logit_scale=backbone.logit_scale,
        config=TrainConfig(batch_size=16, head_hidden=HEAD_HIDDEN, head_lr=1e-2),
        seed=seed,
    )
    return result, prototypes


def publish(
    root: Path,
    site: str,
    backbone: Backbone,
    *,
    classes: Sequence[str] = CLASSES,
    seed: int = 0,
    fam_version: int = 1,
    version: str | None = None,
    with_head: bool = True,
    make_current: bool = True,
    calibration: Calibration | None = None,
) -> Bundle:
    """Train and publish one bundle version the way the agent will."""
    result, prototypes = train_site(backbone, classes, seed)
    return write_bundle(
        root,
        site,
        backbone=backbone,
        classes=classes,
        prompts=DEFAULT_TEMPLATES,
        text_prototypes=prototypes,
        fam_state=result.fam_state,
        fam_version=fam_version,
        head_state=result.head_state if with_head else None,
        head_hidden=HEAD_HIDDEN,
        metrics={"loss": result.metrics["loss"], "train_samples": float(result.num_samples)},
        version=version,
        make_current=make_current,
        calibration=calibration,
    )
