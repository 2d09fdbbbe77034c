"""From the configured data source to embedded, split sites with text prototypes (the shared input of every
method, so all of them see exactly the same images in the same splits)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.data.csv_manifest import read_csv_sites
from fedmedclip.data.imagefolder import DatasetError, ImageRecord, LabeledImages, scan_imagefolder
from fedmedclip.data.isic2019 import load_isic2019
from fedmedclip.data.sites import SiteEmbeddings, embed_site
from fedmedclip.data.synth import HOLDOUT_SITE, SynthConfig, generate, read_summary
from fedmedclip.experiment.config import (
    CsvData,
    ExperimentConfig,
    ImageFolderData,
    ISIC2019Data,
    Preprocess,
    SynthData,
)
from fedmedclip.experiment.reporter import Reporter
from fedmedclip.federation.simulation import SiteTensors
from fedmedclip.model.backbone import Backbone


@dataclass
class LabeledSites:
    """The raw (not yet embedded) sites: training sites by name and the optional held-out one."""

    sites: dict[str, LabeledImages]
    holdout_name: str | None = None
    holdout: LabeledImages | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedSite:
    name: str
    classes: list[str]
    prototypes: torch.Tensor  # C × D, normalised
    embeddings: SiteEmbeddings

    def part(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embeddings.part(name)

    def tensors(self, evaluation: str) -> SiteTensors:
        """The site as the simulation takes it, evaluated on ``evaluation`` ("val" or "test")."""
        return SiteTensors(self.name, self.classes, self.prototypes, self.part("train"), self.part(evaluation))

    def split_sizes(self) -> dict[str, int]:
        return {name: len(indices) for name, indices in self.embeddings.split.parts().items()}


@dataclass
class PreparedData:
    backbone: Backbone
    sites: list[PreparedSite]
    holdout: PreparedSite | None
    embed_seconds: float  # the embedding pass over every image (cache misses only)
    computed: int  # embeddings computed by the backbone (the rest came from the cache)
    skipped: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)


def load_labeled_sites(config: ExperimentConfig, work_dir: Path, reporter: Reporter) -> LabeledSites:
    """Read (or, for synth, generate) the configured sites."""
    source = config.data
    if isinstance(source, SynthData):
        return _synth_sites(source, work_dir / "data" / "synth", reporter)
    if isinstance(source, ImageFolderData):
        return _imagefolder_sites(source)
    if isinstance(source, CsvData):
        found = read_csv_sites(
            source.path,
            root=source.root,
            path_column=source.path_column,
            label_column=source.label_column,
            site_column=source.site_column,
            classes=source.classes,
        )
        return _with_holdout(found, source.holdout_site, f"CSV manifest {source.path}")
    return _isic_sites(source, config.split.seed)


def _synth_sites(source: SynthData, out: Path, reporter: Reporter) -> LabeledSites:
    settings: dict[str, Any] = {
        "sites": source.sites,
        "images_per_site": source.images_per_site,
        "image_size": source.image_size,
        "difficulty": source.difficulty,
        "label_skew": source.label_skew,
        "site_shift": source.site_shift,
        "holdout_site": source.holdout,
        "seed": source.seed,
    }
    if source.classes is not None:
        settings["classes"] = tuple(source.classes)
    synth = SynthConfig(**settings)
    try:
        summary = read_summary(out)
        fresh = summary.config != synth
    except ValueError:
        fresh = True
    if fresh:  # the generator is deterministic, so an existing identical set is reused as is
        with reporter.progress(f"generating synthetic sites in {out}") as update:
            summary = generate(synth, out, progress=update)
    sites = {name: scan_imagefolder(out / name, synth.classes) for name in summary.training_sites}
    holdout = scan_imagefolder(out / HOLDOUT_SITE, synth.classes) if synth.holdout_site else None
    return LabeledSites(sites, HOLDOUT_SITE if holdout else None, holdout)


def _imagefolder_sites(source: ImageFolderData) -> LabeledSites:
    root = source.root
    if not root.is_dir():
        raise DatasetError(f"imagefolder root {root} does not exist")
    names = source.sites or sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if source.holdout_site and source.holdout_site not in names and (root / source.holdout_site).is_dir():
        names = [*names, source.holdout_site]
    scanned = {name: scan_imagefolder(root / name) for name in names}
    classes = source.classes or sorted({name for images in scanned.values() for name in images.classes})
    # Sites may lack some classes: relabel every site into the shared label space.
    relabelled = {name: _relabel(images, classes, f"site {name}") for name, images in scanned.items()}
    return _with_holdout(relabelled, source.holdout_site, f"imagefolder root {root}")


def _relabel(images: LabeledImages, classes: list[str], where: str) -> LabeledImages:
    index = {name: label for label, name in enumerate(classes)}
    records, skipped = [], list(images.skipped)
    for record in images.records:
        if record.class_name in index:
            records.append(ImageRecord(record.path, record.class_name, index[record.class_name]))
        else:
            skipped.append((record.path, f"class {record.class_name!r} is not in the class list"))
    if not records:
        raise DatasetError(f"{where} has no images of classes {', '.join(classes)}")
    return LabeledImages(classes=list(classes), records=records, skipped=skipped)


def _with_holdout(found: dict[str, LabeledImages], holdout: str | None, where: str) -> LabeledSites:
    if holdout is not None and holdout not in found:
        raise DatasetError(f"held-out site {holdout!r} is not in {where} (sites: {', '.join(found)})")
    sites = {name: images for name, images in found.items() if name != holdout}
    if not sites:
        raise DatasetError(f"{where} has no training site besides the held-out one")
    return LabeledSites(sites, holdout, found[holdout] if holdout else None)


def _isic_sites(source: ISIC2019Data, seed: int) -> LabeledSites:
    loaded = load_isic2019(
        source.root,
        ground_truth=source.ground_truth,
        metadata=source.metadata,
        image_dir=source.image_dir,
        classes=source.classes,
        min_images_per_site=source.min_images_per_site,
        bad_rows=source.bad_rows,
    )
    found = loaded.sites
    if source.max_images_per_site is not None:
        found = {
            name: subsample(images, source.max_images_per_site, seed + index)
            for index, (name, images) in enumerate(found.items())
        }
    result = _with_holdout(found, source.holdout_site, "the ISIC 2019 sites")
    if loaded.dropped_sites:
        dropped = ", ".join(f"{name} ({count})" for name, count in loaded.dropped_sites.items())
        result.notes.append(f"ISIC2019 sites below min_images_per_site dropped: {dropped}")
    if loaded.excluded_by_class:
        excluded = ", ".join(f"{code} {count}" for code, count in loaded.excluded_by_class.items())
        result.notes.append(f"ISIC2019 images outside the class subset: {excluded}")
    if loaded.unassigned:
        result.notes.append(f"ISIC2019 images without a site or a single label: {len(loaded.unassigned)}")
    return result


def subsample(images: LabeledImages, limit: int, seed: int) -> LabeledImages:
    """At most ``limit`` records, keeping the class mix (largest remainder per class), seeded."""
    total = len(images.records)
    if total <= limit:
        return images
    by_class: dict[int, list[int]] = {}
    for index, record in enumerate(images.records):
        by_class.setdefault(record.label, []).append(index)
    exact = {label: len(members) * limit / total for label, members in by_class.items()}
    counts = {label: int(value) for label, value in exact.items()}
    for label in sorted(exact, key=lambda c: (counts[c] - exact[c], c))[: limit - sum(counts.values())]:
        counts[label] += 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label, members in sorted(by_class.items()):
        picks = rng.permutation(len(members))[: counts[label]]
        chosen.extend(members[i] for i in picks)
    return LabeledImages(images.classes, [images.records[i] for i in sorted(chosen)], images.skipped)


def embed_sites(
    backbone: Backbone,
    labeled: LabeledSites,
    config: ExperimentConfig,
    cache: EmbeddingCache | None,
    reporter: Reporter,
) -> PreparedData:
    """Embed every site once (through the cache) and build its class prototypes."""
    templates = config.backbone.prompt_templates
    started = time.perf_counter()
    computed = 0
    skipped: dict[str, list[tuple[Path, str]]] = {}

    def embed(name: str, images: LabeledImages, test_only: bool) -> PreparedSite:
        nonlocal computed
        with reporter.progress(f"embedding {name} ({backbone.spec.preprocess} preprocessing)") as update:
            site = embed_site(
                backbone,
                images,
                cache,
                name=name,
                fractions=config.split.fractions,
                split_seed=config.split.seed,
                test_only=test_only,
                batch_size=config.embedding.batch_size,
                num_workers=config.embedding.num_workers,
                progress=update,
            )
        computed += site.computed
        if site.skipped:
            skipped[name] = site.skipped
        return PreparedSite(name, site.classes, backbone.class_prototypes(site.classes, templates), site)

    sites = [embed(name, images, False) for name, images in labeled.sites.items()]
    holdout = None
    if labeled.holdout is not None and labeled.holdout_name is not None:
        holdout = embed(labeled.holdout_name, labeled.holdout, True)
    return PreparedData(backbone, sites, holdout, time.perf_counter() - started, computed, skipped)


def zero_shot_probs(site: PreparedSite, part: str, logit_scale: float) -> torch.Tensor:
    """CLIP's own prediction: cosine similarity of the raw embedding with each class prompt."""
    features, _ = site.part(part)
    return torch.softmax(logit_scale * F.normalize(features, dim=-1) @ site.prototypes.T, dim=-1)


def preprocess_variants(config: ExperimentConfig) -> list[Preprocess]:
    """Every preprocessing the run needs embeddings for: the main one first."""
    wanted: list[Preprocess] = [config.backbone.preprocess]
    for ablation in config.ablations:
        if ablation.preprocess is not None and ablation.preprocess not in wanted:
            wanted.append(ablation.preprocess)
    return wanted
