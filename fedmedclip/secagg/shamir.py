"""Shamir threshold sharing of short secrets over the prime field GF(2^521 − 1).

The field is larger than any 32-byte secret, so a secret is one field element and each share one point
``(x, f(x))`` of a random polynomial of degree ``threshold − 1`` with ``f(0) = secret``. Any ``threshold``
shares give the secret back; fewer reveal nothing about it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

PRIME = (1 << 521) - 1
_Y_BYTES = (PRIME.bit_length() + 7) // 8
MAX_SECRET_BYTES = 64
MAX_X = 0xFFFF


@dataclass(frozen=True)
class Share:
    """The point ``(x, y)``; x is the receiving party's public, non-zero index."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(2, "big") + self.y.to_bytes(_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) != 2 + _Y_BYTES:
            raise ValueError(f"a share has {2 + _Y_BYTES} bytes, got {len(data)}")
        x, y = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big")
        if not 1 <= x <= MAX_X or y >= PRIME:
            raise ValueError("share out of range")
        return cls(x, y)


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """One share of ``secret`` for every index in ``xs`` (distinct, 1..65535); ``threshold`` recover it."""
    if not 1 <= len(secret) <= MAX_SECRET_BYTES:
        raise ValueError(f"secret must be 1..{MAX_SECRET_BYTES} bytes")
    if len(set(xs)) != len(xs) or any(not 1 <= x <= MAX_X for x in xs):
        raise ValueError("share indices must be distinct and in 1..65535")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be in 1..{len(xs)} (the number of shares)")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x)) for x in xs]


def combine(shares: Sequence[Share], threshold: int, length: int) -> bytes:
    """The ``length``-byte secret from at least ``threshold`` shares (Lagrange interpolation at 0).

    Shares beyond the threshold are checked against the polynomial the first ``threshold`` define, so a
    corrupted or forged share is refused (``ValueError``) instead of silently giving a wrong secret.
    """
    points = {share.x: share.y for share in shares}
    if len(points) != len(shares):
        raise ValueError("duplicate share indices")
    if len(points) < threshold:
        raise ValueError(f"{len(points)} shares cannot recover a secret shared with threshold {threshold}")
    items = list(points.items())
    chosen, extra = items[:threshold], items[threshold:]
    for x, y in extra:
        if _interpolate(chosen, x) != y:
            raise ValueError(f"share {x} does not lie on the polynomial of the others: a share is corrupt")
    secret = _interpolate(chosen, 0)
    if secret >= 1 << (8 * length):
        raise ValueError("the shares do not belong to one secret of this length")
    return secret.to_bytes(length, "big")


def _interpolate(points: Sequence[tuple[int, int]], at: int) -> int:
    """The value at ``at`` of the polynomial of degree len(points) − 1 through ``points`` (Lagrange)."""
    value = 0
    for i, (x_i, y_i) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (x_j, _) in enumerate(points):
            if i != j:
                numerator = numerator * (at - x_j) % PRIME
                denominator = denominator * (x_i - x_j) % PRIME
        value = (value + y_i * numerator * pow(denominator, -1, PRIME)) % PRIME
    return value


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % PRIME
    return value
