"""Aggregation maths on hand-made examples, and refusal of every kind of bad update."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from fedmedclip.federation import aggregate as numpy_aggregate
from fedmedclip.federation.aggregate import SiteUpdate, validate_update
from fedmedclip.federation.arrays import to_torch
from fedmedclip.federation.codec import CodecConfig, decode_update, encode_update
from fedmedclip.federation.errors import UpdateRejected
from fedmedclip.federation.sparse import SparseTensor, SparseUpdate
from fedmedclip.model.fam import FAM_MATRIX_NAMES, fam_shapes


def aggregate(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
    """``aggregate`` (numpy) seen as torch tensors, as the simulation uses it; bit-level checks against the
    torch implementation are in test_vectors.py."""
    return to_torch(numpy_aggregate.aggregate(*args, **kwargs))


SHAPES = {"w": (3, 3), "b": (3,)}


def rows(indices: list[int], values: list[list[float]]) -> SparseTensor:
    return SparseTensor((3, 3), torch.tensor(indices, dtype=torch.int64), torch.tensor(values))


def vector(values: list[float]) -> SparseTensor:
    return SparseTensor((3,), None, torch.tensor(values))


def site(name: str, num_samples: int, **tensors: SparseTensor) -> SiteUpdate:
    return SiteUpdate(name, num_samples, SparseUpdate(dict(tensors)))


@pytest.fixture
def global_state() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(9.0).reshape(3, 3), "b": torch.tensor([1.0, 2.0, 3.0])}


@pytest.fixture
def updates() -> list[SiteUpdate]:
    # A sends rows 0 and 1, B rows 1 and 2; nobody else. B has three times A's samples.
    a = site("a", 1, w=rows([0, 1], [[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]), b=vector([4.0, 0.0, 0.0]))
    b = site("b", 3, w=rows([1, 2], [[0.0, 4.0, 0.0], [2.0, 2.0, 2.0]]), b=vector([0.0, 4.0, 0.0]))
    return [a, b]


def test_sample_weighted_mean_per_row(global_state: dict[str, torch.Tensor], updates: list[SiteUpdate]) -> None:
    new = aggregate(global_state, updates)
    expected_delta = torch.tensor(
        [
            [1.0, 1.0, 1.0],  # only A sent row 0: its delta, not diluted by B's silence
            [1.0, 3.0, 0.0],  # (1·[4,0,0] + 3·[0,4,0]) / 4
            [2.0, 2.0, 2.0],  # only B sent row 2
        ]
    )
    torch.testing.assert_close(new["w"], global_state["w"] + expected_delta, rtol=0, atol=0)
    torch.testing.assert_close(new["b"], global_state["b"] + torch.tensor([1.0, 3.0, 0.0]), rtol=0, atol=0)
    assert all(t.dtype == torch.float32 for t in new.values())


def test_uniform_weighting(global_state: dict[str, torch.Tensor], updates: list[SiteUpdate]) -> None:
    new = aggregate(global_state, updates, weighting="uniform")
    torch.testing.assert_close(new["w"][1], global_state["w"][1] + torch.tensor([2.0, 2.0, 0.0]), rtol=0, atol=0)
    torch.testing.assert_close(new["b"], global_state["b"] + torch.tensor([2.0, 2.0, 0.0]), rtol=0, atol=0)
    torch.testing.assert_close(new["w"][0], global_state["w"][0] + 1.0, rtol=0, atol=0)


def test_rows_nobody_sent_stay_unchanged(global_state: dict[str, torch.Tensor]) -> None:
    only_row_0 = site("c", 5, w=rows([0], [[9.0, 9.0, 9.0]]), b=vector([0.0, 0.0, 0.0]))
    no_matrix = site("d", 2, b=vector([0.0, 0.0, 0.0]))
    new = aggregate(global_state, [only_row_0, no_matrix])
    assert torch.equal(new["w"][1:], global_state["w"][1:])
    torch.testing.assert_close(new["w"][0], global_state["w"][0] + 9.0, rtol=0, atol=0)
    assert torch.equal(new["b"], global_state["b"])


def test_inputs_are_not_mutated(global_state: dict[str, torch.Tensor], updates: list[SiteUpdate]) -> None:
    global_before = copy.deepcopy(global_state)
    updates_before = copy.deepcopy(updates)
    new = aggregate(global_state, updates)
    for name, tensor in global_state.items():
        assert torch.equal(tensor, global_before[name])
        assert new[name] is not tensor
    for after, before in zip(updates, updates_before, strict=True):
        for name, sent in after.update.tensors.items():
            assert np.array_equal(sent.values, before.update.tensors[name].values)


def test_result_does_not_depend_on_update_order(global_state: dict[str, torch.Tensor]) -> None:
    generator = torch.Generator().manual_seed(0)
    many = [
        site(f"s{i}", i + 1, w=SparseTensor((3, 3), None, torch.randn(3, 3, generator=generator)), b=vector([0.1] * 3))
        for i in range(6)
    ]
    forward = aggregate(global_state, many)
    backward = aggregate(global_state, list(reversed(many)))
    assert all(torch.equal(forward[name], backward[name]) for name in forward)


def test_empty_and_duplicate_updates_are_errors(
    global_state: dict[str, torch.Tensor], updates: list[SiteUpdate]
) -> None:
    with pytest.raises(ValueError, match="no updates"):
        aggregate(global_state, [])
    with pytest.raises(ValueError, match="same site"):
        aggregate(global_state, [updates[0], updates[0]])
    with pytest.raises(ValueError, match="weighting"):
        aggregate(global_state, updates, weighting="median")  # type: ignore[arg-type]


def test_one_bad_update_refuses_the_whole_call(
    global_state: dict[str, torch.Tensor], updates: list[SiteUpdate]
) -> None:
    bad = site("mallory", 1, w=rows([0], [[math.inf, 0.0, 0.0]]), b=vector([0.0, 0.0, 0.0]))
    with pytest.raises(UpdateRejected) as caught:
        aggregate(global_state, [*updates, bad])
    assert (caught.value.site, caught.value.tensor) == ("mallory", "w")
    assert "'mallory'" in str(caught.value) and "'w'" in str(caught.value)


def test_norm_bound_applies_to_all_sent_values(global_state: dict[str, torch.Tensor]) -> None:
    update = site("a", 1, w=rows([0], [[3.0, 0.0, 0.0]]), b=vector([0.0, 4.0, 0.0]))  # L2 norm 5
    aggregate(global_state, [update], norm_bound=5.0)
    with pytest.raises(UpdateRejected, match=r"L2 norm 5 exceeds the bound 4\.9"):
        aggregate(global_state, [update], norm_bound=4.9)


GOOD_B = vector([0.0, 0.0, 0.0])
REJECTIONS: list[tuple[str, Callable[[], SiteUpdate], str | None, str]] = [
    ("unknown tensor", lambda: site("x", 1, b=GOOD_B, extra=vector([0.0])), "extra", "unknown tensor"),
    ("missing vector", lambda: site("x", 1, w=rows([0], [[0.0] * 3])), "b", "required vector tensor is missing"),
    (
        "wrong shape",
        lambda: site("x", 1, w=SparseTensor((3, 4), None, torch.zeros(3, 4)), b=GOOD_B),
        "w",
        r"shape \[3, 4\], expected \[3, 3\]",
    ),
    (
        "dense values of the wrong shape",
        lambda: site("x", 1, w=SparseTensor((3, 3), None, torch.zeros(9)), b=GOOD_B),
        "w",
        "dense values of shape",
    ),
    ("wrong row width", lambda: site("x", 1, w=rows([0], [[0.0] * 2]), b=GOOD_B), "w", "rows of width 3"),
    ("more values than rows", lambda: site("x", 1, w=rows([0], [[0.0] * 3] * 2), b=GOOD_B), "w", "for 1 rows"),
    ("row out of range", lambda: site("x", 1, w=rows([3], [[0.0] * 3]), b=GOOD_B), "w", "out of range"),
    ("negative row", lambda: site("x", 1, w=rows([-1], [[0.0] * 3]), b=GOOD_B), "w", "out of range"),
    ("duplicate rows", lambda: site("x", 1, w=rows([1, 1], [[0.0] * 3] * 2), b=GOOD_B), "w", "duplicates"),
    (
        "row indices not int64",
        lambda: site("x", 1, w=SparseTensor((3, 3), torch.tensor([0.0]), torch.zeros(1, 3)), b=GOOD_B),
        "w",
        "int64",
    ),
    (
        "rows for a vector",
        lambda: site("x", 1, b=SparseTensor((3,), torch.tensor([0]), torch.zeros(1, 1))),
        "b",
        "row-sparse values sent for a vector",
    ),
    (
        "integer values",
        lambda: site("x", 1, b=SparseTensor((3,), None, torch.zeros(3, dtype=torch.int32))),
        "b",
        "non-float dtype",
    ),
    ("nan", lambda: site("x", 1, b=vector([0.0, math.nan, 0.0])), "b", "NaN or Inf"),
    ("inf", lambda: site("x", 1, w=rows([2], [[0.0, -math.inf, 0.0]]), b=GOOD_B), "w", "NaN or Inf"),
    ("no samples", lambda: site("x", 0, b=GOOD_B), None, "num_samples must be >= 1"),
]


@pytest.mark.parametrize(("make", "tensor", "message"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_update_rejections_name_site_and_tensor(
    make: Callable[[], SiteUpdate], tensor: str | None, message: str
) -> None:
    bad = make()
    with pytest.raises(UpdateRejected, match=message) as caught:
        validate_update(bad.update, SHAPES, site=bad.site, num_samples=bad.num_samples)
    assert caught.value.site == "x"
    assert caught.value.tensor == tensor
    assert str(caught.value).startswith("update from site 'x' rejected")
    if tensor is not None:
        assert f"tensor {tensor!r}" in str(caught.value)


def test_validate_update_default_site_label() -> None:
    with pytest.raises(UpdateRejected, match=r"site '\?'"):
        validate_update(SparseUpdate({}), SHAPES)


def test_codec_output_aggregates_to_the_decoded_mean() -> None:
    """End to end: two sites' encoded FAM deltas, decoded and averaged, equal the hand-computed result."""
    dim = 16
    shapes = fam_shapes(dim)
    global_state = {name: torch.zeros(shape) for name, shape in shapes.items()}
    alive = {name: torch.ones(dim, dtype=torch.bool) for name in FAM_MATRIX_NAMES}
    decoded = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        delta = {name: torch.randn(shape, generator=generator) * 1e-2 for name, shape in shapes.items()}
        encoded = encode_update(delta, alive, None, CodecConfig(rho=0.5))
        decoded.append(decode_update(encoded.payload, encoded.sha256))
    new = aggregate(global_state, [SiteUpdate("s1", 10, decoded[0]), SiteUpdate("s2", 30, decoded[1])])
    for name in shapes:
        dense = [torch.from_numpy(update.to_dense()[name]).double() for update in decoded]
        if name in FAM_MATRIX_NAMES:
            sent = [update.tensors[name].rows for update in decoded]
            masks = [
                torch.zeros(dim, dtype=torch.float64).index_fill_(0, torch.from_numpy(r), 1.0)
                for r in sent
                if r is not None
            ]
            weights = 10 * masks[0] + 30 * masks[1]
            expected = (10 * dense[0] + 30 * dense[1]) / weights.clamp(min=1).unsqueeze(1)
        else:
            expected = (10 * dense[0] + 30 * dense[1]) / 40
        torch.testing.assert_close(new[name], expected.float(), rtol=1e-6, atol=1e-7)


def test_prevalidated_updates_are_averaged_without_rechecking():
    state = {"w": torch.zeros(2, 2)}
    update = SparseUpdate({"w": SparseTensor((2, 2), None, torch.ones(2, 2))})
    bad = SparseUpdate({"w": SparseTensor((2, 2), None, torch.full((2, 2), float("nan")))})
    assert torch.equal(aggregate(state, [SiteUpdate("a", 1, update)], prevalidated=True)["w"], torch.ones(2, 2))
    # The caller vouches for the inputs: a NaN it let through is not caught here (it is without the flag).
    assert torch.isnan(aggregate(state, [SiteUpdate("a", 1, bad)], prevalidated=True)["w"]).all()
