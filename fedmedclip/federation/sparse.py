"""The decoded form of an update: per tensor either a subset of matrix rows or the whole tensor (numpy)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmedclip.federation.arrays import Array, to_numpy

if TYPE_CHECKING:
    from fedmedclip.federation.codec_config import CodecConfig


@dataclass(frozen=True)
class SparseTensor:
    """``values`` for the rows listed in ``rows`` of a tensor of ``shape``; ``rows is None`` means dense.

    Row-sparse: ``rows`` is a 1-D int64 array and ``values`` has shape ``(len(rows), shape[1])``.
    Dense: ``values`` has ``shape``. Torch tensors given here are converted to numpy arrays (dtype kept).
    Nothing is checked here; ``aggregate.validate_update`` does that, so that a bad update can be reported
    with its site rather than fail on construction.
    """

    shape: tuple[int, ...]
    rows: Array | None
    values: Array

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "values", to_numpy(self.values))
        if self.rows is not None:
            object.__setattr__(self, "rows", to_numpy(self.rows))

    @property
    def is_dense(self) -> bool:
        return self.rows is None

    def to_dense(self) -> Array:
        """The full float32 array, with zeros in the rows that were not sent."""
        if self.rows is None:
            return self.values.astype(np.float32).reshape(self.shape).copy()
        dense = np.zeros(self.shape, dtype=np.float32)
        dense[self.rows] = self.values.astype(np.float32)
        return dense


@dataclass(frozen=True)
class SparseUpdate:
    """One site's decoded update; ``codec`` records the settings it was encoded with (None if built here)."""

    tensors: dict[str, SparseTensor]
    codec: CodecConfig | None = field(default=None)

    def to_dense(self) -> dict[str, Array]:
        return {name: tensor.to_dense() for name, tensor in self.tensors.items()}

    @classmethod
    def from_dense(cls, tensors: Mapping[str, Any]) -> SparseUpdate:
        """Every tensor sent whole in float32: the uncompressed baseline (benchmarks, tests)."""
        arrays = {name: to_numpy(t).astype(np.float32) for name, t in tensors.items()}
        return cls({name: SparseTensor(a.shape, None, a) for name, a in arrays.items()})
