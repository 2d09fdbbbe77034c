"""Stratified train/val/test splits that are a pure function of (labels, fractions, seed).

Each class is split on its own with its own random stream, so adding images of one class never reshuffles
another class's split, and re-running a site's agent always puts an image in the same part.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class Split:
    """Indices into the labelled list, each sorted ascending; every index is in exactly one part."""

    train: list[int]
    val: list[int]
    test: list[int]

    def parts(self) -> dict[str, list[int]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_indices(labels: Sequence[int], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> Split:
    """Split ``range(len(labels))`` into train/val/test, stratified by label.

    Per class the part sizes follow ``fractions`` by largest remainder; a class with at least 3 samples
    gets at least one sample in every part (taken from the largest part), so small classes still appear in
    validation and test. A class with 1 or 2 samples cannot; it goes where the rounding puts it (with the
    default fractions: one sample → train, two → train and val).
    """
    shares = _check_fractions(fractions)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        if int(label) != label or label < 0:
            raise ValueError(f"labels must be non-negative integers, got {label!r} at index {index}")
        by_class[int(label)].append(index)

    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label, members in by_class.items():
        order = np.random.default_rng([seed, label]).permutation(len(members))
        shuffled = [members[i] for i in order]
        start = 0
        for part, size in zip(parts, _part_sizes(len(members), shares), strict=True):
            part.extend(shuffled[start : start + size])
            start += size
    train, val, test = (sorted(part) for part in parts)
    return Split(train=train, val=val, test=test)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {len(values)} values")
    if not all(math.isfinite(f) and f > 0 for f in values):
        raise ValueError(f"fractions must all be positive, got {values}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must sum to 1, got {values} (sum {sum(values):.6g})")
    return values[0], values[1], values[2]


def _part_sizes(count: int, shares: tuple[float, float, float]) -> list[int]:
    exact = [count * share for share in shares]
    sizes = [math.floor(value) for value in exact]
    # Hand out the rounding leftovers by largest remainder; ties go to the earlier part (train, val, test).
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: count - sum(sizes)]:
        sizes[i] += 1
    if count >= 3:
        for i in range(3):
            if sizes[i] == 0:
                donor = max(range(3), key=lambda j: (sizes[j], -j))
                sizes[donor] -= 1
                sizes[i] = 1
    return sizes
