"""The public communication graph: every site masks with, and shares its secrets among, its neighbours only.

All pairs (Bonawitz et al.) cost every site O(n) key agreements and mask streams per round. SecAgg+ (Bell et
al.) needs only a k-regular graph with k = O(log n): a Harary graph over a seeded permutation of the sites.
Everyone derives the same graph from the public round seed, so nothing about it needs to be sent.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence


def suggested_degree(sites: int) -> int:
    """An even degree growing like log n (all pairs for small federations)."""
    if sites <= 1:
        return 0
    return min(sites - 1, 2 * math.ceil(1.5 * math.log2(sites)))


def neighbours(sites: Sequence[str], degree: int | None, seed: bytes) -> dict[str, frozenset[str]]:
    """Each site's neighbours: all others when ``degree`` is None or ≥ n − 1, else a Harary graph."""
    names = sorted(set(sites))
    if len(names) != len(sites):
        raise ValueError("site names must be distinct")
    n = len(names)
    if degree is None or degree >= n - 1:
        return {name: frozenset(other for other in names if other != name) for name in names}
    if degree < 1:
        raise ValueError("degree must be >= 1")
    order = sorted(names, key=lambda name: hmac.new(seed, name.encode(), hashlib.sha256).digest())
    half = degree // 2
    links: dict[str, set[str]] = {name: set() for name in names}
    for position, name in enumerate(order):
        offsets = list(range(1, half + 1))
        if degree % 2 and n % 2 == 0:
            offsets.append(n // 2)  # odd degree: the opposite site, which keeps the graph regular
        for offset in offsets:
            other = order[(position + offset) % n]
            links[name].add(other)
            links[other].add(name)
    return {name: frozenset(linked) for name, linked in links.items()}
