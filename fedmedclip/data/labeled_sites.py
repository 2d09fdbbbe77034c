"""Embed any adapter's ``LabeledImages`` (ImageFolder, CSV manifest, ISIC 2019) as one site.

``sites.embed_imagefolder_site`` does this for an ImageFolder root; this does it for a list already scanned,
and keeps each row's file path, which the FedAvg baseline needs to go back to the pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedmedclip.data.cache import EmbeddingCache, embed_images
from fedmedclip.data.imagefolder import DatasetError, LabeledImages
from fedmedclip.data.sites import SiteEmbeddings
from fedmedclip.data.splits import DEFAULT_FRACTIONS, Split, split_indices
from fedmedclip.model.backbone import Backbone


@dataclass(frozen=True)
class LabeledSiteEmbeddings(SiteEmbeddings):
    """``SiteEmbeddings`` plus the file behind every row (``paths[i]`` ↔ ``features[i]``)."""

    paths: list[Path] = field(default_factory=list)

    def part_paths(self, name: str) -> list[Path]:
        return [self.paths[i] for i in self.split.parts()[name]]


def embed_labeled_site(
    backbone: Backbone,
    images: LabeledImages,
    cache: EmbeddingCache | None,
    *,
    name: str,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_seed: int = 0,
    test_only: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> LabeledSiteEmbeddings:
    """Embed ``images`` (through ``cache`` when given) and split them by label, seeded.

    ``test_only=True`` puts every image in the test part: a held-out site is never trained or validated on.
    Unreadable files are reported in ``skipped`` and left out; a site with no usable image is an error.
    """
    result = embed_images(
        backbone, images.paths, cache, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    if not result.kept_indices:
        raise DatasetError(f"site {name} has no usable images ({len(result.failed)} unreadable)")
    kept = [images.records[i] for i in result.kept_indices]
    labels = torch.tensor([record.label for record in kept], dtype=torch.long)
    if test_only:
        split = Split(train=[], val=[], test=list(range(len(kept))))
    else:
        split = split_indices(labels.tolist(), fractions, split_seed)
    return LabeledSiteEmbeddings(
        name=name,
        classes=list(images.classes),
        features=result.features,
        labels=labels,
        split=split,
        skipped=[*images.skipped, *result.failed],
        computed=result.computed,
        paths=[record.path for record in kept],
    )
