"""What a site puts under the masks, and what the aggregator makes of the unmasked sum (docs/design.md §6.4).

Numpy only: the aggregator decodes sums and applies them to a FAM without torch.

**Layout.** One vector per site and round: for each weight matrix (``m1.weight``, ``m2.weight``) the rows of
the round's public row subset, row after row; then every vector tensor whole (``m1.bias``, ``m1.kappa``,
``m2.bias``, ``m2.kappa``); last, the site's weight. The row subset is ``⌈ρ·D⌉`` rows per matrix drawn from a
generator seeded by the run and round, the same for every site: per-site top-k rows would tell the aggregator
which rows a site changed, and masked sums need every site on the same coordinates.

**A site** (``encode_site``) takes ``total = Δ + residual``, zeroes its dead rows, clips the sent values to
the L2 bound, quantises them to ``q = clamp(round(v / scale), ±levels)``, multiplies by its capped integer
weight ``w`` and appends ``w``. Everything it did not send (other rows, dead rows, the clipped and clamped
excess and the rounding error) becomes its next residual: error feedback, as in the plain codec (§3.8).

**The aggregator** (``decode_sum``) reads the unmasked sum as signed integers: the last coordinate is
``Σ w``, the others ``Σ w·q``, so ``scale · Σ w·q / Σ w`` is the weighted mean, within ``scale / 2`` per
coordinate of the float weighted mean of the clipped, clamped values.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedmedclip.federation.fam_bytes import fam_from_bytes, fam_to_bytes
from fedmedclip.model.fam_layout import FAM_MATRIX_NAMES as MATRIX_NAMES
from fedmedclip.model.fam_layout import FAM_TENSOR_NAMES as TENSOR_NAMES
from fedmedclip.model.fam_layout import FAM_VECTOR_NAMES as VECTOR_NAMES
from fedmedclip.secagg.config import SecureAggregationConfig
from fedmedclip.secagg.fixedpoint import FixedPoint
from fedmedclip.secagg.protocol import RoundParams

# The FAM's tensors (docs/design.md §3.3), from the one torch-free definition.

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Layout:
    """The public coordinates of one secure round: which rows of each matrix, in order, then the vectors."""

    dim: int
    rows: Mapping[str, np.ndarray]  # sorted int64 row indices per matrix

    @property
    def length(self) -> int:
        """Coordinates of a masked vector, the weight included."""
        return sum(len(self.rows[name]) * self.dim for name in MATRIX_NAMES) + len(VECTOR_NAMES) * self.dim + 1

    def flatten(self, state: Arrays) -> np.ndarray:
        parts = [np.asarray(state[name], dtype=np.float64)[self.rows[name]].ravel() for name in MATRIX_NAMES]
        parts += [np.asarray(state[name], dtype=np.float64).ravel() for name in VECTOR_NAMES]
        return np.concatenate(parts)

    def unflatten(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """The inverse of ``flatten`` (without the weight): row blocks for matrices, whole vectors."""
        out: dict[str, np.ndarray] = {}
        offset = 0
        for name in MATRIX_NAMES:
            count = len(self.rows[name]) * self.dim
            out[name] = values[offset : offset + count].reshape(len(self.rows[name]), self.dim)
            offset += count
        for name in VECTOR_NAMES:
            out[name] = values[offset : offset + self.dim]
            offset += self.dim
        return out


def round_layout(run_id: str, round_number: int, dim: int, row_fraction: float) -> Layout:
    """The run's public row subset for a round: ⌈ρ·D⌉ rows of each matrix, seeded by run, round and matrix."""
    count = min(dim, math.ceil(row_fraction * dim))
    rows = {}
    for name in MATRIX_NAMES:
        digest = hashlib.sha256(f"fedmedclip/secagg/rows|{run_id}|{round_number}|{name}".encode()).digest()
        generator = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
        rows[name] = np.sort(generator.choice(dim, size=count, replace=False)).astype(np.int64)
    return Layout(dim, rows)


def graph_seed(run_id: str, round_number: int) -> bytes:
    """The public seed of a round's SecAgg+ graph; every party derives it the same way."""
    return hashlib.sha256(f"fedmedclip/secagg/graph|{run_id}|{round_number}".encode()).digest()


def round_params(run_id: str, round_number: int, config: SecureAggregationConfig, dim: int, sites: int) -> RoundParams:
    """What every party of a round with ``sites`` advertised sites agrees on; each derives it itself, so a
    site can refuse a server that announces a lower threshold or a smaller modulus."""
    return RoundParams(
        run_id=run_id,
        round=round_number,
        threshold=config.round_threshold(sites),
        bits=config.bits_for(sites),
        length=round_layout(run_id, round_number, dim, config.row_fraction).length,
        degree=config.round_degree(sites),
        graph_seed=graph_seed(run_id, round_number),
    )


def site_weight(config: SecureAggregationConfig, num_samples: int, weighting: str) -> int:
    """The integer weight a site puts under the masks: its capped sample count, or 1 under uniform weighting."""
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    return 1 if weighting == "uniform" else min(num_samples, config.weight_cap)


@dataclass(frozen=True)
class SiteEncoding:
    integers: np.ndarray  # signed int64: w·q per coordinate, then w (what the sum adds up exactly)
    residual: dict[str, np.ndarray]  # float32, every FAM tensor: what this round did not send
    clipped: bool  # the L2 clip scaled the sent values down
    clamped: int  # coordinates cut to the fixed-point range

    def residues(self, fixed: FixedPoint) -> np.ndarray:
        """The integers modulo the round's 2^bits (known once every site advertised): the masks' input."""
        return fixed.to_ring(self.integers)


def encode_site(
    delta: Arrays,
    residual: Arrays | None,
    alive_rows: Mapping[str, np.ndarray],
    layout: Layout,
    config: SecureAggregationConfig,
    weight: int,
) -> SiteEncoding:
    """One site's vector for a secure round (module docstring); ``delta`` is ``FAM_local − FAM_global``."""
    if not 1 <= weight <= config.weight_cap:
        raise ValueError(f"weight must be in 1..{config.weight_cap}, got {weight}")
    total: dict[str, np.ndarray] = {}
    for name in TENSOR_NAMES:
        value = np.asarray(delta[name], dtype=np.float64)
        if residual is not None:
            value = value + np.asarray(residual[name], dtype=np.float64)
        total[name] = value
    if not all(np.all(np.isfinite(value)) for value in total.values()):
        raise ValueError("the update holds non-finite values")
    # Dead rows are sent as zeros and, as in plain mode (docs/design.md §3.8), their leftover is dropped, not
    # carried: a dead row does not act on the model, and a carried residual would flood it when it revives.
    masked_total = dict(total)
    for name in MATRIX_NAMES:
        dead = ~np.asarray(alive_rows[name], dtype=bool)
        masked_total[name] = np.where(dead[:, None], 0.0, total[name])
    sent = layout.flatten(masked_total)
    norm = float(np.linalg.norm(sent))
    clipped = norm > config.clip_norm
    if clipped:
        sent = sent * (config.clip_norm / norm)
    raw = np.rint(sent / config.scale)
    clamped = int(np.count_nonzero(np.abs(raw) > config.levels))
    quantised = np.clip(raw, -config.levels, config.levels).astype(np.int64)
    sent_back = layout.unflatten(quantised.astype(np.float64) * config.scale)
    new_residual = {name: value.copy() for name, value in masked_total.items()}
    for name in MATRIX_NAMES:
        new_residual[name][layout.rows[name]] -= sent_back[name]
    for name in VECTOR_NAMES:
        new_residual[name] -= sent_back[name]
    integers = np.concatenate([quantised * weight, np.array([weight], dtype=np.int64)])
    return SiteEncoding(
        integers=integers,
        residual={name: value.astype(np.float32) for name, value in new_residual.items()},
        clipped=clipped,
        clamped=clamped,
    )


@dataclass(frozen=True)
class DecodedSum:
    mean: dict[str, np.ndarray]  # the weighted mean of what the sites sent, float64, in the layout's blocks
    weight_sum: int
    integers: np.ndarray  # the signed integer sum, the weight last


def decode_sum(residues: np.ndarray, layout: Layout, config: SecureAggregationConfig, fixed: FixedPoint) -> DecodedSum:
    """The weighted mean from an unmasked sum modulo 2^bits; refuses a sum whose weights do not add up."""
    if residues.shape != (layout.length,):
        raise ValueError(f"expected a sum of {layout.length} coordinates, got {residues.shape}")
    integers = fixed.to_signed(residues)
    weight_sum = int(integers[-1])
    if weight_sum < 1:
        raise ValueError(f"the unmasked weights sum to {weight_sum}: the sum is not a sum of site vectors")
    mean = integers[:-1].astype(np.float64) * (config.scale / weight_sum)
    return DecodedSum(layout.unflatten(mean), weight_sum, integers)


def apply_mean(parent: Arrays, decoded: DecodedSum, layout: Layout) -> dict[str, np.ndarray]:
    """The next FAM: ``parent`` plus the mean on the round's rows and on every vector (float32)."""
    state = {name: np.array(parent[name], dtype=np.float64) for name in TENSOR_NAMES}
    for name in MATRIX_NAMES:
        state[name][layout.rows[name]] += decoded.mean[name]
    for name in VECTOR_NAMES:
        state[name] += decoded.mean[name]
    return {name: value.astype(np.float32) for name, value in state.items()}


def fam_arrays_from_bytes(data: bytes, dim: int) -> dict[str, np.ndarray]:
    """A stored FAM version (safetensors, §5) as numpy arrays: ``fam_bytes.fam_from_bytes``."""
    return fam_from_bytes(data, dim)


def fam_arrays_to_bytes(state: Arrays) -> bytes:
    """The same bytes ``fam_bytes.fam_to_bytes`` writes (it is that function)."""
    return fam_to_bytes(state)
