"""A run's differential-privacy settings (docs/design.md §3.15, §3.16). Torch-free: the aggregator reads them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

PrivacyMode = Literal["off", "record", "site"]


@dataclass(frozen=True)
class PrivacyConfig:
    """``mode``: ``off`` (no formal guarantee), ``record`` (DP-SGD on the FAM at every site, each site
    accounting for its own records) or ``site`` (DP-FedAvg with adaptive clipping at a trusted aggregator).

    Record level: every site clips each training sample's FAM gradient to ``clip_norm`` and adds Gaussian
    noise of standard deviation ``noise_multiplier · clip_norm`` to the sum of a Poisson-sampled batch of
    expected size ``batch_size``. ``noise_multiplier = None`` lets each site calibrate σ so that all
    ``rounds`` of the run fit ``target_epsilon``; with an explicit σ a site stops contributing once its next
    round would exceed the target. ``delta = None`` means 1/(10·N) for a site with N training images.

    Site level: each site's whole update is clipped to an adaptive bound (``site_*`` settings, Andrew et al.
    2021) and the aggregator adds noise to the sum.
    """

    mode: PrivacyMode = "off"
    target_epsilon: float = 8.0
    delta: float | None = None
    clip_norm: float = 1.0
    noise_multiplier: float | None = None
    batch_size: int = 256  # expected Poisson batch; DP-SGD needs large batches for signal over noise
    # Site-level DP-FedAvg (mode "site"): z for the update sum, σ_b for the clipped-count, the quantile γ
    # the clip bound tracks, its initial value and geometric learning rate η_C, and the sampling rate of
    # sites per round used by the aggregator's accountant (1.0: every site every round).
    site_noise_multiplier: float = 1.0
    site_count_noise: float = 10.0
    site_target_quantile: float = 0.5
    site_initial_clip: float = 0.1
    site_clip_lr: float = 0.2
    site_sample_rate: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in ("off", "record", "site"):
            problems.append(f"privacy mode must be 'off', 'record' or 'site', got {self.mode!r}")
        if not _positive(self.target_epsilon):
            problems.append(f"privacy target_epsilon must be a positive number, got {self.target_epsilon!r}")
        if self.delta is not None and not (_positive(self.delta) and self.delta < 1):
            problems.append(f"privacy delta must lie in (0, 1) or be absent, got {self.delta!r}")
        if not _positive(self.clip_norm):
            problems.append(f"privacy clip_norm must be a positive number, got {self.clip_norm!r}")
        if self.noise_multiplier is not None and not _positive(self.noise_multiplier):
            problems.append(
                f"privacy noise_multiplier must be a positive number or absent, got {self.noise_multiplier!r}"
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"privacy batch_size must be an integer >= 1, got {self.batch_size!r}")
        for name in ("site_noise_multiplier", "site_count_noise", "site_initial_clip"):
            if not _positive(getattr(self, name)):
                problems.append(f"privacy {name} must be a positive number, got {getattr(self, name)!r}")
        if not (_number(self.site_target_quantile) and 0 < self.site_target_quantile < 1):
            problems.append(f"privacy site_target_quantile must lie in (0, 1), got {self.site_target_quantile!r}")
        if not (_number(self.site_clip_lr) and self.site_clip_lr >= 0):
            problems.append(f"privacy site_clip_lr must be >= 0, got {self.site_clip_lr!r}")
        if not (_number(self.site_sample_rate) and 0 < self.site_sample_rate <= 1):
            problems.append(f"privacy site_sample_rate must lie in (0, 1], got {self.site_sample_rate!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def record_level(self) -> bool:
        return self.mode == "record"

    def delta_for(self, num_samples: int) -> float:
        """The δ a site with ``num_samples`` training records accounts at: configured, or 1/(10·N)."""
        return self.delta if self.delta is not None else 1.0 / (10.0 * max(num_samples, 1))

    def sample_rate_for(self, num_samples: int) -> float:
        """Poisson sampling rate q = expected batch / N (at most 1)."""
        return min(1.0, self.batch_size / max(num_samples, 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown privacy settings: {', '.join(unknown)}")
        return cls(**data)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: object) -> bool:
    return _number(value) and float(value) > 0  # type: ignore[arg-type]
