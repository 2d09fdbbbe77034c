"""Defences of the aggregate against one site's update (docs/design.md §6): weight caps, an L2 clip, and
coordinate-wise trimmed mean and median. Pure numpy functions over dense arrays, no I/O.

The robust rules combine, for every coordinate of a matrix row, the values of the sites *that sent that row*
(a site that did not send a row abstains rather than voting zero, as in the plain mean). They are
unweighted: a sample count is the one number a site reports about itself, so it gets no say in a rule
meant to survive a lying site.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def capped_samples(num_samples: int, *caps: int | None) -> int:
    """``num_samples`` limited by every cap that is set (the run's ``max_samples_per_site``, the site's own)."""
    limits = [cap for cap in caps if cap is not None]
    return min([num_samples, *limits])


def clip_scale(squared_norm: float, bound: float | None) -> float:
    """The factor that brings an update of L2 norm ``sqrt(squared_norm)`` within ``bound`` (1.0 if already)."""
    if bound is None:
        return 1.0
    norm = math.sqrt(squared_norm)
    return 1.0 if norm <= bound else bound / norm


def trimmed_mean(values: FloatArray, sent: BoolArray, trim_fraction: float) -> FloatArray:
    """Coordinate-wise trimmed mean over axis 0 of ``values`` (sites × rows × width), counting only the sites
    whose ``sent`` (sites × rows) is true: of a row sent by ``k`` sites, ``floor(trim_fraction · k)`` values
    are cut from each end of every coordinate. Rows nobody sent give 0 (no change)."""
    count = sent.sum(axis=0).astype(np.int64)
    low = np.floor(trim_fraction * count).astype(np.int64)
    return _mean_of_ranks(values, sent, low, count - low)


def median(values: FloatArray, sent: BoolArray) -> FloatArray:
    """Coordinate-wise median over the sites that sent each row (mean of the middle two for an even count)."""
    count = sent.sum(axis=0).astype(np.int64)
    return _mean_of_ranks(values, sent, (count - 1) // 2, count // 2 + 1)


def _mean_of_ranks(values: FloatArray, sent: BoolArray, low: IntArray, high: IntArray) -> FloatArray:
    """Per coordinate, the mean of the sorted sent values of ranks ``low`` (inclusive) to ``high`` (exclusive);
    ``low``/``high`` are per row."""
    # Unsent rows become +inf so that sorting puts them after every real value of the coordinate.
    ordered = np.sort(np.where(sent[:, :, None], values, np.inf), axis=0)
    high = np.minimum(high, sent.sum(axis=0))  # never reach into the +inf of the unsent
    rank = np.arange(values.shape[0])[:, None, None]
    keep = (rank >= low[None, :, None]) & (rank < high[None, :, None])
    kept = np.where(keep, ordered, 0.0).sum(axis=0)
    number = keep.sum(axis=0)
    return np.where(number > 0, kept / np.maximum(number, 1), 0.0)
