"""A run's configuration: what the aggregator fixes for a run and hands to every site on Join.

Plain data with validation and a JSON form (the aggregator stores it as JSON); ``serde`` converts it to and
from ``fedmedclip.rpc.v1.RunConfig``. A run file takes one path: YAML text → ``run_config_from_yaml`` →
``RunConfig`` → ``serde.run_config_to_proto`` (docs/design.md §9). It names the backbone by ``BackboneRef`` rather than
``BackboneSpec`` because importing the backbone module loads open_clip, which the aggregator never needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fedmedclip.federation.aggregate import Weighting
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.privacy.config import PrivacyConfig
from fedmedclip.secagg.config import SecureAggregationConfig
from fedmedclip.training.config import TrainConfig

if TYPE_CHECKING:
    from fedmedclip.model.backbone import BackboneSpec

LatePolicy = Literal["accept_until_quorum", "reopen"]
AggregationRule = Literal["mean", "trimmed_mean", "median"]
AGGREGATION_RULES: tuple[AggregationRule, ...] = ("mean", "trimmed_mean", "median")

# Upper bounds that keep a run's size and time arithmetic sane (docs/design.md §6): a FAM of width D holds
# 2·D² floats, so 8192 is 512 MiB already; a deadline further out than 30 days is a typo.
MAX_EMBED_DIM = 8192
MAX_ROUNDS = 100_000
MAX_MIN_SITES = 100_000
MAX_ROUND_TIMEOUT_S = 30 * 24 * 3600.0
PreprocessName = Literal["clip", "paper"]


@dataclass(frozen=True)
class BackboneRef:
    """The frozen CLIP every site must use, as the wire describes it (``BackboneSpec`` + weights digest)."""

    model: str = "ViT-B-32"
    weights: str | None = "openai"
    weights_digest: str = ""  # hex sha256 of the backbone's tensors; empty: unchecked
    preprocess: PreprocessName = "clip"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("backbone model name is empty")
        if self.preprocess not in ("clip", "paper"):
            raise ValueError(f"backbone preprocess must be 'clip' or 'paper', got {self.preprocess!r}")
        if self.seed < 0:
            raise ValueError(f"backbone seed must be >= 0, got {self.seed}")

    def to_spec(self) -> BackboneSpec:
        """The ``BackboneSpec`` to load (imports open_clip)."""
        from fedmedclip.model.backbone import BackboneSpec

        return BackboneSpec(model=self.model, weights=self.weights, preprocess=self.preprocess, seed=self.seed)

    @classmethod
    def from_spec(cls, spec: BackboneSpec, weights_digest: str = "") -> BackboneRef:
        return cls(spec.model, spec.weights, weights_digest, spec.preprocess, spec.seed)


@dataclass(frozen=True)
class RunConfig:
    """Everything fixed for one run. ``embed_dim`` is the FAM width D (the backbone's embedding size)."""

    embed_dim: int
    rounds: int = 10
    min_sites: int = 1  # quorum: a round closes only with at least this many accepted updates
    round_timeout_s: float = 600.0  # a round's deadline is this long after it opens
    late_policy: LatePolicy = "accept_until_quorum"
    weighting: Weighting = "samples"
    norm_bound: float | None = None  # L2 bound on an update's sent values; None: unbounded
    fam_seed: int = 0  # seed of the initial FAM (version of round 0)
    backbone: BackboneRef = field(default_factory=BackboneRef)
    train: TrainConfig = field(default_factory=TrainConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    prompt_templates: tuple[str, ...] = ()  # empty: the library default templates
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # differential privacy (§3.15); off by default
    max_samples_per_site: int | None = None  # cap on an update's sample weight; None: no run-wide cap
    clip_norm: float | None = None  # server-side L2 clip of each accepted update; None: no clipping
    aggregation_rule: AggregationRule = "mean"
    trim_fraction: float = 0.2  # trimmed mean: fraction of each row's senders cut from each end
    secure_aggregation: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)

    def __post_init__(self) -> None:
        problems = []
        if not _is_int(self.embed_dim) or not 1 <= self.embed_dim <= MAX_EMBED_DIM:
            problems.append(f"embed_dim must be an integer in [1, {MAX_EMBED_DIM}], got {self.embed_dim!r}")
        if not _is_int(self.rounds) or not 1 <= self.rounds <= MAX_ROUNDS:
            problems.append(f"rounds must be an integer in [1, {MAX_ROUNDS}], got {self.rounds!r}")
        if not _is_int(self.min_sites) or not 1 <= self.min_sites <= MAX_MIN_SITES:
            problems.append(f"min_sites must be an integer in [1, {MAX_MIN_SITES}], got {self.min_sites!r}")
        if not _is_positive_finite(self.round_timeout_s) or self.round_timeout_s > MAX_ROUND_TIMEOUT_S:
            problems.append(
                f"round_timeout_s must be a positive number of at most {MAX_ROUND_TIMEOUT_S:g}, "
                f"got {self.round_timeout_s!r}"
            )
        if self.max_samples_per_site is not None and (
            not _is_int(self.max_samples_per_site) or self.max_samples_per_site < 1
        ):
            problems.append(
                f"max_samples_per_site must be an integer >= 1 or absent, got {self.max_samples_per_site!r}"
            )
        if self.clip_norm is not None and not _is_positive_finite(self.clip_norm):
            problems.append(f"clip_norm must be a positive number or absent, got {self.clip_norm!r}")
        if self.aggregation_rule not in AGGREGATION_RULES:
            rules = ", ".join(AGGREGATION_RULES)
            problems.append(f"aggregation_rule must be one of {rules}, got {self.aggregation_rule!r}")
        if not isinstance(self.trim_fraction, int | float) or not 0 <= self.trim_fraction < 0.5:
            problems.append(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction!r}")
        if self.secure_aggregation.enabled and (
            self.aggregation_rule != "mean" or self.clip_norm is not None or self.max_samples_per_site is not None
        ):
            problems.append(
                "aggregation_rule, clip_norm and max_samples_per_site apply to plain rounds; with secure_aggregation "
                "use secure_aggregation.clip_norm and weight_cap (the server never sees a single update)"
            )
        if self.late_policy not in ("accept_until_quorum", "reopen"):
            problems.append(f"late_policy must be 'accept_until_quorum' or 'reopen', got {self.late_policy!r}")
        if self.weighting not in ("samples", "uniform"):
            problems.append(f"weighting must be 'samples' or 'uniform', got {self.weighting!r}")
        if self.norm_bound is not None and not _is_positive_finite(self.norm_bound):
            problems.append(f"norm_bound must be a positive number or absent, got {self.norm_bound!r}")
        if not _is_int(self.fam_seed) or self.fam_seed < 0:
            problems.append(f"fam_seed must be an integer >= 0, got {self.fam_seed!r}")
        for template in self.prompt_templates:
            if "{class}" not in template:
                problems.append(f"prompt template {template!r} has no '{{class}}' placeholder")
        if problems:
            raise ValueError("invalid run config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``from_dict`` reads it back."""
        return {
            "embed_dim": self.embed_dim,
            "rounds": self.rounds,
            "min_sites": self.min_sites,
            "round_timeout_s": self.round_timeout_s,
            "late_policy": self.late_policy,
            "weighting": self.weighting,
            "norm_bound": self.norm_bound,
            "fam_seed": self.fam_seed,
            "backbone": {
                "model": self.backbone.model,
                "weights": self.backbone.weights,
                "weights_digest": self.backbone.weights_digest,
                "preprocess": self.backbone.preprocess,
                "seed": self.backbone.seed,
            },
            "train": self.train.to_dict(),
            "codec": self.codec.to_dict(),
            "prompt_templates": list(self.prompt_templates),
            "privacy": self.privacy.to_dict(),
            "max_samples_per_site": self.max_samples_per_site,
            "clip_norm": self.clip_norm,
            "aggregation_rule": self.aggregation_rule,
            "trim_fraction": self.trim_fraction,
            "secure_aggregation": self.secure_aggregation.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Parse ``to_dict`` output (or a hand-written YAML/JSON run file); unknown keys are refused."""
        values = dict(data)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown run settings: {', '.join(unknown)}")
        if "embed_dim" not in values:
            raise ValueError("run config needs embed_dim (the backbone's embedding width, 512 for ViT-B-32)")
        if isinstance(values.get("backbone"), Mapping):
            backbone = dict(values["backbone"])
            extra = sorted(set(backbone) - set(BackboneRef.__dataclass_fields__))
            if extra:
                raise ValueError(f"unknown backbone settings: {', '.join(extra)}")
            values["backbone"] = BackboneRef(**backbone)
        if isinstance(values.get("train"), Mapping):
            values["train"] = TrainConfig.from_dict(dict(values["train"]))
        if isinstance(values.get("codec"), Mapping):
            values["codec"] = CodecConfig.from_dict(values["codec"])
        if isinstance(values.get("privacy"), Mapping):
            values["privacy"] = PrivacyConfig.from_dict(values["privacy"])
        if isinstance(values.get("secure_aggregation"), Mapping):
            values["secure_aggregation"] = SecureAggregationConfig.from_dict(values["secure_aggregation"])
        if "prompt_templates" in values:
            values["prompt_templates"] = tuple(values["prompt_templates"] or ())
        try:
            return cls(**values)
        except TypeError as exc:  # a nested value of the wrong kind
            raise ValueError(f"invalid run config: {exc}") from exc


def run_config_from_yaml(
    text: str,
    overrides: Mapping[str, Any] | None = None,
    backbone_overrides: Mapping[str, Any] | None = None,
    source: str = "run config",
) -> RunConfig:
    """A ``RunConfig`` from a YAML (or JSON) run file's text, with command-line values laid over it.

    ``overrides`` set top-level fields and ``backbone_overrides`` fields of ``backbone``; ``None`` values
    are ignored. Raises ``ValueError`` naming ``source`` and the problem.
    """
    import yaml

    try:
        loaded = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"cannot read {source}: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{source} must be a mapping of RunConfig fields")
    data = dict(loaded)
    data.update({key: value for key, value in (overrides or {}).items() if value is not None})
    if backbone_overrides:
        backbone = data.get("backbone") or {}
        if not isinstance(backbone, Mapping):
            raise ValueError(f"{source}: backbone must be a mapping of backbone fields")
        data["backbone"] = {**backbone, **backbone_overrides}
    try:
        return RunConfig.from_dict(data)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
