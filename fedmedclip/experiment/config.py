"""The experiment configuration: one YAML file, validated by pydantic, every knob explicit.

Relative paths in the file are relative to the file's folder, so a config and its data can move together.
Unknown keys are errors: a misspelt ablation switch must not silently run the default.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedmedclip.data import isic2019
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.model.prompts import DEFAULT_TEMPLATES, render_prompts
from fedmedclip.training.config import TrainConfig

MethodName = Literal["zero_shot", "local_head", "fedclip", "fedavg", "fedmedclip"]
ALL_METHODS: tuple[MethodName, ...] = ("zero_shot", "local_head", "fedclip", "fedavg", "fedmedclip")
Preprocess = Literal["clip", "paper"]


class ConfigError(ValueError):
    """The experiment file is missing, unreadable or invalid; the message says where and what."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneSettings(_Strict):
    model: str = "ViT-B-32"
    weights: str | None = "openai"  # pretrained tag, local file or folder, or "random"
    preprocess: Preprocess = "clip"
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when present
    prompt_templates: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMPLATES), min_length=1)

    @field_validator("prompt_templates")
    @classmethod
    def _one_placeholder(cls, value: list[str]) -> list[str]:
        render_prompts("class", value)  # raises ValueError naming the template without its placeholder
        return value


class SynthData(_Strict):
    kind: Literal["synth"]
    sites: int = Field(default=3, ge=1)
    images_per_site: int = Field(default=120, ge=8)
    image_size: int = Field(default=64, ge=16)
    classes: list[str] | None = None
    difficulty: float = Field(default=0.6, ge=0.0, le=1.0)
    label_skew: float = Field(default=0.5, ge=0.0)
    site_shift: float = Field(default=0.5, ge=0.0)
    holdout: bool = True
    seed: int = Field(default=0, ge=0)


class ImageFolderData(_Strict):
    kind: Literal["imagefolder"]
    root: Path  # root/<site>/<class>/<image>
    sites: list[str] | None = None  # default: every sub-folder except the held-out one
    holdout_site: str | None = None
    classes: list[str] | None = None  # default: the sorted union of the sites' class folders


class CsvData(_Strict):
    kind: Literal["csv"]
    path: Path
    root: Path | None = None  # relative image paths resolve here (default: the CSV's folder)
    path_column: str = "path"
    label_column: str = "label"
    site_column: str = "site"
    holdout_site: str | None = None
    classes: list[str] | None = None


class ISIC2019Data(_Strict):
    kind: Literal["isic2019"]
    root: Path | None = None
    ground_truth: Path | None = None
    metadata: Path | None = None
    image_dir: Path | None = None
    classes: list[str] = Field(default_factory=lambda: list(isic2019.DEFAULT_CLASSES))
    min_images_per_site: int = Field(default=isic2019.DEFAULT_MIN_IMAGES_PER_SITE, ge=1)
    holdout_site: str | None = isic2019.UNKNOWN_SITE
    max_images_per_site: int | None = Field(default=None, ge=8)  # stratified, seeded cap for quick runs
    bad_rows: isic2019.BadRowPolicy = "error"


DataSource = Annotated[SynthData | ImageFolderData | CsvData | ISIC2019Data, Field(discriminator="kind")]


class SplitSettings(_Strict):
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = Field(default=0, ge=0)

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not (f > 0) for f in value) or not math.isclose(sum(value), 1.0, abs_tol=1e-6):
            raise ValueError(f"fractions must be three positive numbers summing to 1, got {list(value)}")
        return value


class EmbeddingSettings(_Strict):
    cache_dir: Path | None = None  # default: <out>/cache
    batch_size: int = Field(default=64, ge=1)
    num_workers: int = Field(default=0, ge=0)


class CodecSettings(_Strict):
    rho: float = Field(default=0.2, gt=0.0, le=1.0)
    quantization: Literal["int8", "fp16", "fp32"] = "int8"
    compression: Literal["zstd", "zlib", "none"] = "zstd"

    def to_codec(self) -> CodecConfig:
        return CodecConfig(rho=self.rho, quantization=self.quantization, compression=self.compression)


class FederationSettings(_Strict):
    rounds: int = Field(default=50, ge=1)
    weighting: Literal["samples", "uniform"] = "samples"
    codec: CodecSettings = CodecSettings()
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig fields (docs/design.md §3 defaults)
    # The paper selects the round with the best mean validation accuracy; "last" takes the final round.
    selection: Literal["best_val", "last"] = "best_val"
    seed: int = Field(default=0, ge=0)

    @field_validator("train")
    @classmethod
    def _valid_train(cls, value: dict[str, Any]) -> dict[str, Any]:
        TrainConfig.from_dict(dict(value))  # raises ValueError with the offending names
        return value

    def train_config(self, **overrides: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.train, **overrides})


class FedAvgSettings(_Strict):
    """Full fine-tuning of CLIP on pixels: the compute and traffic anchor, so it runs few rounds on few images."""

    rounds: int = Field(default=2, ge=1)
    max_train_images_per_site: int = Field(default=32, ge=2)
    lr: float = Field(default=1e-5, gt=0.0)
    batch_size: int = Field(default=16, ge=2)


class AblationSettings(_Strict):
    """A FedMedCLIP variant; unset switches keep the main run's values."""

    name: str = Field(min_length=1)
    use_contrastive: bool | None = None
    use_head_ce: bool | None = None
    use_kd: bool | None = None
    aggregate: bool | None = None
    dense: bool | None = None  # True: every alive row in fp32, uncompressed (no masking, no quantisation)
    preprocess: Preprocess | None = None


class ExperimentConfig(_Strict):
    name: str = Field(min_length=1)
    seed: int = Field(default=0, ge=0)
    backbone: BackboneSettings = BackboneSettings()
    data: DataSource
    split: SplitSettings = SplitSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    federation: FederationSettings = FederationSettings()
    methods: list[MethodName] = Field(default_factory=lambda: list(ALL_METHODS))
    fedavg: FedAvgSettings = FedAvgSettings()
    ablations: list[AblationSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentConfig:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods repeat: {self.methods}")
        names = [a.name for a in self.ablations]
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(ALL_METHODS)))
        if clash:
            raise ValueError(f"ablation names must be unique and differ from method names: {clash}")
        # Caught here rather than after the methods before it have run for minutes.
        for ablation in self.ablations:
            merged = self.federation.train_config(
                **{k: v for k in ("use_contrastive", "use_head_ce") if (v := getattr(ablation, k)) is not None}
            )
            if not (merged.use_contrastive or merged.use_head_ce):
                raise ValueError(f"ablation {ablation.name!r} turns off both the contrastive and the head CE loss")
        return self


_PATH_FIELDS = ("root", "path", "ground_truth", "metadata", "image_dir")


def read_yaml_mapping(path: str | Path, kind: str) -> tuple[dict[str, Any], Path]:
    """The top-level mapping of the YAML file ``path`` and the file's path; ``ConfigError`` names the ``kind``
    of config (``experiment``, ``simulation``), the file and the problem."""
    source = Path(path).expanduser()
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {kind} config {source}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{kind} config {source} is not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{kind} config {source} must be a mapping at the top level")
    return raw, source


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate ``path``; relative paths inside it become relative to its folder."""
    raw, source = read_yaml_mapping(path, "experiment")
    return parse_config(raw, base_dir=source.parent.resolve(), source=str(source))


def parse_config(raw: dict[str, Any], base_dir: Path | None = None, source: str = "<config>") -> ExperimentConfig:
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}" for item in error.errors()
        )
        raise ConfigError(f"experiment config {source} is invalid: {problems}") from error
    if base_dir is None:
        return config
    return _resolve_paths(config, base_dir)


def _resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    def fix(value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        return value if value.is_absolute() else base / value

    data_updates = {name: fix(getattr(config.data, name)) for name in _PATH_FIELDS if hasattr(config.data, name)}
    data = config.data.model_copy(update=data_updates)
    embedding = config.embedding.model_copy(update={"cache_dir": fix(config.embedding.cache_dir)})
    return config.model_copy(update={"data": data, "embedding": embedding})
