"""The update container: ``MAGIC | format version | header length | JSON header | compressed body``.

The header is plain JSON so a payload can be inspected without this library and never needs pickle. The
prefix is fixed-width little-endian. The header carries the sha256 of the compressed body and the body's
raw size, so corruption and decompression bombs are caught before any tensor is built.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import zstandard

from fedmedclip.federation.errors import CorruptUpdate

MAGIC = b"FMCU"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")  # magic, format version, header length in bytes
MAX_HEADER_BYTES = 1 << 20  # a real header is a few KiB; anything near this is an attack or a bug
ZSTD_LEVEL = 9  # payloads are ~100 KiB: a high level costs milliseconds, see bench/ for the sizes
ZLIB_LEVEL = 9
_READ_CHUNK = 1 << 16

COMPRESSIONS = ("zstd", "zlib", "none")


def compress(body: bytes, compression: str) -> bytes:
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    if compression == "zlib":
        return zlib.compress(body, ZLIB_LEVEL)
    if compression == "none":
        return body
    raise ValueError(f"unknown compression {compression!r}")


def pack(header: dict[str, Any], body: bytes, compression: str) -> bytes:
    """Compress ``body`` and frame it behind ``header`` (to which the body description is added)."""
    compressed = compress(body, compression)
    full = dict(header)
    full["format_version"] = FORMAT_VERSION
    full["body"] = {
        "compression": compression,
        "raw_bytes": len(body),
        "compressed_bytes": len(compressed),
        "sha256": hashlib.sha256(compressed).hexdigest(),
    }
    # sort_keys + compact separators: equal updates give byte-identical payloads (idempotent resubmission).
    header_bytes = json.dumps(full, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)) + header_bytes + compressed


HeaderCheck = Callable[[dict[str, Any], int], None]


def unpack(
    payload: bytes, max_decompressed_bytes: int, check_header: HeaderCheck | None = None
) -> tuple[dict[str, Any], bytes]:
    """Check the framing and return ``(header, decompressed body)``; raise ``CorruptUpdate`` on any flaw.

    ``check_header(header, raw_bytes)`` runs after the framing checks and *before* anything is decompressed:
    the caller compares the declared raw size with what the header's contents imply. Decompression then
    stops at ``raw_bytes + 1`` bytes, whatever the compressed stream claims.
    """
    if len(payload) < _PREFIX.size:
        raise CorruptUpdate(f"truncated update: {len(payload)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    magic, version, header_len = _PREFIX.unpack_from(payload)
    if magic != MAGIC:
        raise CorruptUpdate(f"not a FedMedCLIP update: magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CorruptUpdate(
            f"unsupported update format version {version}; this build reads format version {FORMAT_VERSION}"
        )
    if header_len > MAX_HEADER_BYTES:
        raise CorruptUpdate(f"update header of {header_len} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    body_start = _PREFIX.size + header_len
    if len(payload) < body_start:
        raise CorruptUpdate(f"truncated update: header needs {body_start} bytes, payload has {len(payload)}")
    header = _parse_header(payload[_PREFIX.size : body_start])
    if header.get("format_version") != version:
        raise CorruptUpdate(
            f"header format_version {header.get('format_version')!r} disagrees with prefix version {version}"
        )
    body_info = header.get("body")
    if not isinstance(body_info, dict):
        raise CorruptUpdate("update header has no 'body' object")
    compressed = payload[body_start:]
    expected_len = require_int(body_info, "compressed_bytes", "body")
    if len(compressed) != expected_len:
        state = "truncated" if len(compressed) < expected_len else "has trailing bytes"
        raise CorruptUpdate(f"update body {state}: {len(compressed)} bytes, header says {expected_len}")
    digest = body_info.get("sha256")
    if not isinstance(digest, str) or hashlib.sha256(compressed).hexdigest() != digest.lower():
        raise CorruptUpdate("update body sha256 does not match the header: the payload was altered or damaged")
    raw_len = require_int(body_info, "raw_bytes", "body")
    if raw_len > max_decompressed_bytes:
        raise CorruptUpdate(
            f"update body would decompress to {raw_len} bytes, above the limit of {max_decompressed_bytes}"
        )
    if check_header is not None:
        check_header(header, raw_len)
    body = _decompress(compressed, body_info.get("compression"), raw_len)
    if len(body) > raw_len:
        raise CorruptUpdate(f"update body decompresses to more than the {raw_len} bytes its header declares")
    if len(body) < raw_len:
        raise CorruptUpdate(f"update body decompressed to {len(body)} bytes, header says {raw_len}")
    return header, body


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"))
    # ValueError covers bad UTF-8, bad JSON and over-long integer literals; RecursionError deep nesting.
    except (ValueError, RecursionError) as exc:
        raise CorruptUpdate(f"update header is not valid UTF-8 JSON: {type(exc).__name__}: {exc}") from exc
    if not isinstance(header, dict):
        raise CorruptUpdate(f"update header must be a JSON object, got {type(header).__name__}")
    return header


def _decompress(data: bytes, compression: object, limit: int) -> bytes:
    """Decompress at most ``limit + 1`` bytes: the frame's own size claim is never trusted for allocation."""
    try:
        if compression == "none":
            return data
        if compression == "zlib":
            inflater = zlib.decompressobj()
            out = inflater.decompress(data, limit + 1)
            if len(out) <= limit and not inflater.eof:
                raise CorruptUpdate("update body is a truncated zlib stream")
            return out
        if compression == "zstd":
            chunks: list[bytes] = []
            total = 0
            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                while total <= limit:
                    chunk = reader.read(min(_READ_CHUNK, limit + 1 - total))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
            return b"".join(chunks)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise CorruptUpdate(f"update body does not decompress ({compression}): {exc}") from exc
    raise CorruptUpdate(f"unknown body compression {compression!r}; known: {', '.join(COMPRESSIONS)}")


def require_int(obj: dict[str, Any], key: str, where: str, minimum: int = 0) -> int:
    """``obj[key]`` as a non-negative int (JSON booleans are not ints here), else ``CorruptUpdate``."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CorruptUpdate(f"update header {where}: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value
