"""Shamir sharing, fixed-point rings, bit packing, the mask stream and the neighbour graph."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedmedclip.secagg import aead, graph, keys, shamir
from fedmedclip.secagg.fixedpoint import FixedPoint, add_mod, required_bits
from fedmedclip.secagg.packing import pack, packed_size, unpack
from fedmedclip.secagg.prg import mask_stream


def chi_square_critical(df: int, z: float = 4.753) -> float:
    """Wilson–Hilferty upper quantile of χ²(df); z = 4.753 is a one-sided tail of 1e-6."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_any_threshold_subset_of_shares_recovers_the_secret() -> None:
    secret = keys.KeyPair.generate().private
    shares = shamir.split(secret, threshold=3, xs=[1, 2, 3, 4, 5])
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine(subset, 3, len(secret)) == secret


def test_fewer_than_threshold_shares_are_refused_and_reveal_a_different_value() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, threshold=3, xs=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="cannot recover"):
        shamir.combine(shares[:2], 3, 32)
    # Interpolating two points as if the threshold were 2 gives an unrelated field element.
    with pytest.raises(ValueError, match="do not belong"):
        shamir.combine(shares[:2], 2, 32)


def test_share_bytes_round_trip_and_reject_garbage() -> None:
    share = shamir.split(b"\x01" * 32, 2, [7, 9])[0]
    assert shamir.Share.from_bytes(share.to_bytes()) == share
    with pytest.raises(ValueError):
        shamir.Share.from_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="out of range"):
        shamir.Share.from_bytes(b"\x00\x00" + b"\xff" * 66)


def test_fixed_point_sums_of_n_sites_decode_exactly_within_the_planned_bits() -> None:
    sites, max_abs = 100, 127
    bits = required_bits(max_abs, sites)
    fp = FixedPoint(bits=bits, scale=0.01, max_abs=max_abs)
    rng = np.random.default_rng(0)
    values = [rng.integers(-max_abs, max_abs + 1, 1000) * 0.01 for _ in range(sites)]
    values[0][:] = -max_abs * 0.01  # the extreme that must still fit
    total = np.zeros(1000, dtype=np.uint64)
    for v in values:
        total = add_mod(total, fp.encode(v), bits)
    assert np.array_equal(fp.to_signed(total), sum(fp.quantise(v) for v in values))
    with pytest.raises(ValueError, match="encodable range"):
        fp.encode(np.array([(max_abs + 1) * 0.01]))
    with pytest.raises(ValueError, match="non-finite"):
        fp.encode(np.array([np.nan]))


def test_packing_round_trips_and_costs_bits_per_value() -> None:
    rng = np.random.default_rng(1)
    for bits in (1, 7, 19, 32):
        values = rng.integers(0, 1 << bits, 1001, dtype=np.uint64)
        data = pack(values, bits)
        assert len(data) == packed_size(1001, bits) == math.ceil(1001 * bits / 8)
        assert np.array_equal(unpack(data, bits, 1001), values)
    with pytest.raises(ValueError, match="expected"):
        unpack(b"\x00" * 3, 19, 2)
    with pytest.raises(ValueError, match="does not fit"):
        pack(np.array([1 << 19], dtype=np.uint64), 19)


def test_mask_stream_is_deterministic_per_key_and_uniform() -> None:
    key = keys.derive(b"secret", keys.PURPOSE_MASK, b"run|1")
    first, again = mask_stream(key, 200_000, 19), mask_stream(key, 200_000, 19)
    assert np.array_equal(first, again)
    assert int(first.max()) < 1 << 19
    other = mask_stream(keys.derive(b"secret", keys.PURPOSE_MASK, b"run|2"), 200_000, 19)
    assert not np.array_equal(first, other)
    counts = np.bincount((first & 0xFF).astype(np.int64), minlength=256)
    expected = first.size / 256
    assert float(((counts - expected) ** 2 / expected).sum()) < chi_square_critical(255)


def test_pairwise_agreement_is_symmetric_and_bound_to_purpose_and_round() -> None:
    a, b = keys.KeyPair.generate(), keys.KeyPair.generate()
    assert keys.agree(a.private, b.public, keys.PURPOSE_MASK, b"r|1") == keys.agree(
        b.private, a.public, keys.PURPOSE_MASK, b"r|1"
    )
    assert keys.agree(a.private, b.public, keys.PURPOSE_MASK, b"r|1") != keys.agree(
        a.private, b.public, keys.PURPOSE_SHARES, b"r|1"
    )
    assert keys.agree(a.private, b.public, keys.PURPOSE_MASK, b"r|1") != keys.agree(
        a.private, b.public, keys.PURPOSE_MASK, b"r|2"
    )
    with pytest.raises(ValueError):
        keys.agree(a.private, b"\x00" * 31, keys.PURPOSE_MASK, b"r|1")


def test_sealed_shares_open_only_with_the_right_key_and_context() -> None:
    key = keys.derive(b"k", keys.PURPOSE_SHARES, b"r|1")
    sealed = aead.seal(key, b"share", b"a->b")
    assert aead.open_sealed(key, sealed, b"a->b") == b"share"
    with pytest.raises(aead.DecryptionFailed):
        aead.open_sealed(key, sealed, b"a->c")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(aead.DecryptionFailed):
        aead.open_sealed(key, tampered, b"a->b")


def test_harary_graph_is_regular_symmetric_and_seeded() -> None:
    sites = [f"site-{i:03d}" for i in range(100)]
    degree = graph.suggested_degree(100)
    assert degree == 2 * math.ceil(1.5 * math.log2(100))
    links = graph.neighbours(sites, degree, b"seed-1")
    assert {len(linked) for linked in links.values()} == {degree}
    assert all(site in links[other] for site, linked in links.items() for other in linked)
    assert graph.neighbours(sites, degree, b"seed-1") == links
    assert graph.neighbours(sites, degree, b"seed-2") != links
    full = graph.neighbours(sites[:5], None, b"")
    assert all(len(linked) == 4 for linked in full.values())


def test_a_corrupt_share_beyond_the_threshold_is_detected() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, threshold=3, xs=[1, 2, 3, 4, 5])
    assert shamir.combine(shares, 3, 32) == secret  # the two extra shares agree with the first three
    forged = [*shares[:4], shamir.Share(shares[4].x, (shares[4].y + 1) % shamir.PRIME)]
    with pytest.raises(ValueError, match="does not lie on the polynomial"):
        shamir.combine(forged, 3, 32)
