"""The masked update codec: round trips, row selection, error feedback, sizes, and refusal of bad payloads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import zstandard

from fedmedclip.federation import payload as framing
from fedmedclip.federation.arrays import to_torch
from fedmedclip.federation.codec import (
    CodecConfig,
    Compression,
    Quantization,
    decode_update,
    encode_dense_reference,
    encode_update,
    max_body_bytes,
)
from fedmedclip.federation.delta import alive_rows_of, apply_delta, fam_delta
from fedmedclip.federation.errors import CorruptUpdate
from fedmedclip.model.fam import FAM_MATRIX_NAMES, build_fam, fam_shapes, fam_state

KIB = 1024


def make_delta(dim: int, seed: int = 0, scale: float = 1e-3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) * scale for name, shape in fam_shapes(dim).items()}


def all_alive(dim: int) -> dict[str, torch.Tensor]:
    return {name: torch.ones(dim, dtype=torch.bool) for name in FAM_MATRIX_NAMES}


def fp16_round_up(value: float) -> float:
    """Independent re-implementation of the scale rule: the smallest float16 >= value."""
    half = np.float16(value)
    if float(half) < value:
        half = np.nextafter(half, np.float16(np.inf), dtype=np.float16)
    return float(half)


# --- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"rho": 0.0}, {"rho": 1.5}, {"rho": math.nan}, {"rho": True}, {"quantization": "int4"}, {"compression": "lz4"}],
)
def test_config_refuses_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="codec"):
        CodecConfig(**kwargs)


def test_config_dict_round_trip_and_unknown_keys() -> None:
    config = CodecConfig(rho=0.5, quantization="fp16", compression="zlib")
    assert CodecConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown codec settings: level"):
        CodecConfig.from_dict({"rho": 0.2, "level": 3})


# --- round trips --------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zstd", "zlib", "none"])
def test_fp32_round_trip_is_exact(compression: Compression) -> None:
    delta = make_delta(16)
    encoded = encode_update(
        delta, all_alive(16), None, CodecConfig(rho=1.0, quantization="fp32", compression=compression)
    )
    decoded = to_torch(decode_update(encoded.payload, encoded.sha256).to_dense())
    for name, tensor in delta.items():
        assert torch.equal(decoded[name], tensor)
        assert torch.equal(encoded.residual[name], torch.zeros_like(tensor))


def test_int8_error_is_at_most_half_a_scale_per_row() -> None:
    delta = make_delta(32, seed=1)
    matrix = delta["m1.weight"]
    matrix[0] = 0.0  # an all-zero row: scale 0, nothing to send
    matrix[1] *= 1e-4  # tiny values: float16 subnormal scales
    matrix[2] *= 1e6  # large values, still within float16 scale range
    matrix[3, 5] = 1.0  # one outlier dominating its row
    encoded = encode_update(delta, all_alive(32), None, CodecConfig(rho=1.0))
    update = decode_update(encoded.payload)
    sent = update.tensors["m1.weight"]
    assert sent.rows is not None and 0 not in sent.rows.tolist()  # zero row skipped
    decoded = torch.from_numpy(sent.to_dense())
    for row in range(32):
        scale = fp16_round_up(float(matrix[row].abs().max()) / 127.0)
        error = float((decoded[row] - matrix[row]).abs().max())
        assert error <= scale / 2 * (1 + 1e-6) + 1e-30, (row, error, scale)
    # Vectors go whole in fp16 in int8 mode.
    assert torch.equal(torch.from_numpy(update.tensors["m1.bias"].to_dense()), delta["m1.bias"].half().float())
    # The residual is exactly what was not delivered.
    for name in delta:
        assert torch.equal(encoded.residual[name], delta[name] - torch.from_numpy(update.to_dense()[name]))


def test_fp16_rows_decode_to_the_rounded_values() -> None:
    delta = make_delta(8, seed=2)
    encoded = encode_update(delta, all_alive(8), None, CodecConfig(rho=1.0, quantization="fp16"))
    decoded = to_torch(decode_update(encoded.payload).to_dense())
    for name, tensor in delta.items():
        assert torch.equal(decoded[name], tensor.half().float())


def test_payload_is_deterministic_and_hashed() -> None:
    delta = make_delta(16, seed=3)
    first = encode_update(delta, all_alive(16))
    second = encode_update(dict(reversed(list(delta.items()))), all_alive(16))
    assert first.payload == second.payload
    assert first.sha256 == hashlib.sha256(first.payload).hexdigest()
    assert first.payload.startswith(framing.MAGIC)


def test_decoded_update_carries_codec_settings() -> None:
    config = CodecConfig(rho=0.3, quantization="fp16", compression="zlib")
    encoded = encode_update(make_delta(8), all_alive(8), None, config)
    assert decode_update(encoded.payload).codec == config


# --- row selection and error feedback -----------------------------------------------------------------


def test_rows_are_alive_top_k_and_dead_rows_are_never_sent() -> None:
    dim = 10
    delta = {name: torch.zeros(shape) for name, shape in fam_shapes(dim).items()}
    # Row i of m1 has norm i + 1, so the top ceil(0.3 * 10) = 3 alive rows are 9, 8, 7.
    delta["m1.weight"] = torch.arange(1.0, dim + 1).unsqueeze(1).repeat(1, dim)
    delta["m2.weight"] = torch.ones(dim, dim)
    alive = all_alive(dim)
    alive["m1.weight"][9] = False  # the largest row is dead: the next alive row takes its place
    alive["m2.weight"][:] = False
    config = CodecConfig(rho=0.3, quantization="fp32")
    residual = None
    for round_index in range(4):
        encoded = encode_update(delta, alive, residual, config)
        update = decode_update(encoded.payload)
        rows = update.tensors["m1.weight"].rows
        assert rows is not None
        assert 9 not in rows.tolist() and len(rows) == 3
        if round_index == 0:
            assert rows.tolist() == [6, 7, 8]
        assert update.tensors["m2.weight"].rows is not None and len(update.tensors["m2.weight"].rows) == 0
        assert encoded.stats.rows_sent == {"m1.weight": 3, "m2.weight": 0}
        residual = encoded.residual
    assert residual is not None
    # A dead row's pending change is dropped each round: its residual never grows.
    assert torch.equal(residual["m1.weight"][9], torch.zeros(dim))
    assert torch.equal(residual["m2.weight"], torch.zeros(dim, dim))


def test_dead_rows_never_occupy_upload_budget() -> None:
    # 8 of 40 rows dead with the largest updates, a budget of ceil(0.2 * 40) = 8: every round sends 8 alive
    # rows (the old ranking let the dead rows hold the top-k and sent almost nothing).
    dim = 40
    generator = torch.Generator().manual_seed(1)
    alive = all_alive(dim)
    dead = torch.arange(0, dim, 5)  # rows 0, 5, ..., 35
    for name in alive:
        alive[name][dead] = False
    config = CodecConfig(rho=0.2, quantization="int8")
    residual = None
    for _ in range(5):
        delta = {name: 0.01 * torch.randn(shape, generator=generator) for name, shape in fam_shapes(dim).items()}
        for name in alive:
            delta[name][dead] *= 1000.0
        encoded = encode_update(delta, alive, residual, config)
        update = decode_update(encoded.payload)
        for name in alive:
            rows = update.tensors[name].rows
            assert rows is not None and len(rows) == 8
            assert not set(rows.tolist()) & set(dead.tolist())
        residual = encoded.residual
    assert residual is not None
    assert all(float(residual[name][dead].abs().max()) == 0.0 for name in alive)


def test_first_round_sends_the_largest_alive_rows() -> None:
    dim = 10
    delta = {name: torch.zeros(shape) for name, shape in fam_shapes(dim).items()}
    delta["m1.weight"] = torch.arange(1.0, dim + 1).unsqueeze(1).repeat(1, dim)
    encoded = encode_update(delta, all_alive(dim), None, CodecConfig(rho=0.3, quantization="fp32"))
    rows = decode_update(encoded.payload).tensors["m1.weight"].rows
    assert rows is not None and rows.tolist() == [7, 8, 9]


@pytest.mark.parametrize("quantization", ["int8", "fp16", "fp32"])
def test_error_feedback_loses_nothing_of_alive_rows(quantization: Quantization) -> None:
    dim, rounds = 24, 6
    config = CodecConfig(rho=0.25, quantization=quantization)
    generator = torch.Generator().manual_seed(7)
    delivered = {name: torch.zeros(shape, dtype=torch.float64) for name, shape in fam_shapes(dim).items()}
    produced = {name: torch.zeros(shape, dtype=torch.float64) for name, shape in fam_shapes(dim).items()}
    dropped = {name: torch.zeros(shape, dtype=torch.float64) for name, shape in fam_shapes(dim).items()}
    residual = None
    for round_index in range(rounds):
        delta = make_delta(dim, seed=100 + round_index)
        alive = {name: torch.rand(dim, generator=generator) > 0.3 for name in FAM_MATRIX_NAMES}
        encoded = encode_update(delta, alive, residual, config)
        decoded = to_torch(decode_update(encoded.payload).to_dense())
        for name in delta:
            delivered[name] += decoded[name].double()
            produced[name] += delta[name].double()
            if name in alive:  # a dead row's pending change is dropped, by design
                total = delta[name].double() + (residual[name].double() if residual else 0.0)
                dropped[name][~alive[name]] += total[~alive[name]]
        residual = encoded.residual
    assert residual is not None
    for name in produced:
        torch.testing.assert_close(
            delivered[name] + residual[name].double() + dropped[name], produced[name], rtol=0, atol=1e-6
        )


def test_zero_delta_sends_no_rows() -> None:
    delta = {name: torch.zeros(shape) for name, shape in fam_shapes(8).items()}
    encoded = encode_update(delta, all_alive(8))
    assert encoded.stats.rows_sent == {"m1.weight": 0, "m2.weight": 0}
    decoded = decode_update(encoded.payload).to_dense()
    assert all(not array.any() for array in decoded.values())


# --- sizes --------------------------------------------------------------------------------------------


def test_d512_payload_fits_the_budget() -> None:
    """P1: a trained-FAM-like update for ViT-B-32 at default settings must be <= 128 KiB."""
    global_fam, local_fam = build_fam(512, seed=0), build_fam(512, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in local_fam.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 1e-3)
    local = fam_state(local_fam)
    delta = fam_delta(local, fam_state(global_fam))
    encoded = encode_update(delta, alive_rows_of(local_fam))
    reference = encode_dense_reference(local)
    print(
        f"\nD=512 sizes: dense fp32 {encoded.stats.dense_fp32_bytes} B, reference fp16+zlib {len(reference)} B, "
        f"codec {encoded.stats.payload_bytes} B (body {encoded.stats.raw_bytes} B raw)"
    )
    assert encoded.stats.rows_sent == {"m1.weight": 103, "m2.weight": 103}
    assert encoded.stats.payload_bytes == len(encoded.payload) <= 128 * KIB
    assert encoded.stats.dense_fp32_bytes == 4 * (2 * 512 * 512 + 4 * 512)
    assert len(reference) > 7 * encoded.stats.payload_bytes
    # The delta applies back to give the local FAM when everything is sent in fp32.
    exact = encode_update(delta, alive_rows_of(local_fam), None, CodecConfig(rho=1.0, quantization="fp32"))
    restored = apply_delta(fam_state(global_fam), to_torch(decode_update(exact.payload).to_dense()))
    for name, tensor in local.items():
        torch.testing.assert_close(restored[name], tensor, rtol=0, atol=1e-6)


# --- encoder input checks -----------------------------------------------------------------------------


def test_encoder_refuses_inconsistent_inputs() -> None:
    delta = make_delta(4)
    with pytest.raises(ValueError, match="NaN or Inf"):
        encode_update({**delta, "m1.bias": torch.full((4,), math.nan)}, all_alive(4))
    with pytest.raises(ValueError, match=r"alive_rows\['m2.weight'\]"):
        encode_update(delta, {"m1.weight": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="residual"):
        encode_update(delta, all_alive(4), {"m1.weight": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="float16 range"):
        encode_update({**delta, "m2.bias": torch.full((4,), 1e6)}, all_alive(4))
    with pytest.raises(ValueError, match="no tensors"):
        encode_update({}, {})


# --- malformed payloads -------------------------------------------------------------------------------

_PREFIX = struct.Struct("<4sHI")


@pytest.fixture(scope="module")
def valid() -> bytes:
    return encode_update(make_delta(8, seed=5), all_alive(8), None, CodecConfig(rho=0.5)).payload


def split(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, decompressed body) of a valid zstd payload."""
    _, _, header_len = _PREFIX.unpack_from(payload)
    header = json.loads(payload[_PREFIX.size : _PREFIX.size + header_len])
    body = zstandard.ZstdDecompressor().decompress(payload[_PREFIX.size + header_len :])
    return header, body


def frame(header: dict[str, Any] | bytes, compressed: bytes, version: int = framing.FORMAT_VERSION) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return _PREFIX.pack(framing.MAGIC, version, len(raw)) + raw + compressed


def rebuild(header: dict[str, Any], body: bytes) -> bytes:
    """A consistently framed payload (correct sizes and body digest) around a doctored header or body."""
    header = {k: v for k, v in header.items() if k not in ("body", "format_version")}
    return framing.pack(header, body, "zstd")


def tensor_entry(header: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in header["tensors"] if e["name"] == name)


def test_valid_payload_decodes(valid: bytes) -> None:
    assert set(decode_update(valid).tensors) == set(fam_shapes(8))


def test_bad_magic(valid: bytes) -> None:
    with pytest.raises(CorruptUpdate, match="not a FedMedCLIP update"):
        decode_update(b"PK\x03\x04" + valid[4:])


def test_unknown_format_version_names_both_versions(valid: bytes) -> None:
    doctored = valid[:4] + struct.pack("<H", 7) + valid[6:]
    with pytest.raises(CorruptUpdate, match=r"format version 7.*format version 1"):
        decode_update(doctored)


@pytest.mark.parametrize("cut", [0, 5, 12, 200, -1])
def test_truncated(valid: bytes, cut: int) -> None:
    with pytest.raises(CorruptUpdate, match="truncated"):
        decode_update(valid[:cut])


def test_trailing_bytes(valid: bytes) -> None:
    with pytest.raises(CorruptUpdate, match="trailing bytes"):
        decode_update(valid + b"\0")


def test_header_not_json() -> None:
    with pytest.raises(CorruptUpdate, match="not valid UTF-8 JSON"):
        decode_update(frame(b"{not json", b""))
    with pytest.raises(CorruptUpdate, match="must be a JSON object"):
        decode_update(frame(b"[1, 2]", b""))
    with pytest.raises(CorruptUpdate, match="not valid UTF-8 JSON"):
        decode_update(frame(b"\xff\xfe{}", b""))
    with pytest.raises(CorruptUpdate, match="not valid UTF-8 JSON"):
        decode_update(frame(b"[" * 200_000 + b"]" * 200_000, b""))  # nesting beyond the recursion limit
    with pytest.raises(CorruptUpdate, match="not valid UTF-8 JSON"):
        decode_update(frame(b'{"format_version": ' + b"9" * 5000 + b"}", b""))  # beyond int-parsing limits


def test_header_too_large() -> None:
    with pytest.raises(CorruptUpdate, match="exceeds the"):
        decode_update(_PREFIX.pack(framing.MAGIC, 1, framing.MAX_HEADER_BYTES + 1))


def test_expected_sha256_mismatch(valid: bytes) -> None:
    with pytest.raises(CorruptUpdate, match="sha256 mismatch"):
        decode_update(valid, expected_sha256="0" * 64)
    decode_update(valid, expected_sha256=hashlib.sha256(valid).hexdigest().upper())


def test_body_digest_mismatch(valid: bytes) -> None:
    damaged = valid[:-3] + bytes([valid[-3] ^ 0xFF]) + valid[-2:]
    with pytest.raises(CorruptUpdate, match="sha256 does not match"):
        decode_update(damaged)


def test_declared_decompression_bomb_is_refused_before_decompressing() -> None:
    body = bytes(4 << 20)
    payload = framing.pack({"byte_order": "little", "codec": CodecConfig().to_dict(), "tensors": []}, body, "zstd")
    with pytest.raises(CorruptUpdate, match="above the limit of 1048576"):
        decode_update(payload, max_decompressed_bytes=1 << 20)


@pytest.mark.parametrize("compression", ["zstd", "zlib"])
def test_undeclared_decompression_bomb_is_cut_off(compression: Compression) -> None:
    compressed = framing.compress(bytes(50 << 20), compression)  # 50 MiB of zeros, a few KiB compressed
    header = {
        "byte_order": "little",
        "codec": CodecConfig(compression=compression).to_dict(),
        "tensors": [],
        "format_version": 1,
        "body": {
            "compression": compression,
            "raw_bytes": 1000,  # the lie
            "compressed_bytes": len(compressed),
            "sha256": hashlib.sha256(compressed).hexdigest(),
        },
    }
    with pytest.raises(CorruptUpdate, match="more than the 1000 bytes"):
        framing.unpack(frame(header, compressed), 1 << 26)  # the framing's own, streamed cut-off
    # decode_update refuses the lie before decompressing: no tensor entry accounts for those 1000 bytes.
    with pytest.raises(CorruptUpdate, match="declares 1000 raw bytes, its tensor entries account for 0"):
        decode_update(frame(header, compressed))


def test_a_body_larger_than_the_runs_fam_shape_allows_is_refused_before_decompressing() -> None:
    shapes = fam_shapes(8)
    update = encode_update(
        {n: torch.ones(s) for n, s in shapes.items()},
        {n: torch.ones(8, dtype=torch.bool) for n in FAM_MATRIX_NAMES},
        None,
        CodecConfig(),
    )
    assert decode_update(update.payload, shapes=shapes).tensors.keys() == set(shapes)
    with pytest.raises(CorruptUpdate, match="shape"):
        decode_update(update.payload, shapes=fam_shapes(4))  # a run of width 4: the body cannot fit
    assert max_body_bytes(shapes) < 2000


def test_body_that_does_not_decompress() -> None:
    garbage = b"\x28\xb5\x2f\xfd" + bytes(range(60))
    header = {
        "byte_order": "little",
        "codec": CodecConfig().to_dict(),
        "tensors": [],
        "format_version": 1,
        "body": {
            "compression": "zstd",
            "raw_bytes": 10,
            "compressed_bytes": len(garbage),
            "sha256": hashlib.sha256(garbage).hexdigest(),
        },
    }
    with pytest.raises(CorruptUpdate, match="update body"):
        decode_update(frame(header, garbage))


Mutation = Callable[[dict[str, Any], bytearray], None]


def _set(path: tuple[str, ...], value: object) -> Mutation:
    """Set a header field; a path starting with a tensor name descends into that tensor's entry."""

    def mutate(header: dict[str, Any], body: bytearray) -> None:
        target: Any = tensor_entry(header, path[0]) if path[0].startswith("m") else header
        for key in path[1 if path[0].startswith("m") else 0 : -1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _write_indices(values: list[int]) -> Mutation:
    """Overwrite the row indices of m1.weight in the body."""

    def mutate(header: dict[str, Any], body: bytearray) -> None:
        part = tensor_entry(header, "m1.weight")["parts"]["indices"]
        data = np.asarray(values, dtype="<i4").tobytes()
        body[part["offset"] : part["offset"] + len(data)] = data

    return mutate


HEADER_CASES = [
    ("offset out of range", _set(("m1.weight", "parts", "values", "offset"), 10**9), "outside the"),
    (
        "wrong value size",
        _set(("m1.weight", "parts", "values", "length"), 7),
        "entries account for",
    ),  # caught before decompressing
    ("wrong dtype", _set(("m1.weight", "parts", "values", "dtype"), "float64"), "dtype 'float64'"),
    ("negative offset", _set(("m1.weight", "parts", "values", "offset"), -1), "'offset' must be an integer"),
    ("boolean length", _set(("m1.weight", "parts", "values", "length"), True), "'length' must be an integer"),
    ("unknown encoding", _set(("m1.weight", "encoding"), "rows-int4"), "unknown encoding 'rows-int4'"),
    ("missing part", _set(("m1.weight", "parts"), {"values": {}}), "needs parts"),
    ("bad shape", _set(("m1.weight", "shape"), [8, -8]), "shape must be"),
    ("huge shape", _set(("m1.weight", "shape"), [10**6, 10**6]), "larger than"),
    ("rows for a vector", _set(("m1.bias", "encoding"), "rows-int8"), "needs parts"),
    ("row_count too big", _set(("m1.weight", "row_count"), 9), "row_count 9 exceeds"),
    ("bad codec", _set(("codec",), {"rho": 5}), "codec settings are invalid"),
    ("no codec", _set(("codec",), None), "no 'codec' object"),
    ("byte order", _set(("byte_order",), "big"), "byte order"),
    ("tensors not a list", _set(("tensors",), {}), "no 'tensors' list"),
    ("entry not an object", _set(("tensors",), [3]), r"tensors\[0\] is not an object"),
    ("nameless entry", _set(("tensors",), [{"shape": [3]}]), "has no name"),
    ("row index out of range", _write_indices([0, 1, 2, 99]), "out of range"),
    ("negative row index", _write_indices([-1, 1, 2, 3]), "out of range"),
    ("duplicated row index", _write_indices([0, 1, 1, 3]), "listed twice"),
    ("unsorted row indices", _write_indices([3, 1, 2, 0]), "increasing order"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [(m, msg) for _, m, msg in HEADER_CASES], ids=[c[0] for c in HEADER_CASES]
)
def test_malformed_header_or_body(valid: bytes, mutate: Mutation, message: str) -> None:
    header, body = split(valid)
    doctored = bytearray(body)
    mutate(header, doctored)
    with pytest.raises(CorruptUpdate, match=message):
        decode_update(rebuild(header, bytes(doctored)))


def test_duplicate_tensor_names(valid: bytes) -> None:
    header, body = split(valid)
    entries = header["tensors"]
    assert isinstance(entries, list)
    header["tensors"] = [*entries, entries[0]]
    with pytest.raises(CorruptUpdate, match="twice"):
        decode_update(rebuild(header, body))


def test_header_disagreeing_with_prefix_version(valid: bytes) -> None:
    header, _ = split(valid)
    _, _, header_len = _PREFIX.unpack_from(valid)
    header["format_version"] = 2
    with pytest.raises(CorruptUpdate, match="disagrees with prefix version 1"):
        decode_update(frame(header, valid[_PREFIX.size + header_len :]))


def test_random_damage_only_ever_raises_corrupt_update(valid: bytes) -> None:
    """Fuzz: flips and cuts anywhere give a decoded update or CorruptUpdate, never another exception."""
    rng = random.Random(0)
    _, _, header_len = _PREFIX.unpack_from(valid)
    header_end = _PREFIX.size + header_len
    for trial in range(300):
        data = bytearray(valid)
        if trial % 3 == 0:
            data = data[: rng.randrange(len(data))]
        else:  # mostly inside the prefix and header, where parsing is exercised hardest
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(header_end if trial % 3 == 1 else len(data))
                data[position] = rng.randrange(256)
        with contextlib.suppress(CorruptUpdate):
            decode_update(bytes(data))


def test_reference_upload_is_fp16_zlib() -> None:
    state = make_delta(8)
    raw = zlib.decompress(encode_dense_reference(state))
    assert len(raw) == 2 * sum(t.numel() for t in state.values())
