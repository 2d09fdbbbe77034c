"""The run's ``secure_aggregation`` settings and the public numbers every party derives from them.

Plain data (no torch, no I/O), so the aggregator, the agent and the simulator read it alike. The fixed-point
range is derived, not configured (docs/design.md §6.4):

- a site sends ``q_i = clamp(round(v_i / scale), ±levels)`` times its integer weight ``w ≤ weight_cap``, with
  ``levels = 2^precision_bits − 1`` and ``scale = coordinate_bound / levels``; so one site contributes at
  most ``weight_cap · levels`` in absolute value per coordinate (its weight, the last coordinate, at most
  ``weight_cap``);
- the modulus ``2^bits`` of a round with ``n`` sites is the smallest with ``n · weight_cap · levels <
  2^(bits − 1)`` (``fixedpoint.required_bits``), so the signed sum of every site that could take part cannot
  wrap. ``n`` is the number of sites that advertised keys, which is public and fixed before anyone masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedmedclip.secagg.fixedpoint import FixedPoint, required_bits
from fedmedclip.secagg.graph import suggested_degree

DegreeSetting = int | str  # an even/odd integer ≥ 1, "auto" (SecAgg+ ~ log n) or "all" (all pairs)


@dataclass(frozen=True)
class SecureAggregationConfig:
    """``enabled: false`` (the default) leaves the round as in docs/design.md §4.4."""

    enabled: bool = False
    threshold: int | None = None  # t; None: ⌈2/3 of a neighbourhood⌉ (at least 2), see ``round_threshold``
    degree: DegreeSetting = "auto"
    clip_norm: float = 1.0  # L2 bound on the vector a site sends (the excess stays in its residual)
    coordinate_bound: float = 0.01  # per-coordinate clamp: the fixed-point range (the excess stays too)
    precision_bits: int = 6  # integer steps on each side of zero for one coordinate: 2^p − 1
    weight_cap: int = 32  # a site's weight is min(its sample count, weight_cap) (1 under uniform weighting)
    row_fraction: float = 0.2  # ρ: the public share of each weight matrix's rows sent every round
    phase_timeout_s: float = 60.0  # how long each phase after the first waits for the slowest site

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.enabled, bool):
            problems.append(f"enabled must be true or false, got {self.enabled!r}")
        if self.threshold is not None and (not _is_int(self.threshold) or self.threshold < 2):
            problems.append(f"threshold must be an integer >= 2 or absent (auto), got {self.threshold!r}")
        if not (self.degree in ("auto", "all") or (_is_int(self.degree) and int(self.degree) >= 1)):
            problems.append(f"degree must be an integer >= 1, 'auto' or 'all', got {self.degree!r}")
        for name in ("clip_norm", "coordinate_bound", "phase_timeout_s"):
            value = getattr(self, name)
            if not (
                isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            ):
                problems.append(f"{name} must be a positive number, got {value!r}")
        if not _is_int(self.precision_bits) or not 1 <= self.precision_bits <= 16:
            problems.append(f"precision_bits must be an integer in 1..16, got {self.precision_bits!r}")
        if not _is_int(self.weight_cap) or not 1 <= self.weight_cap <= 1 << 16:
            problems.append(f"weight_cap must be an integer in 1..65536, got {self.weight_cap!r}")
        if not (isinstance(self.row_fraction, int | float) and 0 < self.row_fraction <= 1):
            problems.append(f"row_fraction must be in (0, 1], got {self.row_fraction!r}")
        if problems:
            raise ValueError("invalid secure_aggregation: " + "; ".join(problems))

    @property
    def levels(self) -> int:
        return (1 << self.precision_bits) - 1

    @property
    def scale(self) -> float:
        """The real value of one integer step of an unweighted coordinate."""
        return self.coordinate_bound / self.levels

    @property
    def max_abs_per_site(self) -> int:
        return self.weight_cap * self.levels

    def bits_for(self, sites: int) -> int:
        """The modulus exponent for a round of ``sites`` parties: their signed sum cannot wrap."""
        return required_bits(self.max_abs_per_site, sites)

    def fixed_point(self, sites: int) -> FixedPoint:
        return FixedPoint(self.bits_for(sites), self.scale, self.max_abs_per_site)

    def round_degree(self, sites: int) -> int | None:
        """The graph degree of a round of ``sites`` parties; None means all pairs."""
        if self.degree == "all":
            return None
        degree = suggested_degree(sites) if self.degree == "auto" else int(self.degree)
        return None if degree >= sites - 1 else degree

    def round_threshold(self, sites: int) -> int:
        """t for a round of ``sites`` parties: the configured value, or ⌈2/3⌉ of a neighbourhood (≥ 2)."""
        degree = self.round_degree(sites)
        neighbourhood = sites if degree is None else degree + 1
        if self.threshold is not None:
            return self.threshold
        return max(2, math.ceil(2 * neighbourhood / 3))

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "threshold": self.threshold,
            "degree": self.degree,
            "clip_norm": self.clip_norm,
            "coordinate_bound": self.coordinate_bound,
            "precision_bits": self.precision_bits,
            "weight_cap": self.weight_cap,
            "row_fraction": self.row_fraction,
            "phase_timeout_s": self.phase_timeout_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecureAggregationConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown secure_aggregation settings: {', '.join(unknown)}")
        return cls(**dict(data))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
