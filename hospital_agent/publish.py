"""Publishing the personalised bundle (docs/design.md §7) that the inference API hot-reloads.

``fedmedclip.bundle.write_bundle`` does the atomic work (complete version folder first, then the ``current``
pointer); this adds retention, so that a long-running agent does not fill the disk with old versions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from fedmedclip.bundle import BackboneRecord, Bundle, prune_versions, write_bundle
from fedmedclip.logs import event
from fedmedclip.privacy.ledger import PrivacyGuarantee, describe
from fedmedclip.training.calibration import Calibration

log = logging.getLogger("hospital_agent.publish")


def publish_bundle(
    root: Path,
    site: str,
    *,
    backbone: BackboneRecord,
    classes: Sequence[str],
    prompts: Sequence[str],
    prototypes: torch.Tensor,
    fam: Mapping[str, torch.Tensor],
    fam_version: int,
    head: Mapping[str, torch.Tensor] | None,
    head_hidden: int,
    metrics: Mapping[str, float],
    keep: int,
    run_id: str = "",
    fam_privacy: PrivacyGuarantee | None = None,
    calibration: Calibration | None = None,
) -> Bundle:
    """Write and switch to a new bundle version, then delete all but the newest ``keep`` versions.

    ``calibration`` is the temperature fitted on the site's validation split (``trainer.evaluate_and_calibrate``);
    the API serves calibrated probabilities with it, and the manifest records ECE before and after.
    """
    bundle = write_bundle(
        root,
        site,
        backbone=backbone,
        classes=classes,
        prompts=prompts,
        text_prototypes=prototypes,
        fam_state=fam,
        fam_version=fam_version,
        head_state=head,
        head_hidden=head_hidden,
        metrics=metrics,
        fam_privacy=fam_privacy,
        calibration=calibration,
    )
    removed = prune_versions(root, site, keep)
    event(
        log,
        "bundle published",
        site=site,
        run=run_id or None,
        version=fam_version,
        bundle=bundle.version,
        has_head=head is not None,
        privacy=describe(fam_privacy),
        temperature=round(calibration.temperature, 4) if calibration else None,
        val_ece=round(calibration.ece_before, 4) if calibration else None,
        val_ece_calibrated=round(calibration.ece_after, 4) if calibration else None,
        pruned=len(removed) or None,
    )
    return bundle
