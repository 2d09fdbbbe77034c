"""The privacy ledger: what a site states about the FAM update it sends (docs/design.md §6.5). Torch-free."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PrivacyLedger:
    """The site's cumulative guarantee for its records after the round this entry travels with.

    ``epsilon`` at ``delta`` covers every DP-SGD step the site ran in this run up to and including this
    round (RDP accountant, Poisson sampling at ``sample_rate``); ``sigma`` and ``clip_norm`` are the noise
    multiplier and per-sample bound; ``steps`` the total DP-SGD steps so far; ``rounds`` the rounds that
    spent budget. ``target_epsilon`` is the budget the site works under.
    """

    epsilon: float
    delta: float
    sigma: float
    clip_norm: float
    sample_rate: float
    steps: int
    rounds: int = 0
    target_epsilon: float = 0.0

    def __post_init__(self) -> None:
        numbers = {"epsilon": self.epsilon, "delta": self.delta, "sigma": self.sigma, "clip_norm": self.clip_norm}
        bad = [k for k, v in numbers.items() if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0)]
        if not (0 <= self.sample_rate <= 1):
            bad.append("sample_rate")
        if self.steps < 0 or self.rounds < 0:
            bad.append("steps/rounds")
        if not (math.isfinite(self.target_epsilon) and self.target_epsilon >= 0):
            bad.append("target_epsilon")
        if bad:
            raise ValueError(f"invalid privacy ledger entry: {', '.join(bad)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyLedger:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def describe(self) -> str:
        """What a clinician reads: the guarantee in one line."""
        return f"trained with differential privacy, ε = {self.epsilon:.2f}, δ = {self.delta:.1e}"


NO_GUARANTEE = "no formal privacy guarantee"


@dataclass(frozen=True)
class PrivacyGuarantee:
    """What a served model part carries: (ε, δ)-DP for the records named by ``unit`` ("record" or "site")."""

    epsilon: float
    delta: float
    unit: str = "record"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0 and 0 < self.delta < 1):
            raise ValueError(f"invalid privacy guarantee ε={self.epsilon!r}, δ={self.delta!r}")
        if self.unit not in ("record", "site"):
            raise ValueError(f"privacy unit must be 'record' or 'site', got {self.unit!r}")

    def describe(self) -> str:
        return f"trained with differential privacy, ε = {self.epsilon:.2f}, δ = {self.delta:.1e}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(guarantee: PrivacyGuarantee | None) -> str:
    """The clinician's sentence for a model part: its guarantee, or that it has none."""
    return NO_GUARANTEE if guarantee is None else guarantee.describe()
