"""Real values as integers modulo 2^bits with one scale shared by every site, so that masked sums add up.

A value ``v`` becomes ``round(v / scale)`` in two's complement modulo ``2^bits``. Sums of up to ``n`` sites
decode exactly as long as ``n · max|round(v / scale)| < 2^(bits − 1)``; ``required_bits`` picks the
smallest such modulus and ``FixedPoint.encode`` refuses a value that would break the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedmedclip.secagg.prg import MAX_BITS, modulus_mask


def required_bits(max_abs_per_site: int, sites: int) -> int:
    """The smallest modulus exponent whose signed range holds the sum of ``sites`` values of that size."""
    if max_abs_per_site < 0 or sites < 1:
        raise ValueError("max_abs_per_site must be >= 0 and sites >= 1")
    bits = math.ceil(math.log2(max_abs_per_site * sites + 1)) + 1
    if bits > MAX_BITS:
        raise ValueError(f"{sites} sites of magnitude {max_abs_per_site} need {bits} bits, above {MAX_BITS}")
    return max(bits, 2)


@dataclass(frozen=True)
class FixedPoint:
    bits: int
    scale: float  # the real value of one integer step
    max_abs: int  # the largest |integer| one site may contribute per coordinate

    def __post_init__(self) -> None:
        modulus_mask(self.bits)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError("scale must be a positive finite number")
        if not 0 < self.max_abs < 1 << (self.bits - 1):
            raise ValueError("max_abs must be positive and below 2^(bits - 1)")

    def quantise(self, values: np.ndarray) -> np.ndarray:
        """Signed integers ``round(values / scale)`` as int64; refuses anything beyond ``max_abs``."""
        if not np.all(np.isfinite(values)):
            raise ValueError("cannot encode non-finite values")
        integers = np.rint(np.asarray(values, dtype=np.float64) / self.scale).astype(np.int64)
        if integers.size and int(np.max(np.abs(integers))) > self.max_abs:
            raise ValueError(f"a value exceeds the encodable range ±{self.max_abs * self.scale:.6g}")
        return integers

    def to_ring(self, integers: np.ndarray) -> np.ndarray:
        """Signed int64 → uint64 residues modulo 2^bits (two's complement wrap)."""
        return integers.astype(np.int64).astype(np.uint64) & modulus_mask(self.bits)

    def encode(self, values: np.ndarray) -> np.ndarray:
        return self.to_ring(self.quantise(values))

    def to_signed(self, residues: np.ndarray) -> np.ndarray:
        """uint64 residues → signed int64, reading the top half of the ring as negative."""
        residues = residues.astype(np.uint64) & modulus_mask(self.bits)
        signed = residues.astype(np.int64)
        return np.where(signed >= 1 << (self.bits - 1), signed - (1 << self.bits), signed)

    def decode(self, residues: np.ndarray) -> np.ndarray:
        return self.to_signed(residues).astype(np.float64) * self.scale


def add_mod(left: np.ndarray, right: np.ndarray, bits: int) -> np.ndarray:
    return (left.astype(np.uint64) + right.astype(np.uint64)) & modulus_mask(bits)


def sub_mod(left: np.ndarray, right: np.ndarray, bits: int) -> np.ndarray:
    # uint64 subtraction wraps modulo 2^64, and 2^bits divides 2^64, so masking gives the right residue.
    return (left.astype(np.uint64) - right.astype(np.uint64)) & modulus_mask(bits)
