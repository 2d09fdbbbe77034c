"""The numpy codec and aggregation reproduce, bit for bit, what the torch implementation produced.

``vectors/`` holds updates encoded by the torch code (int8/fp16/fp32, zstd/zlib/none, dead rows,
residuals) with the decoded tensors and aggregates it computed (``vectors/generate.py``). These tests use
no torch, as the aggregator does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.codec import CodecConfig, decode_update, encode_update
from fedmedclip.federation.fam_bytes import fam_from_bytes, fam_to_bytes

VECTORS = Path(__file__).parent / "vectors"
META = json.loads((VECTORS / "meta.json").read_text())
SITES = sorted(META["sites"])


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    with np.load(VECTORS / "inputs.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(VECTORS / "expected.npz") as data:
        return {key: data[key] for key in data.files}


def _same_bits(actual: np.ndarray, wanted: np.ndarray) -> bool:
    return actual.dtype == wanted.dtype and actual.shape == wanted.shape and actual.tobytes() == wanted.tobytes()


def _global() -> dict[str, np.ndarray]:
    return fam_from_bytes((VECTORS / "global.safetensors").read_bytes(), META["dim"])


def test_fam_bytes_round_trip_is_byte_identical() -> None:
    data = (VECTORS / "global.safetensors").read_bytes()
    assert fam_to_bytes(fam_from_bytes(data)) == data


@pytest.mark.parametrize("site", SITES)
def test_decode_matches_torch(site: str, inputs: dict[str, np.ndarray]) -> None:
    info = META["sites"][site]
    update = decode_update((VECTORS / f"{site}.bin").read_bytes(), info["sha256"])
    assert update.codec == CodecConfig(**info["codec"])
    for name, array in update.to_dense().items():
        assert _same_bits(array, inputs[f"{site}/decoded/{name}"]), name


@pytest.mark.parametrize("site", SITES)
def test_encode_matches_torch(site: str, inputs: dict[str, np.ndarray]) -> None:
    """The same delta, alive rows and residual give the same payload bytes and the same next residual."""
    info = META["sites"][site]
    names = sorted({key.split("/")[2] for key in inputs if key.startswith(f"{site}/delta/")})
    delta = {name: inputs[f"{site}/delta/{name}"] for name in names}
    alive = {name: inputs[f"{site}/alive/{name}"] for name in ("m1.weight", "m2.weight")}
    residual = {name: inputs[f"{site}/residual_in/{name}"] for name in names} if info["residual"] else None
    encoded = encode_update(delta, alive, residual, CodecConfig(**info["codec"]))
    assert encoded.payload == (VECTORS / f"{site}.bin").read_bytes()
    for name in names:
        assert _same_bits(encoded.residual[name], inputs[f"{site}/residual_out/{name}"]), name


@pytest.mark.parametrize("label", sorted(META["aggregates"]))
def test_aggregate_matches_torch(label: str, expected: dict[str, np.ndarray]) -> None:
    spec = META["aggregates"][label]
    updates = [
        SiteUpdate(
            site,
            META["sites"][site]["num_samples"],
            decode_update((VECTORS / f"{site}.bin").read_bytes(), META["sites"][site]["sha256"]),
        )
        for site in reversed(spec["sites"])  # arrival order must not matter
    ]
    result = aggregate(_global(), updates, spec["weighting"])
    assert set(result) == {key.split("/", 1)[1] for key in expected if key.startswith(f"{label}/")}
    for name, array in result.items():
        assert _same_bits(array, expected[f"{label}/{name}"]), name
