"""The ``fedmedclip simulate`` configuration: one YAML file validated by pydantic, like the experiment harness.

Unknown keys are errors, relative paths are relative to the file's folder (docs/simulation.md lists every key).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedmedclip.experiment.config import CodecSettings, ConfigError, read_yaml_mapping
from fedmedclip.training.config import TrainConfig

__all__ = ["ConfigError", "SimulateConfig", "load_simulate_config", "parse_simulate_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticSites(_Strict):
    """Sites drawn from class clusters around random text prototypes, each with its own shift and label skew."""

    kind: Literal["synthetic"]
    dim: int = Field(default=512, ge=8, le=4096)
    classes: int = Field(default=4, ge=2, le=1000)
    noise: float = Field(default=0.9, ge=0.0)  # spread of a class cluster
    site_shift: float = Field(default=0.3, ge=0.0)  # per-site offset (feature skew)
    class_offset: float = Field(default=1.6, ge=0.0)  # how far image clusters sit from their text prototype


class EmbeddingSites(_Strict):
    """Cached embeddings (an ``.npz`` with ``features`` N×D, ``labels`` N, ``prototypes`` C×D) split into many
    virtual sites. Virtual sites sample from the pool, so with more sites than images they share images."""

    kind: Literal["embeddings"]
    path: Path


class SiteSettings(_Strict):
    count: int = Field(default=16, ge=1, le=1_000_000)
    train_samples: int = Field(default=100, ge=2)  # per site; equal sizes let a shard train as one batch
    eval_samples: int = Field(default=25, ge=1)
    dirichlet_alpha: float | None = Field(default=0.5, gt=0.0)  # label skew; None: uniform labels
    data: Annotated[SyntheticSites | EmbeddingSites, Field(discriminator="kind")] = SyntheticSites(kind="synthetic")


class RaySettings(_Strict):
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:10001": join a cluster
    cpus_per_actor: float = Field(default=1.0, gt=0.0)
    gpus_per_actor: float = Field(default=0.0, ge=0.0)


class SimulateConfig(_Strict):
    name: str = Field(min_length=1)
    seed: int = Field(default=0, ge=0)
    sites: SiteSettings = SiteSettings()
    rounds: int = Field(default=5, ge=1)
    participation: float = Field(default=1.0, gt=0.0, le=1.0)  # fraction of sites asked to train per round
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # of those asked: crash before training, send nothing
    stragglers: float = Field(default=0.0, ge=0.0, lt=1.0)  # of those asked: train, but miss the round close
    weighting: Literal["samples", "uniform"] = "samples"
    codec: CodecSettings = CodecSettings()
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig fields (docs/design.md §3 defaults)
    logit_scale: float = Field(default=100.0, gt=0.0)
    eval_every: int = Field(default=1, ge=1)  # rounds between evaluations (the last round is always evaluated)
    backend: Literal["local", "ray"] = "local"
    shard_size: int = Field(default=64, ge=1)  # sites per shard: one vectorised batch, one Ray actor
    threads: int = Field(default=0, ge=0)  # torch threads per shard process; 0: torch's default
    codec_threads: int = Field(default=0, ge=0)  # encode a shard's uploads in parallel (0 or 1: one by one)
    device: str = "cpu"  # "cuda" trains the shards on the GPU
    max_shard_memory_mb: float = Field(default=4096.0, gt=0.0)  # refuse shards whose state would exceed this
    state_dir: Path | None = None  # keep trained sites' heads and residuals in files here, not in memory
    ray: RaySettings = RaySettings()

    @field_validator("train")
    @classmethod
    def _valid_train(cls, value: dict[str, Any]) -> dict[str, Any]:
        TrainConfig.from_dict(dict(value))  # raises ValueError naming the unknown or invalid settings
        return value

    @model_validator(mode="after")
    def _dropout_and_stragglers(self) -> SimulateConfig:
        if self.dropout + self.stragglers >= 1.0:
            raise ValueError("dropout + stragglers must be below 1: some asked sites must report")
        return self

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(dict(self.train))

    @property
    def num_shards(self) -> int:
        return math.ceil(self.sites.count / self.shard_size)

    def shard_sites(self, shard: int) -> range:
        """Global indices of the sites in ``shard``."""
        start = shard * self.shard_size
        return range(start, min(start + self.shard_size, self.sites.count))


def load_simulate_config(path: str | Path) -> SimulateConfig:
    raw, source = read_yaml_mapping(path, "simulation")
    return parse_simulate_config(raw, base_dir=source.parent.resolve(), source=str(source))


def parse_simulate_config(
    raw: dict[str, Any], base_dir: Path | None = None, source: str = "<config>"
) -> SimulateConfig:
    try:
        config = SimulateConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}" for item in error.errors()
        )
        raise ConfigError(f"simulation config {source} is invalid: {problems}") from error
    data = config.sites.data
    if base_dir is not None and isinstance(data, EmbeddingSites) and not data.path.expanduser().is_absolute():
        fixed = data.model_copy(update={"path": base_dir / data.path.expanduser()})
        config = config.model_copy(update={"sites": config.sites.model_copy(update={"data": fixed})})
    if base_dir is not None and config.state_dir is not None and not config.state_dir.expanduser().is_absolute():
        config = config.model_copy(update={"state_dir": base_dir / config.state_dir.expanduser()})
    return config
