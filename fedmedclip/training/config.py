"""Local-training settings (docs/design.md §3 defaults). The aggregator hands the FAM-side values to every site."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Contrastive = Literal["pairwise", "prototype"]


@dataclass(frozen=True)
class TrainConfig:
    fam_lr: float = 5e-5
    head_lr: float = 1e-3
    lr_decay: float = 0.97  # both learning rates are multiplied by this once per round
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.02
    batch_size: int = 32
    local_epochs: int = 1
    kd_weight: float = 0.04  # lambda
    kd_temperature: float = 2.0  # T
    contrastive: Contrastive = "pairwise"
    use_contrastive: bool = True  # ablation switches: each loss term can be turned off
    use_head_ce: bool = True
    use_kd: bool = True
    head_hidden: int = 512

    def __post_init__(self) -> None:
        checks = {
            "fam_lr": self.fam_lr >= 0,
            "head_lr": self.head_lr >= 0,
            "lr_decay": 0 < self.lr_decay <= 1,
            "batch_size": self.batch_size >= 2,
            "local_epochs": self.local_epochs >= 1,
            "kd_weight": self.kd_weight >= 0,
            "kd_temperature": self.kd_temperature > 0,
            "weight_decay": self.weight_decay >= 0,
            "head_hidden": self.head_hidden >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training settings: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")
        if self.contrastive not in ("pairwise", "prototype"):
            raise ValueError(f"contrastive must be 'pairwise' or 'prototype', got {self.contrastive!r}")

    def learning_rates(self, round_index: int) -> tuple[float, float]:
        """(FAM lr, head lr) for round ``round_index`` (0-based), after the per-round decay."""
        factor = self.lr_decay ** max(round_index, 0)
        return self.fam_lr * factor, self.head_lr * factor

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)
