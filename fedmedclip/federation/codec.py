"""The masked update codec (docs/design.md §3, "What a site sends").

Per round a site sends ``total = Δ + residual``: of each weight matrix only the alive rows among the top
``ceil(rho · rows)`` alive rows by L2 norm (dead rows are never ranked), quantised (int8 with one fp16 scale
per row, or fp16, or fp32); the bias and kappa vectors whole (fp16, or fp32). Everything not transmitted,
quantisation error included, becomes the next residual (error feedback), so nothing is lost, only delayed,
except a dead row's share, which is dropped: the row does not shape the site's model, and keeping it would let
it grow without bound while the row stays dead.

Everything here is numpy, so the aggregator decodes without torch. The agent passes torch tensors to
``encode_update`` as they are and gets its residual back as torch tensors (``arrays`` is the boundary).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedmedclip.federation import payload as framing
from fedmedclip.federation.arrays import Array, is_torch, to_numpy, to_torch
from fedmedclip.federation.codec_config import CodecConfig, Compression, Quantization
from fedmedclip.federation.errors import CorruptUpdate
from fedmedclip.federation.sparse import SparseTensor, SparseUpdate

__all__ = [
    "CodecConfig",
    "CodecStats",
    "Compression",
    "EncodedUpdate",
    "Quantization",
    "SparseTensor",
    "SparseUpdate",
    "decode_update",
    "encode_dense_reference",
    "encode_update",
]

DEFAULT_MAX_DECOMPRESSED_BYTES = 64 << 20  # dense fp32 FAM for D=512 is ~2 MiB; D=1024 ~8 MiB
_FP16_MAX = float(np.finfo(np.float16).max)
# Little-endian on the wire whatever the host: numpy dtype strings make the byte order explicit.
_WIRE_DTYPES = {"int32": "<i4", "int8": "i1", "float16": "<f2", "float32": "<f4"}
_ENCODINGS: dict[str, dict[str, str]] = {  # encoding -> part -> wire dtype
    "rows-int8": {"indices": "int32", "scales": "float16", "values": "int8"},
    "rows-fp16": {"indices": "int32", "values": "float16"},
    "rows-fp32": {"indices": "int32", "values": "float32"},
    "dense-fp16": {"values": "float16"},
    "dense-fp32": {"values": "float32"},
}


@dataclass(frozen=True)
class CodecStats:
    rows_sent: dict[str, int]  # per weight matrix
    rows_total: dict[str, int]
    raw_bytes: int  # uncompressed body
    payload_bytes: int  # what goes on the wire
    dense_fp32_bytes: int  # the same tensors sent whole in float32, for comparison


@dataclass(frozen=True)
class EncodedUpdate:
    payload: bytes
    sha256: str  # of the whole payload: what the transport announces and the receiver checks
    # Keep locally and pass to the next round's encode_update; torch tensors when the delta was torch.
    residual: dict[str, Any]
    stats: CodecStats


def encode_update(
    delta: Mapping[str, Any],
    alive_rows: Mapping[str, Any],
    residual: Mapping[str, Any] | None = None,
    config: CodecConfig | None = None,
) -> EncodedUpdate:
    """Encode ``delta + residual`` (see the module docstring). 2-D tensors are row-masked; 1-D sent whole.

    ``alive_rows`` must hold a boolean vector for every 2-D tensor. Raises ``ValueError`` for inconsistent
    inputs, non-finite values, or values beyond fp16 range when a 16-bit encoding is asked for.
    """
    config = config or CodecConfig()
    torch_in = any(is_torch(t) for t in delta.values())
    # On the CPU whatever the training device: serialisation goes through numpy.
    delta = {name: to_numpy(t) for name, t in delta.items()}
    alive_rows = {name: to_numpy(t) for name, t in alive_rows.items()}
    residual = None if residual is None else {name: to_numpy(t) for name, t in residual.items()}
    _check_inputs(delta, alive_rows, residual)
    writer = _BodyWriter()
    entries: list[dict[str, Any]] = []
    new_residual: dict[str, Array] = {}
    rows_sent: dict[str, int] = {}
    rows_total: dict[str, int] = {}
    for name in sorted(delta):  # canonical order: equal inputs give byte-identical payloads
        total = delta[name].astype(np.float32)
        if residual is not None:
            total = total + residual[name].astype(np.float32)
        if total.ndim == 2:
            alive = alive_rows[name]
            entry, decoded = _encode_rows(name, total, alive, config, writer)
            rows_sent[name] = entry["row_count"]
            rows_total[name] = total.shape[0]
            # A dead row's pending change is dropped, not carried: the row does not shape this site's model,
            # and a residual kept for it would grow every round and flood the update when the row revives.
            new_residual[name] = (total - decoded) * alive.astype(total.dtype)[:, None]
        else:
            entry, decoded = _encode_dense(name, total, config, writer)
            new_residual[name] = total - decoded
        entries.append(entry)
    body = writer.getvalue()
    header = {"byte_order": "little", "codec": config.to_dict(), "tensors": entries}
    data = framing.pack(header, body, config.compression)
    stats = CodecStats(
        rows_sent=rows_sent,
        rows_total=rows_total,
        raw_bytes=len(body),
        payload_bytes=len(data),
        dense_fp32_bytes=sum(4 * t.size for t in delta.values()),
    )
    kept = to_torch(new_residual) if torch_in else new_residual
    return EncodedUpdate(data, hashlib.sha256(data).hexdigest(), kept, stats)


def encode_dense_reference(state: Mapping[str, Any]) -> bytes:
    """The paper's reference upload (every tensor whole, fp16, zlib): only for byte comparisons."""
    raw = b"".join(np.ascontiguousarray(to_numpy(state[name]), dtype="<f2").tobytes() for name in sorted(state))
    return zlib.compress(raw, 6)


def max_body_bytes(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """The largest raw body any encoding of a FAM with ``shapes`` has: every row sent at fp32 with its
    int32 index and fp16 scale. A payload declaring more is refused before it is decompressed."""
    total = 0
    for shape in shapes.values():
        total += 4 * math.prod(shape) + (6 * shape[0] if len(shape) == 2 else 0)
    return total


def max_payload_bytes(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """An upper bound of a valid payload's size for ``shapes``: the body stored uncompressed (or a little
    larger, compressed), plus a generous header allowance."""
    body = max_body_bytes(shapes)
    return body + body // 64 + (64 << 10)


def declared_parts_bytes(header: Mapping[str, Any]) -> int | None:
    """The body size the header's tensor entries account for (the sum of their parts' lengths), or None when
    the entries are malformed: decoding then refuses them with a precise message, after a decompression
    that ``max_body_bytes`` still bounds."""
    entries = header.get("tensors")
    if not isinstance(entries, list):
        return None
    total, names = 0, set()
    for entry in entries:
        parts = entry.get("parts") if isinstance(entry, dict) else None
        if not isinstance(parts, dict) or entry.get("name") in names:
            return None
        names.add(entry.get("name"))
        for part in parts.values():
            length = part.get("length") if isinstance(part, dict) else None
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                return None
            total += length
    return total


def _shape_check(shapes: Mapping[str, tuple[int, ...]] | None) -> framing.HeaderCheck:
    """A header check for ``framing.unpack``: the declared raw size is exactly what the tensor entries
    account for, and (with ``shapes``) every entry has its expected shape. Runs before decompression."""

    def check(header: dict[str, Any], raw_bytes: int) -> None:
        declared = declared_parts_bytes(header)
        if declared is not None and declared != raw_bytes:
            raise CorruptUpdate(
                f"update body declares {raw_bytes} raw bytes, its tensor entries account for {declared}"
            )
        if shapes is None:
            return
        for entry in header.get("tensors") or ():
            if not isinstance(entry, dict):
                continue  # refused with its own message by the decoding below
            name, shape = entry.get("name"), entry.get("shape")
            if isinstance(name, str) and name in shapes and shape != list(shapes[name]):
                raise CorruptUpdate(f"tensor {name!r}: shape {shape!r}, expected {list(shapes[name])}")

    return check


def decode_update(
    payload: bytes,
    expected_sha256: str | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> SparseUpdate:
    """Parse and check a payload from ``encode_update``; every defect raises ``CorruptUpdate``.

    With ``shapes`` (the run's FAM shapes) the body may not exceed ``max_body_bytes(shapes)`` either, and
    a header whose entries do not fit them is refused before anything is decompressed.
    """
    if expected_sha256 is not None:
        actual = hashlib.sha256(payload).hexdigest()
        if actual != expected_sha256.strip().lower():
            raise CorruptUpdate(f"update sha256 mismatch: announced {expected_sha256}, received {actual}")
    if shapes is not None:
        max_decompressed_bytes = min(max_decompressed_bytes, max_body_bytes(shapes))
    header, body = framing.unpack(payload, max_decompressed_bytes, _shape_check(shapes))
    codec_settings = header.get("codec")
    if not isinstance(codec_settings, dict):
        raise CorruptUpdate("update header has no 'codec' object")
    try:
        codec = CodecConfig.from_dict(codec_settings)
    except (TypeError, ValueError) as exc:
        raise CorruptUpdate(f"update header codec settings are invalid: {exc}") from exc
    if header.get("byte_order") != "little":
        raise CorruptUpdate(f"unsupported byte order {header.get('byte_order')!r}; expected 'little'")
    entries = header.get("tensors")
    if not isinstance(entries, list):
        raise CorruptUpdate("update header has no 'tensors' list")
    tensors: dict[str, SparseTensor] = {}
    for index, entry in enumerate(entries):
        name, tensor = _decode_entry(entry, index, body, max_decompressed_bytes)
        if name in tensors:
            raise CorruptUpdate(f"update header lists tensor {name!r} twice")
        tensors[name] = tensor
    return SparseUpdate(tensors, codec)


# --- encoding helpers ---------------------------------------------------------------------------------


class _BodyWriter:
    """Appends parts to the body and returns their header descriptors (offset, length, dtype)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, array: np.ndarray[Any, Any], dtype: str) -> dict[str, Any]:
        data = np.ascontiguousarray(array, dtype=_WIRE_DTYPES[dtype]).tobytes()
        part = {"offset": self._size, "length": len(data), "dtype": dtype}
        self._chunks.append(data)
        self._size += len(data)
        return part

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


def _check_inputs(
    delta: Mapping[str, Array],
    alive_rows: Mapping[str, Array],
    residual: Mapping[str, Array] | None,
) -> None:
    if not delta:
        raise ValueError("encode_update: the delta holds no tensors")
    for name, tensor in delta.items():
        if not np.issubdtype(tensor.dtype, np.floating) or tensor.ndim not in (1, 2):
            raise ValueError(f"encode_update: tensor {name!r} must be a 1-D or 2-D float tensor")
        if not bool(np.isfinite(tensor).all()):
            raise ValueError(f"encode_update: tensor {name!r} has NaN or Inf values")
        if tensor.ndim == 2:
            alive = alive_rows.get(name)
            if alive is None or alive.dtype != np.bool_ or tuple(alive.shape) != (tensor.shape[0],):
                raise ValueError(f"encode_update: alive_rows[{name!r}] must be a bool vector of {tensor.shape[0]}")
    extra = sorted(set(alive_rows) - {n for n, t in delta.items() if t.ndim == 2})
    if extra:
        raise ValueError(f"encode_update: alive_rows names tensors that are not matrices of the delta: {extra}")
    if residual is not None:
        if set(residual) != set(delta):
            raise ValueError("encode_update: the residual must hold exactly the delta's tensors")
        for name, tensor in residual.items():
            if tuple(tensor.shape) != tuple(delta[name].shape):
                raise ValueError(f"encode_update: residual {name!r} has shape {tuple(tensor.shape)}")


def _select_rows(total: Array, alive: Array, rho: float) -> Array:
    """Sorted indices of the top ``ceil(rho · rows)`` *alive* rows by L2 norm.

    Only alive rows are ranked: a dead row is never sent, so letting it hold a place in the top-k would
    crowd alive rows out (with 8 of 40 rows dead and a budget of 8, alive rows sent per round fell from 6-7
    to 2). The budget is still counted over all rows, so a round never sends more than that many. All-zero
    rows are skipped: sending them would cost bytes and change nothing.
    """
    norms = np.linalg.norm(total, axis=1)
    budget = math.ceil(rho * total.shape[0])
    candidates = np.flatnonzero(alive & (norms > 0))
    order = np.argsort(-norms[candidates], kind="stable")  # stable: ties break by row index
    return np.sort(candidates[order[:budget]])


def _fp16_round_up(values: Array) -> Array:
    """Non-negative float32 → the smallest float16 ≥ each value, so ``|x / scale| ≤ 127`` always holds."""
    half = values.astype(np.float16)
    low = half.astype(np.float32) < values
    # For positive finite float16, the next representable value is the next bit pattern.
    bumped = (half.view(np.int16) + np.int16(1)).view(np.float16)
    return np.where(low, bumped, half)


def dequantize_int8(codes: Array, scales: Array) -> Array:
    """float32 ``codes · scale`` per row; shared by encoder and decoder so both sides agree bit for bit."""
    return codes.astype(np.float32) * scales.astype(np.float32)[:, None]


def _check_fp16_range(name: str, values: Array, limit: float) -> None:
    if values.size and float(np.abs(values).max()) > limit:
        raise ValueError(f"encode_update: tensor {name!r} has values beyond float16 range; use quantization='fp32'")


def _encode_rows(
    name: str, total: Array, alive: Array, config: CodecConfig, writer: _BodyWriter
) -> tuple[dict[str, Any], Array]:
    rows = _select_rows(total, alive, config.rho)
    kept = total[rows]
    parts = {"indices": writer.add(rows, "int32")}
    if config.quantization == "int8":
        _check_fp16_range(name, kept, _FP16_MAX * 127)
        if len(rows):
            scales = _fp16_round_up(np.abs(kept).max(axis=1) / np.float32(127.0))
        else:
            scales = np.zeros(0, dtype=np.float16)
        safe = np.where(scales > 0, scales.astype(np.float32), np.float32(1.0))
        codes = np.clip(np.round(kept / safe[:, None]), -127, 127).astype(np.int8)
        parts["scales"] = writer.add(scales, "float16")
        parts["values"] = writer.add(codes, "int8")
        sent = dequantize_int8(codes, scales)
    elif config.quantization == "fp16":
        _check_fp16_range(name, kept, _FP16_MAX)
        half = kept.astype(np.float16)
        parts["values"] = writer.add(half, "float16")
        sent = half.astype(np.float32)
    else:
        parts["values"] = writer.add(kept, "float32")
        sent = kept.copy()
    decoded = np.zeros_like(total)
    decoded[rows] = sent
    entry = {
        "name": name,
        "shape": list(total.shape),
        "encoding": f"rows-{config.quantization}",
        "row_count": len(rows),
        "parts": parts,
    }
    return entry, decoded


def _encode_dense(name: str, total: Array, config: CodecConfig, writer: _BodyWriter) -> tuple[dict[str, Any], Array]:
    if config.quantization == "fp32":
        encoding, values, decoded = "dense-fp32", writer.add(total, "float32"), total.copy()
    else:
        _check_fp16_range(name, total, _FP16_MAX)
        half = total.astype(np.float16)
        encoding, values, decoded = "dense-fp16", writer.add(half, "float16"), half.astype(np.float32)
    return {"name": name, "shape": list(total.shape), "encoding": encoding, "parts": {"values": values}}, decoded


# --- decoding helpers ---------------------------------------------------------------------------------


def _decode_entry(entry: object, index: int, body: bytes, max_bytes: int) -> tuple[str, SparseTensor]:
    if not isinstance(entry, dict):
        raise CorruptUpdate(f"update header tensors[{index}] is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise CorruptUpdate(f"update header tensors[{index}] has no name")
    where = f"tensor {name!r}"
    shape = _decode_shape(entry.get("shape"), where, max_bytes)
    encoding = entry.get("encoding")
    if encoding not in _ENCODINGS:
        raise CorruptUpdate(f"{where}: unknown encoding {encoding!r}; known: {', '.join(_ENCODINGS)}")
    layout = _ENCODINGS[encoding]
    parts = entry.get("parts")
    if not isinstance(parts, dict) or set(parts) != set(layout):
        raise CorruptUpdate(f"{where}: encoding {encoding} needs parts {sorted(layout)}, header has {parts!r}")
    if encoding.startswith("dense-"):
        values = _read_part(body, parts["values"], layout["values"], math.prod(shape), f"{where} values")
        return name, SparseTensor(shape, None, values.reshape(shape))
    if len(shape) != 2:
        raise CorruptUpdate(f"{where}: row encoding {encoding} needs a 2-D shape, got {list(shape)}")
    count = framing.require_int(entry, "row_count", where)
    if count > shape[0]:
        raise CorruptUpdate(f"{where}: row_count {count} exceeds the {shape[0]} rows of the tensor")
    rows = _read_part(body, parts["indices"], "int32", count, f"{where} indices").astype(np.int64)
    _check_rows(rows, shape[0], where)
    raw = _read_part(body, parts["values"], layout["values"], count * shape[1], f"{where} values")
    raw = raw.reshape(count, shape[1])
    if encoding == "rows-int8":
        scales = _read_part(body, parts["scales"], "float16", count, f"{where} scales")
        values = dequantize_int8(raw, scales)
    else:
        values = raw.astype(np.float32)
    return name, SparseTensor(shape, rows, values)


def _decode_shape(shape: object, where: str, max_bytes: int) -> tuple[int, ...]:
    if not (isinstance(shape, list) and len(shape) in (1, 2) and all(_is_positive_int(d) for d in shape)):
        raise CorruptUpdate(f"{where}: shape must be a list of 1 or 2 positive integers, got {shape!r}")
    dims = tuple(int(d) for d in shape)
    if 4 * math.prod(dims) > max_bytes:
        # Bounds what to_dense() would allocate, as max_decompressed_bytes bounds the body.
        raise CorruptUpdate(f"{where}: shape {list(dims)} is larger than the {max_bytes}-byte limit allows")
    return dims


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _read_part(body: bytes, part: object, dtype: str, count: int, where: str) -> Array:
    """The part's elements as an array (int8/int32 as such, floats as stored), after bounds checks."""
    if not isinstance(part, dict):
        raise CorruptUpdate(f"{where}: part descriptor is not an object")
    if part.get("dtype") != dtype:
        raise CorruptUpdate(f"{where}: dtype {part.get('dtype')!r}, expected {dtype!r}")
    offset = framing.require_int(part, "offset", where)
    length = framing.require_int(part, "length", where)
    if offset + length > len(body):
        raise CorruptUpdate(f"{where}: bytes {offset}..{offset + length} lie outside the {len(body)}-byte body")
    wire = np.dtype(_WIRE_DTYPES[dtype])
    if length != count * wire.itemsize:
        raise CorruptUpdate(f"{where}: {length} bytes, expected {count} × {wire.itemsize} = {count * wire.itemsize}")
    array = np.frombuffer(body, dtype=wire, count=count, offset=offset)
    return array.astype(wire.newbyteorder("="), copy=True)


def _check_rows(rows: Array, limit: int, where: str) -> None:
    if rows.size == 0:
        return
    low, high = int(rows.min()), int(rows.max())
    if low < 0 or high >= limit:
        raise CorruptUpdate(f"{where}: row index out of range [0, {limit}): min {low}, max {high}")
    steps = rows[1:] - rows[:-1]
    if bool((steps == 0).any()):
        duplicate = int(rows[1:][steps == 0][0])
        raise CorruptUpdate(f"{where}: row index {duplicate} is listed twice")
    if bool((steps < 0).any()):
        raise CorruptUpdate(f"{where}: row indices are not in increasing order")
