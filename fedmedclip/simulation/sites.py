"""Each shard's site data, generated or sliced where the shard lives: embeddings never pass through the driver.

Everything is seeded by (config seed, global site index), so a site's data does not depend on which shard,
process or machine builds it. Pure computation, except ``load_pool`` which reads the ``.npz`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fedmedclip.simulation.config import EmbeddingSites, SimulateConfig, SyntheticSites


@dataclass(frozen=True)
class ShardData:
    sites: list[int]  # global site indices
    train_features: torch.Tensor  # S × N × D
    train_labels: torch.Tensor  # S × N
    eval_features: torch.Tensor  # S × M × D
    eval_labels: torch.Tensor  # S × M
    prototypes: torch.Tensor  # C × D, normalised, shared by every site

    def nbytes(self) -> int:
        tensors = (self.train_features, self.train_labels, self.eval_features, self.eval_labels, self.prototypes)
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class Pool:
    features: torch.Tensor  # N × D
    labels: torch.Tensor  # N
    prototypes: torch.Tensor  # C × D


def site_name(index: int) -> str:
    return f"site-{index:05d}"


def site_seed(config: SimulateConfig, index: int) -> int:
    """The seed a site's agent would get: its head initialisation and batch shuffling follow from it."""
    return config.seed * 1_000_003 + index


def load_pool(source: EmbeddingSites) -> Pool:
    try:
        with np.load(source.path) as archive:
            arrays = {key: archive[key] for key in ("features", "labels", "prototypes")}
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read embeddings {source.path}: {error}") from error
    except KeyError as error:
        raise ValueError(
            f"embeddings {source.path} lack the array {error}; need features, labels, prototypes"
        ) from error
    features = torch.from_numpy(arrays["features"]).float()
    labels = torch.from_numpy(arrays["labels"]).long()
    prototypes = F.normalize(torch.from_numpy(arrays["prototypes"]).float(), dim=-1)
    if features.dim() != 2 or labels.shape != (features.shape[0],) or prototypes.shape[1:] != features.shape[1:]:
        raise ValueError(
            f"embeddings {source.path}: features {tuple(features.shape)}, labels {tuple(labels.shape)} and "
            f"prototypes {tuple(prototypes.shape)} do not fit together (N×D, N, C×D)"
        )
    if labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= prototypes.shape[0]:
        raise ValueError(f"embeddings {source.path}: labels must lie in [0, {prototypes.shape[0]})")
    return Pool(features, labels, prototypes)


def _synthetic_world(config: SimulateConfig, source: SyntheticSites) -> tuple[torch.Tensor, torch.Tensor]:
    """(text prototypes, image cluster centres), the same for every site."""
    generator = torch.Generator().manual_seed(config.seed * 7_919 + 17)
    prototypes = F.normalize(torch.randn(source.classes, source.dim, generator=generator), dim=-1)
    offsets = F.normalize(torch.randn(source.classes, source.dim, generator=generator), dim=-1)
    return prototypes, F.normalize(prototypes + source.class_offset * offsets, dim=-1)


def _site_labels(config: SimulateConfig, num_classes: int, generator: torch.Generator, count: int) -> torch.Tensor:
    alpha = config.sites.dirichlet_alpha
    if alpha is None:
        return torch.randint(0, num_classes, (count,), generator=generator)
    concentration = torch.full((num_classes,), float(alpha))
    # torch's Dirichlet has no generator argument: draw it from seeded Gamma variates via numpy instead.
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    proportions = torch.from_numpy(rng.dirichlet(concentration.numpy())).float()
    return torch.multinomial(proportions.clamp_min(1e-12), count, replacement=True, generator=generator)


def build_shard(config: SimulateConfig, sites: list[int], pool: Pool | None = None) -> ShardData:
    """The train and evaluation data of ``sites``; ``pool`` is needed for embedding-backed sites."""
    source = config.sites.data
    train_n, eval_n = config.sites.train_samples, config.sites.eval_samples
    if isinstance(source, SyntheticSites):
        prototypes, centres = _synthetic_world(config, source)
    else:
        if pool is None:
            pool = load_pool(source)
        prototypes = pool.prototypes
        by_class = [torch.nonzero(pool.labels == c).flatten() for c in range(prototypes.shape[0])]
    num_classes, dim = prototypes.shape
    features, labels = [], []
    for index in sites:
        generator = torch.Generator().manual_seed(site_seed(config, index) * 31 + 5)
        site_labels = _site_labels(config, num_classes, generator, train_n + eval_n)
        if isinstance(source, SyntheticSites):
            shift = source.site_shift * F.normalize(torch.randn(dim, generator=generator), dim=-1)
            noise = source.noise * torch.randn(train_n + eval_n, dim, generator=generator) / dim**0.5 * 4
            site_features = F.normalize(centres[site_labels] + shift + noise, dim=-1)
        else:
            assert pool is not None
            picks = torch.empty(train_n + eval_n, dtype=torch.long)
            for c in range(num_classes):
                where = torch.nonzero(site_labels == c).flatten()
                if where.numel() == 0:
                    continue
                if by_class[c].numel() == 0:  # a class absent from the pool: fall back to any image
                    choice = torch.randint(0, pool.labels.numel(), (where.numel(),), generator=generator)
                    picks[where] = choice
                    continue
                choice = torch.randint(0, by_class[c].numel(), (where.numel(),), generator=generator)
                picks[where] = by_class[c][choice]
            site_features, site_labels = pool.features[picks], pool.labels[picks]
        features.append(site_features)
        labels.append(site_labels)
    stacked_features, stacked_labels = torch.stack(features), torch.stack(labels)
    return ShardData(
        sites=list(sites),
        train_features=stacked_features[:, :train_n].contiguous(),
        train_labels=stacked_labels[:, :train_n].contiguous(),
        eval_features=stacked_features[:, train_n:].contiguous(),
        eval_labels=stacked_labels[:, train_n:].contiguous(),
        prototypes=prototypes,
    )


def write_pool(path: Path, features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor) -> None:
    """Store a pool in the ``.npz`` layout ``EmbeddingSites`` reads (used by tests and by users' exports)."""
    np.savez(path, features=features.numpy(), labels=labels.numpy(), prototypes=prototypes.numpy())
