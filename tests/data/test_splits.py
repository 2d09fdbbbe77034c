from __future__ import annotations

from collections import Counter

import pytest

from fedmedclip.data.splits import split_indices

LABELS = [0] * 50 + [1] * 30 + [2] * 10 + [3] * 3 + [4] * 7


def test_every_index_in_exactly_one_part() -> None:
    split = split_indices(LABELS, seed=3)
    together = split.train + split.val + split.test
    assert sorted(together) == list(range(len(LABELS)))
    assert all(part == sorted(part) for part in split.parts().values())


def test_each_class_follows_the_fractions() -> None:
    split = split_indices(LABELS, fractions=(0.6, 0.2, 0.2))
    per_part = {name: Counter(LABELS[i] for i in part) for name, part in split.parts().items()}
    assert [per_part[name][0] for name in ("train", "val", "test")] == [30, 10, 10]
    assert [per_part[name][1] for name in ("train", "val", "test")] == [18, 6, 6]
    assert [per_part[name][2] for name in ("train", "val", "test")] == [6, 2, 2]


def test_small_classes_still_reach_every_part() -> None:
    split = split_indices(LABELS, fractions=(0.8, 0.1, 0.1))
    for part in split.parts().values():
        assert {LABELS[i] for i in part} == {0, 1, 2, 3, 4}
    three = [sum(LABELS[i] == 3 for i in part) for part in split.parts().values()]
    assert three == [1, 1, 1]


def test_tiny_classes_go_to_train_first_then_val() -> None:
    split = split_indices([0] * 10 + [1] + [2, 2])
    assert 10 in split.train
    assert len({11, 12} & set(split.train)) == 1 and len({11, 12} & set(split.val)) == 1


def test_same_seed_same_split_other_seed_other_split() -> None:
    assert split_indices(LABELS, seed=7) == split_indices(LABELS, seed=7)
    assert split_indices(LABELS, seed=7).test != split_indices(LABELS, seed=8).test


def test_adding_a_class_does_not_reshuffle_the_others() -> None:
    before = split_indices(LABELS, seed=1)
    after = split_indices([*LABELS, 5, 5, 5, 5, 5], seed=1)
    new = set(range(len(LABELS), len(LABELS) + 5))
    assert [i for i in after.test if i not in new] == before.test
    assert [i for i in after.train if i not in new] == before.train


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ((0.5, 0.5), "train, val, test"),
        ((0.8, 0.2, 0.0), "positive"),
        ((0.9, -0.1, 0.2), "positive"),
        ((0.6, 0.2, 0.3), "sum to 1"),
        ((float("nan"), 0.5, 0.5), "positive"),
    ],
)
def test_bad_fractions_are_refused(fractions: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_indices(LABELS, fractions=fractions)


def test_bad_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="index 2"):
        split_indices([0, 1, -1])
