"""The secure encoding adds up: ten sites' FAM deltas, masked, summed, unmasked and applied (docs/design.md §6.4)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmedclip.federation.fam_bytes import fam_to_bytes, initial_fam
from fedmedclip.model.fam import FAM_MATRIX_NAMES, FAM_TENSOR_NAMES
from fedmedclip.secagg import encoding
from fedmedclip.secagg.config import SecureAggregationConfig
from fedmedclip.secagg.protocol import Directory, RoundParams, SecAggClient, SecAggError, unmask_sum

DIM = 16
CONFIG = SecureAggregationConfig(enabled=True, clip_norm=0.5, coordinate_bound=0.02, precision_bits=8, weight_cap=40)


def site_deltas(n: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        delta = {
            name: rng.normal(0, 0.002, (DIM, DIM) if name in FAM_MATRIX_NAMES else (DIM,)) for name in FAM_TENSOR_NAMES
        }
        out[f"site-{i:02d}"] = delta
    return out


def alive_all() -> dict[str, np.ndarray]:
    return {name: np.ones(DIM, dtype=bool) for name in encoding.MATRIX_NAMES}


def secure_round(
    encoded: dict[str, np.ndarray],
    bits: int,
    length: int,
    threshold: int,
    drop_before_input: set[str],
    silent_at_unmask: set[str],
) -> np.ndarray:
    params = RoundParams("run-x", 4, threshold, bits, length)
    clients = {site: SecAggClient(site, params) for site in encoded}
    advertised = [c.advertise() for c in clients.values()]
    directory = Directory(params, advertised)
    inbox: dict[str, list] = {site: [] for site in clients}
    for client in clients.values():
        for item in client.share_keys(advertised):
            inbox[item.receiver].append(item)
    masked = {
        site: client.masked_input(inbox[site], encoded[site])
        for site, client in clients.items()
        if site not in drop_before_input
    }
    shared = {site: {item.sender for item in inbox[site]} for site in masked}
    revealed = {
        site: clients[site].unmask(sorted(masked), sorted(drop_before_input))
        for site in masked
        if site not in silent_at_unmask
    }
    return unmask_sum(directory, shared, masked, revealed)


def test_the_layout_names_match_the_fam_and_the_row_subset_is_public_and_seeded() -> None:
    assert encoding.TENSOR_NAMES == FAM_TENSOR_NAMES
    assert set(encoding.MATRIX_NAMES) == set(FAM_MATRIX_NAMES)
    a = encoding.round_layout("run-x", 3, 512, 0.2)
    b = encoding.round_layout("run-x", 3, 512, 0.2)
    c = encoding.round_layout("run-x", 4, 512, 0.2)
    assert all(np.array_equal(a.rows[n], b.rows[n]) for n in encoding.MATRIX_NAMES)
    assert not np.array_equal(a.rows["m1.weight"], c.rows["m1.weight"])
    assert len(a.rows["m1.weight"]) == 103 and a.length == 2 * 103 * 512 + 4 * 512 + 1


@pytest.mark.parametrize("dropped", [set(), {"site-01", "site-05", "site-08"}])
def test_ten_sites_sum_exactly_and_land_within_the_quantisation_bound(dropped: set[str]) -> None:
    """Exact integer sum; 3 of 10 sites dropping after masked input still leave it exact."""
    layout = encoding.round_layout("run-x", 4, DIM, 0.25)
    deltas = site_deltas(10)
    fixed = CONFIG.fixed_point(len(deltas))
    samples = {site: 5 + 7 * i for i, site in enumerate(deltas)}  # some above the cap of 40
    encoded = {
        site: encoding.encode_site(
            delta, None, alive_all(), layout, CONFIG, encoding.site_weight(CONFIG, samples[site], "samples")
        )
        for site, delta in deltas.items()
    }
    total = secure_round(
        {s: e.residues(fixed) for s, e in encoded.items()},
        fixed.bits,
        layout.length,
        6,
        set(),
        silent_at_unmask=dropped,
    )
    exact = sum(e.integers for e in encoded.values())
    assert np.array_equal(fixed.to_signed(total), exact)
    decoded = encoding.decode_sum(total, layout, CONFIG, fixed)
    weights = {s: min(samples[s], CONFIG.weight_cap) for s in deltas}
    assert decoded.weight_sum == sum(weights.values())
    # The float weighted mean of what each site sent (the values are inside the clip and clamp ranges here).
    assert not any(e.clipped or e.clamped for e in encoded.values())
    reference = sum(layout.flatten(deltas[s]) * weights[s] for s in deltas) / sum(weights.values())
    got = np.concatenate([decoded.mean[n].ravel() for n in (*encoding.MATRIX_NAMES, *encoding.VECTOR_NAMES)])
    assert np.max(np.abs(got - reference)) <= CONFIG.scale / 2 + 1e-12


def test_dropping_after_share_keys_removes_the_site_and_fewer_than_t_reveal_nothing() -> None:
    layout = encoding.round_layout("run-x", 4, DIM, 0.25)
    deltas = site_deltas(10, seed=2)
    fixed = CONFIG.fixed_point(10)
    encoded = {s: encoding.encode_site(d, None, alive_all(), layout, CONFIG, 3) for s, d in deltas.items()}
    gone = {"site-00", "site-03", "site-09"}
    total = secure_round({s: e.residues(fixed) for s, e in encoded.items()}, fixed.bits, layout.length, 6, gone, set())
    assert np.array_equal(fixed.to_signed(total), sum(e.integers for s, e in encoded.items() if s not in gone))
    with pytest.raises(SecAggError, match="threshold"):
        secure_round(
            {s: e.residues(fixed) for s, e in encoded.items()},
            fixed.bits,
            layout.length,
            6,
            set(),
            silent_at_unmask={f"site-{i:02d}" for i in range(5)},
        )


def test_error_feedback_keeps_everything_not_sent_and_dead_rows_go_as_zeros_and_are_dropped() -> None:
    layout = encoding.round_layout("run-x", 1, DIM, 0.25)
    delta = site_deltas(1, seed=3)["site-00"]
    delta["m1.weight"][layout.rows["m1.weight"][0]] = 5.0  # far beyond clip and clamp
    alive = alive_all()
    dead = int(layout.rows["m2.weight"][1])
    alive["m2.weight"][dead] = False
    out = encoding.encode_site(delta, None, alive, layout, CONFIG, 1)
    assert out.clipped and out.clamped >= 1
    sent = layout.unflatten(out.integers[:-1].astype(np.float64) * CONFIG.scale)
    assert np.all(sent["m2.weight"][1] == 0)  # the dead row's coordinates are zeros on the wire
    for name in encoding.TENSOR_NAMES:  # sent + residual = total on alive rows, coordinate by coordinate
        rebuilt = out.residual[name].astype(np.float64)
        if name in encoding.MATRIX_NAMES:
            rebuilt[layout.rows[name]] += sent[name]
        else:
            rebuilt += sent[name]
        expected = delta[name].copy()
        if name == "m2.weight":
            expected[dead] = 0.0
        assert np.allclose(rebuilt, expected, atol=1e-6)
    # As in plain mode, a dead row's leftover is dropped rather than carried (docs/design.md §3.8).
    assert np.all(out.residual["m2.weight"][dead] == 0)


def test_bits_cover_the_worst_case_sum_and_fam_bytes_match_the_torch_writer() -> None:
    for sites in (2, 3, 10, 100, 1000):
        bits = CONFIG.bits_for(sites)
        assert sites * CONFIG.max_abs_per_site < 1 << (bits - 1)
        assert sites * CONFIG.max_abs_per_site >= 1 << (bits - 2)  # and no bigger than needed
    fam = initial_fam(DIM, seed=1)
    data = fam_to_bytes(fam)
    arrays = encoding.fam_arrays_from_bytes(data, DIM)
    assert encoding.fam_arrays_to_bytes(arrays) == data
    assert np.array_equal(arrays["m1.weight"], fam["m1.weight"])
    with pytest.raises(ValueError, match="shape"):
        encoding.fam_arrays_from_bytes(data, DIM + 1)


def test_config_derives_degree_and_threshold_and_refuses_nonsense() -> None:
    default = SecureAggregationConfig(enabled=True)
    assert default.round_degree(5) is None and default.round_threshold(5) == 4
    assert default.round_degree(100) is not None and default.round_degree(100) < 99
    assert SecureAggregationConfig(degree="all").round_degree(100) is None
    assert SecureAggregationConfig.from_dict(default.to_dict()) == default
    with pytest.raises(ValueError, match="threshold must be"):
        SecureAggregationConfig(threshold=1)
    with pytest.raises(ValueError, match="row_fraction"):
        SecureAggregationConfig(row_fraction=0)
    with pytest.raises(ValueError, match="unknown secure_aggregation settings: bits"):
        SecureAggregationConfig.from_dict({"bits": 20})
