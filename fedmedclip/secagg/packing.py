"""Integers below 2^bits packed at exactly ``bits`` bits each: a masked vector is uniform, so it does not
compress, and packing is what keeps a secure upload near ``bits/8`` bytes per coordinate."""

from __future__ import annotations

import numpy as np

from fedmedclip.secagg.prg import modulus_mask


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack(values: np.ndarray, bits: int) -> bytes:
    residues = np.asarray(values, dtype=np.uint64)
    if residues.ndim != 1:
        raise ValueError("pack takes a 1-D array")
    if residues.size and int(residues.max()) > int(modulus_mask(bits)):
        raise ValueError(f"a value does not fit in {bits} bits")
    shifts = np.arange(bits, dtype=np.uint64)
    bit_matrix = ((residues[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bit_matrix.ravel(), bitorder="little").tobytes()


def unpack(data: bytes, bits: int, count: int) -> np.ndarray:
    """The ``count`` values packed in ``data``; refuses a buffer of the wrong length."""
    modulus_mask(bits)
    if len(data) != packed_size(count, bits):
        raise ValueError(
            f"expected {packed_size(count, bits)} bytes for {count} values of {bits} bits, got {len(data)}"
        )
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits, bitorder="little")
    weights = np.uint64(1) << np.arange(bits, dtype=np.uint64)
    return (flat.reshape(count, bits).astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
