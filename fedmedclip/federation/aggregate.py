"""Aggregation of masked FAM deltas (docs/design.md §3, "Aggregation"): a pure function, validated inputs.

``new = global + Δ̄`` where, for every row of a matrix (and every element of a vector), ``Δ̄`` is the
weighted mean of the deltas of the sites that sent that row. Rows nobody sent stay unchanged: averaging in
implicit zeros would shrink every update by the fraction of sites that happened not to send a row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedmedclip.federation.arrays import Array, to_numpy
from fedmedclip.federation.errors import UpdateRejected
from fedmedclip.federation.robust import clip_scale, median, trimmed_mean
from fedmedclip.federation.sparse import SparseTensor, SparseUpdate

Weighting = Literal["samples", "uniform"]
Rule = Literal["mean", "trimmed_mean", "median"]
_ROW_BLOCK = 64  # robust rules sort sites × rows × width at a time: bounded memory for 100 sites at D=512


@dataclass(frozen=True)
class SiteUpdate:
    site: str
    num_samples: int  # training samples behind the update: its weight under "samples" weighting
    update: SparseUpdate


def validate_update(
    update: SparseUpdate,
    shapes: Mapping[str, tuple[int, ...]],
    norm_bound: float | None = None,
    site: str = "?",
    num_samples: int | None = None,
) -> None:
    """Raise ``UpdateRejected`` naming ``site`` and the tensor unless ``update`` fits ``shapes``.

    Matrices (2-D) may be sent partially or not at all; vectors (1-D) are required, whole. Values must be
    finite floats; with ``norm_bound`` the L2 norm over all sent values must not exceed it.
    """
    if num_samples is not None and (isinstance(num_samples, bool) or num_samples < 1):
        raise UpdateRejected(site, f"num_samples must be >= 1, got {num_samples!r}")
    for name in update.tensors:
        if name not in shapes:
            raise UpdateRejected(site, f"unknown tensor (expected one of {', '.join(sorted(shapes))})", name)
    for name, shape in shapes.items():
        if len(shape) == 1 and name not in update.tensors:
            raise UpdateRejected(site, "required vector tensor is missing", name)
    squared = 0.0
    for name, tensor in update.tensors.items():
        _validate_tensor(tensor, tuple(shapes[name]), site, name)
        squared += float(np.sum(tensor.values.astype(np.float64) ** 2))
    if norm_bound is not None and squared**0.5 > norm_bound:
        raise UpdateRejected(site, f"update L2 norm {squared**0.5:.6g} exceeds the bound {norm_bound:.6g}")


def _validate_tensor(tensor: SparseTensor, expected: tuple[int, ...], site: str, name: str) -> None:
    if tuple(tensor.shape) != expected:
        raise UpdateRejected(site, f"shape {list(tensor.shape)}, expected {list(expected)}", name)
    values = tensor.values
    if not np.issubdtype(values.dtype, np.floating):
        raise UpdateRejected(site, f"values have non-float dtype {values.dtype}", name)
    if tensor.rows is None:
        if tuple(values.shape) != expected:
            raise UpdateRejected(site, f"dense values of shape {list(values.shape)}, expected {list(expected)}", name)
    else:
        _validate_rows(tensor.rows, values, expected, site, name)
    if not bool(np.isfinite(values).all()):
        raise UpdateRejected(site, "values contain NaN or Inf", name)


def _validate_rows(rows: Array, values: Array, expected: tuple[int, ...], site: str, name: str) -> None:
    if len(expected) != 2:
        raise UpdateRejected(site, "row-sparse values sent for a vector tensor", name)
    if rows.dtype != np.int64 or rows.ndim != 1:
        raise UpdateRejected(site, f"row indices must be a 1-D int64 tensor, got {rows.dtype} {list(rows.shape)}", name)
    if tuple(values.shape) != (rows.size, expected[1]):
        raise UpdateRejected(
            site, f"values of shape {list(values.shape)} for {rows.size} rows of width {expected[1]}", name
        )
    if rows.size == 0:
        return
    if int(rows.min()) < 0 or int(rows.max()) >= expected[0]:
        raise UpdateRejected(
            site, f"row index out of range [0, {expected[0]}): min {int(rows.min())}, max {int(rows.max())}", name
        )
    if np.unique(rows).size != rows.size:
        raise UpdateRejected(site, "row indices contain duplicates", name)


def aggregate(
    global_state: Mapping[str, Any],
    updates: Sequence[SiteUpdate],
    weighting: Weighting = "samples",
    norm_bound: float | None = None,
    *,
    prevalidated: bool = False,
    clip_norm: float | None = None,
    rule: Rule = "mean",
    trim_fraction: float = 0.2,
) -> dict[str, Array]:
    """The next global FAM from ``global_state`` and the sites' updates; no input is modified.

    Every update is validated before any arithmetic: one bad update raises ``UpdateRejected`` (naming the
    site and tensor) and nothing is averaged; the caller decides whether to drop it and call again.
    ``prevalidated=True`` skips that step for a caller that ran ``validate_update`` on each update with the
    same shapes and norm bound when it accepted it (the aggregator does, at upload time): re-checking 100
    updates would cost a third of the round-close time.

    Defences (docs/design.md §6): ``clip_norm`` scales every update whose L2 norm exceeds it down to it;
    ``rule`` "trimmed_mean" or "median" replaces the weighted mean by a coordinate-wise, unweighted robust
    statistic over the sites that sent each row (``fedmedclip.federation.robust``). Sample counts are capped
    by the caller (``robust.capped_samples``) before they get here.
    """
    if not updates:
        raise ValueError("aggregate: no updates to aggregate")
    if weighting not in ("samples", "uniform"):
        raise ValueError(f"aggregate: weighting must be 'samples' or 'uniform', got {weighting!r}")
    if rule not in ("mean", "trimmed_mean", "median"):
        raise ValueError(f"aggregate: rule must be 'mean', 'trimmed_mean' or 'median', got {rule!r}")
    sites = [u.site for u in updates]
    if len(set(sites)) != len(sites):
        raise ValueError(f"aggregate: more than one update from the same site in {sorted(sites)}")
    arrays = {name: to_numpy(tensor) for name, tensor in global_state.items()}
    for name, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating) or array.ndim not in (1, 2):
            raise ValueError(f"aggregate: global tensor {name!r} must be a 1-D or 2-D float tensor")
    shapes = {name: tuple(array.shape) for name, array in arrays.items()}
    if not prevalidated:
        for site_update in updates:
            validate_update(site_update.update, shapes, norm_bound, site_update.site, site_update.num_samples)

    # Sorted by site and summed in float64: the result does not depend on arrival order.
    ordered = sorted(updates, key=lambda u: u.site)
    scales = [clip_scale(squared_norm(u.update), clip_norm) for u in ordered]
    if rule != "mean":
        return _robust(arrays, ordered, scales, rule, trim_fraction)
    result: dict[str, Array] = {}
    for name, array in arrays.items():
        rows = array.shape[0]
        numerator = np.zeros((rows, array.size // rows), dtype=np.float64)
        weight_sum = np.zeros(rows, dtype=np.float64)
        for site_update, scale in zip(ordered, scales, strict=True):
            sent = site_update.update.tensors.get(name)
            if sent is None:
                continue
            weight = float(site_update.num_samples) if weighting == "samples" else 1.0
            values = sent.values.astype(np.float64).reshape(-1, numerator.shape[1]) * scale
            # Row indices are unique (validated), so fancy-index += adds each row exactly once.
            index = slice(None) if sent.rows is None else sent.rows
            numerator[index] += values * weight
            weight_sum[index] += weight
        mean = numerator / np.maximum(weight_sum, 1.0)[:, None]  # unsent rows: 0 / 1 = no change
        result[name] = (array.astype(np.float64) + mean.reshape(array.shape)).astype(np.float32)
    return result


def squared_norm(update: SparseUpdate) -> float:
    """The squared L2 norm over every value an update sent."""
    return sum(float(np.sum(t.values.astype(np.float64) ** 2)) for t in update.tensors.values())


def _robust(
    global_state: Mapping[str, Array],
    ordered: Sequence[SiteUpdate],
    scales: Sequence[float],
    rule: Rule,
    trim_fraction: float,
) -> dict[str, Array]:
    """``global + robust statistic of the (clipped) deltas`` per tensor; rows in blocks to bound memory."""
    result: dict[str, Array] = {}
    for name, array in global_state.items():
        rows = array.shape[0]
        width = array.size // rows
        delta = np.zeros((rows, width), dtype=np.float64)
        for start in range(0, rows, _ROW_BLOCK):
            stop = min(start + _ROW_BLOCK, rows)
            values = np.zeros((len(ordered), stop - start, width), dtype=np.float64)
            sent = np.zeros((len(ordered), stop - start), dtype=bool)
            for i, (site_update, scale) in enumerate(zip(ordered, scales, strict=True)):
                part = site_update.update.tensors.get(name)
                if part is None:
                    continue
                dense_rows, dense_values = _rows_and_values(part, rows, width)
                pick = (dense_rows >= start) & (dense_rows < stop)
                values[i, dense_rows[pick] - start] = dense_values[pick] * scale
                sent[i, dense_rows[pick] - start] = True
            block = trimmed_mean(values, sent, trim_fraction) if rule == "trimmed_mean" else median(values, sent)
            delta[start:stop] = block
        base = array.astype(np.float64).reshape(rows, width)
        result[name] = (base + delta).reshape(array.shape).astype(np.float32)
    return result


def _rows_and_values(part: SparseTensor, rows: int, width: int) -> tuple[Array, Array]:
    values = part.values.astype(np.float64).reshape(-1, width)
    index = np.arange(rows) if part.rows is None else part.rows
    return index, values
