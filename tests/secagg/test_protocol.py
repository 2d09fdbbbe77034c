"""A whole secure round between in-memory parties: exact sums, dropouts, refusals, nothing single-site."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmedclip.secagg import graph
from fedmedclip.secagg.fixedpoint import FixedPoint, required_bits
from fedmedclip.secagg.protocol import (
    Directory,
    RoundParams,
    SecAggClient,
    SecAggError,
    SecretKind,
    unmask_sum,
)
from tests.secagg.test_primitives import chi_square_critical

LENGTH = 4096


def make_round(n: int, threshold: int, degree: int | None = None) -> tuple[RoundParams, FixedPoint, list[SecAggClient]]:
    bits = required_bits(127, n)
    params = RoundParams("run-1", 3, threshold, bits, LENGTH, degree, b"public-seed")
    fp = FixedPoint(bits=bits, scale=1 / 127, max_abs=127)
    return params, fp, [SecAggClient(f"site-{i:02d}", params) for i in range(n)]


def run_round(
    clients: list[SecAggClient], inputs: dict[str, np.ndarray], drop_after_shares: set[str]
) -> tuple[np.ndarray, dict[str, np.ndarray], Directory]:
    advertised = [c.advertise() for c in clients]
    directory = Directory(clients[0].params, advertised)
    outbox = {c.site: c.share_keys(advertised) for c in clients}
    inbox: dict[str, list] = {c.site: [] for c in clients}
    for sealed in outbox.values():
        for item in sealed:
            inbox[item.receiver].append(item)
    shared = {site: {item.sender for item in items} for site, items in inbox.items()}
    masked = {c.site: c.masked_input(inbox[c.site], inputs[c.site]) for c in clients if c.site not in drop_after_shares}
    survivors = sorted(masked)
    revealed = {c.site: c.unmask(survivors, sorted(drop_after_shares)) for c in clients if c.site in masked}
    total = unmask_sum(directory, {s: shared[s] for s in survivors}, masked, revealed)
    return total, masked, directory


@pytest.mark.parametrize("degree", [None, 4])
def test_ten_sites_unmask_to_the_exact_integer_sum(degree: int | None) -> None:
    _params, fp, clients = make_round(10, threshold=4, degree=degree)
    rng = np.random.default_rng(0)
    floats = {c.site: rng.uniform(-1, 1, LENGTH) for c in clients}
    weights = {c.site: float(rng.integers(1, 5)) for c in clients}
    inputs = {site: fp.encode(values * weights[site] / 4) for site, values in floats.items()}
    total, _, _ = run_round(clients, inputs, set())
    exact = sum(fp.quantise(values * weights[site] / 4) for site, values in floats.items())
    assert np.array_equal(fp.to_signed(total), exact)
    # ...and within the quantisation bound of the float weighted sum: half a step per site.
    reference = sum(values * weights[site] / 4 for site, values in floats.items())
    assert np.max(np.abs(fp.decode(total) - reference)) <= 10 * fp.scale / 2 + 1e-12


def test_three_of_ten_sites_dropping_after_sharing_keys_leave_the_sum_exact() -> None:
    _params, fp, clients = make_round(10, threshold=5)
    rng = np.random.default_rng(1)
    inputs = {c.site: fp.encode(rng.uniform(-1, 1, LENGTH)) for c in clients}
    dropped = {"site-01", "site-04", "site-08"}
    total, _, _ = run_round(clients, inputs, dropped)
    survivors_sum = sum(fp.to_signed(v) for site, v in inputs.items() if site not in dropped)
    assert np.array_equal(fp.to_signed(total), survivors_sum)


def test_too_few_survivors_fail_clearly_on_both_sides() -> None:
    params, _fp, clients = make_round(5, threshold=4)
    advertised = [c.advertise() for c in clients]
    for c in clients:
        c.share_keys(advertised)
    for c in clients:
        c._masked_with = frozenset()
    with pytest.raises(SecAggError, match="only 3 survivors"):
        clients[0].unmask(["site-00", "site-01", "site-02"], ["site-03", "site-04"])
    directory = Directory(params, advertised)
    masked = {c.site: np.zeros(LENGTH, dtype=np.uint64) for c in clients[:3]}
    with pytest.raises(SecAggError, match="only 3 masked inputs"):
        unmask_sum(directory, {}, masked, {})


def test_a_site_reveals_once_and_never_both_secrets_of_one_peer() -> None:
    _params, _fp, clients = make_round(6, threshold=3)
    advertised = [c.advertise() for c in clients]
    outbox = [item for c in clients for item in c.share_keys(advertised)]
    me = clients[0]
    me.masked_input([i for i in outbox if i.receiver == me.site], np.zeros(LENGTH, dtype=np.uint64))
    alive = [c.site for c in clients[:4]]
    with pytest.raises(SecAggError, match="both survive and drop"):
        me.unmask(alive, ["site-03", "site-04", "site-05"])
    with pytest.raises(SecAggError, match="omit a neighbour"):
        me.unmask(alive, ["site-04"])
    revealed = me.unmask(alive, ["site-04", "site-05"])
    kinds = {item.owner: item.kind for item in revealed}
    assert len(kinds) == len(revealed) == 6
    assert {o for o, k in kinds.items() if k is SecretKind.SELF_SEED} == set(alive)
    assert {o for o, k in kinds.items() if k is SecretKind.MASK_KEY} == {"site-04", "site-05"}
    with pytest.raises(SecAggError, match="already revealed"):
        me.unmask(clients_sites := [c.site for c in clients], [])
    assert clients_sites


def test_masked_inputs_are_uniform_and_unrelated_to_the_plaintext() -> None:
    params, fp, clients = make_round(5, threshold=3)
    # The most structured input there is: every coordinate zero except a visible ramp.
    inputs = {c.site: fp.encode(np.linspace(-1, 1, LENGTH) * 0) for c in clients}
    inputs["site-00"] = fp.encode(np.linspace(-1, 1, LENGTH))
    total, masked, _ = run_round(clients, inputs, set())
    assert np.array_equal(fp.to_signed(total), fp.to_signed(inputs["site-00"]))
    for values in masked.values():
        scaled = (values.astype(np.float64) / (1 << params.bits) * 64).astype(np.int64)
        counts = np.bincount(scaled, minlength=64)
        expected = LENGTH / 64
        assert float(((counts - expected) ** 2 / expected).sum()) < chi_square_critical(63)
    plain = fp.to_signed(inputs["site-00"]).astype(np.float64)
    masked_view = masked["site-00"].astype(np.float64)
    assert abs(np.corrcoef(plain, masked_view)[0, 1]) < 0.1


def test_secagg_plus_work_per_site_grows_with_degree_not_n() -> None:
    n = 100
    degree = graph.suggested_degree(n)
    _params, _fp, clients = make_round(n, threshold=degree // 2 + 1, degree=degree)
    advertised = [c.advertise() for c in clients]
    sealed = clients[0].share_keys(advertised)
    assert len(sealed) == degree < n - 1
    assert degree <= 2 * math.ceil(1.5 * math.log2(n))
