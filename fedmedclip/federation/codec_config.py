"""The codec's settings, apart from the codec so that the decoded form (``sparse``) can name them without
importing the codec that builds it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fedmedclip.federation import payload as framing

Quantization = Literal["int8", "fp16", "fp32"]
Compression = Literal["zstd", "zlib", "none"]


@dataclass(frozen=True)
class CodecConfig:
    rho: float = 0.2  # fraction of each matrix's rows that may be sent per round
    quantization: Quantization = "int8"
    compression: Compression = "zstd"

    def __post_init__(self) -> None:
        rho = self.rho
        if isinstance(rho, bool) or not isinstance(rho, int | float) or not (0.0 < rho <= 1.0):
            raise ValueError(f"codec rho must be a number in (0, 1], got {rho!r}")
        if self.quantization not in ("int8", "fp16", "fp32"):
            raise ValueError(f"codec quantization must be 'int8', 'fp16' or 'fp32', got {self.quantization!r}")
        if self.compression not in framing.COMPRESSIONS:
            raise ValueError(f"codec compression must be 'zstd', 'zlib' or 'none', got {self.compression!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodecConfig:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown codec settings: {', '.join(unknown)}")
        return cls(**data)
