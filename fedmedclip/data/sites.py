"""A site's labelled images turned into cached embeddings and a seeded train/val/test split.

Works for any adapter's ``LabeledImages`` (ImageFolder, CSV manifest, ISIC 2019, DICOM); each row keeps its
file path, which the FedAvg baseline needs to go back to the pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedmedclip.data.cache import BatchDecoder, EmbeddingCache, embed_images
from fedmedclip.data.imagefolder import DatasetError, LabeledImages, scan_imagefolder
from fedmedclip.data.splits import DEFAULT_FRACTIONS, Split, split_indices
from fedmedclip.model.backbone import Backbone


class NoUsableImagesError(DatasetError):
    """Not one listed file of a site decoded; ``failed`` holds every (path, reason) for the skipped list."""

    def __init__(self, name: str, failed: Sequence[tuple[Path, str]]) -> None:
        self.failed = list(failed)
        examples = "; ".join(f"{path}: {reason}" for path, reason in self.failed[:3])
        more = f" (and {len(self.failed) - 3} more)" if len(self.failed) > 3 else ""
        super().__init__(f"site {name} has no usable images ({len(self.failed)} unreadable): {examples}{more}")


@dataclass(frozen=True)
class SiteEmbeddings:
    """Every usable image of one site as a raw CLIP embedding, with labels, paths and the split."""

    name: str
    classes: list[str]
    features: torch.Tensor  # N × D float32
    labels: torch.Tensor  # N, indices into classes
    split: Split
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    computed: int = 0  # embeddings computed by the backbone in this call; the rest came from the cache
    paths: list[Path] = field(default_factory=list)  # paths[i] is the file behind features[i]

    def part(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of the ``train``, ``val`` or ``test`` part."""
        indices = torch.tensor(self.split.parts()[name], dtype=torch.long)
        return self.features[indices], self.labels[indices]

    def part_paths(self, name: str) -> list[Path]:
        return [self.paths[i] for i in self.split.parts()[name]]


def embed_site(
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
    decoder: BatchDecoder | None = None,
) -> SiteEmbeddings:
    """Embed ``images`` (through ``cache`` when given) and split them by label, seeded.

    ``test_only=True`` puts every image in the test part: a held-out site is never trained or validated on.
    Unreadable files are reported in ``skipped`` and left out; a site with no usable image is an error.
    ``decoder``: e.g. a ``data.embed_pipeline.EmbedPipeline`` (GPU JPEG decoding, persistent workers).
    """
    result = embed_images(
        backbone,
        images.paths,
        cache,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        decoder=decoder,
    )
    if not result.kept_indices:
        raise NoUsableImagesError(name, result.failed)
    kept = [images.records[i] for i in result.kept_indices]
    labels = torch.tensor([record.label for record in kept], dtype=torch.long)
    if test_only:
        split = Split(train=[], val=[], test=list(range(len(kept))))
    else:
        split = split_indices(labels.tolist(), fractions, split_seed)
    return SiteEmbeddings(
        name=name,
        classes=list(images.classes),
        features=result.features,
        labels=labels,
        split=split,
        skipped=[*images.skipped, *result.failed],
        computed=result.computed,
        paths=[record.path for record in kept],
    )


def embed_imagefolder_site(
    backbone: Backbone,
    root: Path,
    cache: EmbeddingCache | None,
    *,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    split_seed: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SiteEmbeddings:
    """``embed_site`` for an ImageFolder root (``root/<class>/<image>``); the site is named after the folder."""
    return embed_site(
        backbone,
        scan_imagefolder(root, classes),
        cache,
        name=name or Path(root).name,
        split_seed=split_seed,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
