"""The decoded form of an update: per tensor either a subset of matrix rows or the whole tensor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fedmedclip.federation.codec_config import CodecConfig


@dataclass(frozen=True)
class SparseTensor:
    """``values`` for the rows listed in ``rows`` of a tensor of ``shape``; ``rows is None`` means dense.

    Row-sparse: ``rows`` is a 1-D int64 tensor and ``values`` has shape ``(len(rows), shape[1])``.
    Dense: ``values`` has ``shape``. Nothing is checked here; ``aggregate.validate_update`` does that, so
    that a bad update can be reported with its site rather than fail on construction.
    """

    shape: tuple[int, ...]
    rows: torch.Tensor | None
    values: torch.Tensor

    @property
    def is_dense(self) -> bool:
        return self.rows is None

    def to_dense(self) -> torch.Tensor:
        """The full float32 tensor, with zeros in the rows that were not sent."""
        if self.rows is None:
            return self.values.to(torch.float32).reshape(self.shape).clone()
        dense = torch.zeros(self.shape, dtype=torch.float32)
        dense[self.rows] = self.values.to(torch.float32)
        return dense


@dataclass(frozen=True)
class SparseUpdate:
    """One site's decoded update; ``codec`` records the settings it was encoded with (None if built here)."""

    tensors: dict[str, SparseTensor]
    codec: CodecConfig | None = field(default=None)

    def to_dense(self) -> dict[str, torch.Tensor]:
        return {name: tensor.to_dense() for name, tensor in self.tensors.items()}

    @classmethod
    def from_dense(cls, tensors: Mapping[str, torch.Tensor]) -> SparseUpdate:
        """Every tensor sent whole in float32: the uncompressed baseline (benchmarks, tests)."""
        return cls(
            {
                name: SparseTensor(tuple(t.shape), None, t.detach().to(torch.float32).clone())
                for name, t in tensors.items()
            }
        )
