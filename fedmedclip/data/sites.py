"""A site's labelled images turned into cached embeddings and a seeded train/val/test split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedmedclip.data.cache import EmbeddingCache, embed_images
from fedmedclip.data.imagefolder import DatasetError, scan_imagefolder
from fedmedclip.data.splits import DEFAULT_FRACTIONS, Split, split_indices
from fedmedclip.model.backbone import Backbone


@dataclass(frozen=True)
class SiteEmbeddings:
    """Every usable image of one site as a raw CLIP embedding, with labels and the split."""

    name: str
    classes: list[str]
    features: torch.Tensor  # N × D float32
    labels: torch.Tensor  # N, indices into classes
    split: Split
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    computed: int = 0  # embeddings computed by the backbone in this call; the rest came from the cache

    def part(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of the ``train``, ``val`` or ``test`` part."""
        indices = torch.tensor(self.split.parts()[name], dtype=torch.long)
        return self.features[indices], self.labels[indices]


def embed_imagefolder_site(
    backbone: Backbone,
    root: Path,
    cache: EmbeddingCache | None,
    *,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_seed: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SiteEmbeddings:
    """Scan an ImageFolder site, embed it (through the cache when given) and split it.

    Unreadable files are reported in ``skipped`` and left out; a site with no usable image is an error.
    """
    images = scan_imagefolder(root, classes)
    result = embed_images(
        backbone, images.paths, cache, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    if not result.kept_indices:
        raise DatasetError(f"site {root} has no usable images ({len(result.failed)} unreadable)")
    labels = torch.tensor([images.records[i].label for i in result.kept_indices], dtype=torch.long)
    return SiteEmbeddings(
        name=name or Path(root).name,
        classes=images.classes,
        features=result.features,
        labels=labels,
        split=split_indices(labels.tolist(), fractions, split_seed),
        skipped=[*images.skipped, *result.failed],
        computed=result.computed,
    )
