"""Invariants of kcore and the splits, on small random Interactions (hypothesis)."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragrec.data import (
    Interactions,
    MovieLens,
    kcore,
    leave_one_out,
    random_split,
    temporal_split,
)
from ragrec.errors import ConfigError

FAST = settings(max_examples=150, deadline=None)


@st.composite
def interactions(
    draw: st.DrawFn, *, max_rows: int = 40, max_users: int = 6, max_items: int = 8
) -> Interactions:
    """Random rows; ``values`` holds each row's original position, to trace rows.

    Timestamps come from a small range so that ties are common; ids are ints or
    (sometimes) text like ``"u3"``, which sorts differently from ints.
    """
    n = draw(st.integers(0, max_rows))
    n_users = draw(st.integers(1, max_users))
    n_items = draw(st.integers(1, max_items))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    max_time = draw(st.sampled_from([0, 3, 10, 10**9]))
    stamps = draw(st.lists(st.integers(0, max_time), min_size=n, max_size=n))
    user_ids: np.ndarray = np.array(users, dtype=np.int64)
    item_ids: np.ndarray = np.array(items, dtype=np.int64)
    if draw(st.booleans()):
        user_ids = np.array([f"u{u}" for u in users], dtype=object)
    if draw(st.booleans()):
        item_ids = np.array([f"i{i}" for i in items], dtype=object)
    return Interactions(
        user_ids=user_ids,
        item_ids=item_ids,
        values=np.arange(n, dtype=np.float64),
        timestamps=np.array(stamps, dtype=np.int64),
    )


def row_ids(part: Interactions) -> list[int]:
    return [int(v) for v in part.values]


def rows(inter: Interactions) -> list[tuple[Any, Any, int, int]]:
    """(user, item, timestamp, original position) per row."""
    return list(
        zip(
            inter.user_ids.tolist(),
            inter.item_ids.tolist(),
            inter.timestamps.tolist(),
            row_ids(inter),
            strict=True,
        )
    )


def assert_rows_of(part: Interactions, whole: Interactions) -> None:
    """Every row of ``part`` is the row of ``whole`` at its original position."""
    original = rows(whole)
    for row in rows(part):
        assert original[row[3]] == row


def assert_partition(parts: list[Interactions], whole: Interactions) -> None:
    """The parts hold every row of ``whole`` exactly once, unchanged."""
    for part in parts:
        assert_rows_of(part, whole)
    ids = sorted(i for part in parts for i in row_ids(part))
    assert ids == list(range(len(whole)))
    assert sum(len(p) for p in parts) == len(whole)


# kcore -----------------------------------------------------------------------------------


def brute_force_core_size(inter: Interactions, user_k: int, item_k: int) -> int:
    """Rows of the largest sub-table induced by a user set x item set meeting both bounds."""
    pairs = list(zip(inter.user_ids.tolist(), inter.item_ids.tolist(), strict=True))
    users = sorted(set(inter.user_ids.tolist()))
    items = sorted(set(inter.item_ids.tolist()))
    best = 0
    for nu in range(len(users) + 1):
        for us in itertools.combinations(users, nu):
            user_set = set(us)
            for ni in range(len(items) + 1):
                for its in itertools.combinations(items, ni):
                    item_set = set(its)
                    kept = [(u, i) for u, i in pairs if u in user_set and i in item_set]
                    if len(kept) <= best:
                        continue
                    by_user = Counter(u for u, _ in kept)
                    by_item = Counter(i for _, i in kept)
                    if all(by_user[u] >= user_k for u in user_set) and all(
                        by_item[i] >= item_k for i in item_set
                    ):
                        best = len(kept)
    return best


@FAST
@given(inter=interactions(), k=st.integers(0, 4))
def test_kcore_holds_and_is_a_fixed_point(inter: Interactions, k: int) -> None:
    core = kcore(inter, k)

    assert_rows_of(core, inter)
    assert row_ids(core) == sorted(row_ids(core))  # original order
    if len(core):
        assert min(Counter(core.user_ids.tolist()).values()) >= k
        assert min(Counter(core.item_ids.tolist()).values()) >= k
    again = kcore(core, k)
    assert row_ids(again) == row_ids(core)
    # rows whose user and item both survive are all kept
    users, items = set(core.user_ids.tolist()), set(core.item_ids.tolist())
    induced = [p for u, i, _, p in rows(inter) if u in users and i in items]
    assert induced == row_ids(core)
    if k == 0:
        assert len(core) == len(inter)


@settings(max_examples=100, deadline=None)
@given(
    inter=interactions(max_rows=18, max_users=4, max_items=4),
    user_k=st.integers(1, 3),
    item_k=st.integers(1, 3),
)
def test_kcore_is_the_largest_core(inter: Interactions, user_k: int, item_k: int) -> None:
    core = kcore(inter, user_k=user_k, item_k=item_k)
    if len(core):
        assert min(Counter(core.user_ids.tolist()).values()) >= user_k
        assert min(Counter(core.item_ids.tolist()).values()) >= item_k
    assert len(core) == brute_force_core_size(inter, user_k, item_k)


@FAST
@given(inter=interactions(), user_k=st.integers(0, 4), item_k=st.integers(0, 4))
def test_kcore_not_iterative_filters_items_then_users_once(
    inter: Interactions, user_k: int, item_k: int
) -> None:
    once = kcore(inter, user_k=user_k, item_k=item_k, iterative=False)
    item_counts = Counter(inter.item_ids.tolist())
    after_items = [r for r in rows(inter) if item_counts[r[1]] >= item_k]
    user_counts = Counter(r[0] for r in after_items)
    expected = [r[3] for r in after_items if user_counts[r[0]] >= user_k]
    assert row_ids(once) == expected


def test_kcore_rejects_negative_thresholds() -> None:
    inter = Interactions(
        user_ids=np.array([1]), item_ids=np.array([1]), values=np.ones(1), timestamps=np.zeros(1)
    )
    with pytest.raises(ConfigError, match="user_k=-1"):
        kcore(inter, user_k=-1)
    with pytest.raises(ConfigError, match="k=-2"):
        kcore(inter, -2)


# leave_one_out ---------------------------------------------------------------------------


@FAST
@given(inter=interactions(), min_train=st.integers(0, 3))
def test_leave_one_out_targets_are_each_users_last_rows(
    inter: Interactions, min_train: int
) -> None:
    split = leave_one_out(inter, min_train=min_train)

    assert_partition([split.train, split.validation, split.test], inter)
    by_user: dict[Any, list[tuple[int, Any]]] = {}
    for u, i, t, _ in rows(inter):
        by_user.setdefault(u, []).append((t, i))
    eligible = sorted(u for u, r in by_user.items() if len(r) >= min_train + 2)

    # one validation and one test row per eligible user, in user order
    assert split.test.user_ids.tolist() == eligible
    assert split.validation.user_ids.tolist() == eligible
    train_rows: dict[Any, list[tuple[int, Any]]] = {}
    for u, i, t, _ in rows(split.train):
        train_rows.setdefault(u, []).append((t, i))
    tests = {u: (t, i) for u, i, t, _ in rows(split.test)}
    vals = {u: (t, i) for u, i, t, _ in rows(split.validation)}
    for user, user_rows in by_user.items():
        ordered = sorted(user_rows)
        if user not in eligible:
            assert user not in tests
            assert user not in vals
            assert sorted(train_rows[user]) == ordered
            continue
        assert tests[user] == ordered[-1]  # max by (timestamp, item id)
        assert vals[user] == ordered[-2]
        assert vals[user] <= tests[user]
        assert all(r <= vals[user] for r in train_rows.get(user, []))
        assert len(train_rows.get(user, [])) == len(user_rows) - 2 >= min_train


@FAST
@given(inter=interactions())
def test_leave_one_out_default_users_below_three_rows_get_no_targets(
    inter: Interactions,
) -> None:
    split = leave_one_out(inter)
    counts = Counter(inter.user_ids.tolist())
    assert set(split.test.user_ids.tolist()) == {u for u, c in counts.items() if c >= 3}
    assert len(split.train) + len(split.validation) + len(split.test) == len(inter)
    assert len(split.validation) == len(split.test)


def test_leave_one_out_breaks_time_ties_by_item_id() -> None:
    inter = Interactions(
        user_ids=np.array([1, 1, 1, 1]),
        item_ids=np.array([30, 10, 20, 5]),
        values=np.arange(4.0),
        timestamps=np.array([7, 7, 7, 1]),
    )
    split = leave_one_out(inter)
    assert split.test.item_ids.tolist() == [30]
    assert split.validation.item_ids.tolist() == [20]
    assert sorted(split.train.item_ids.tolist()) == [5, 10]


def test_leave_one_out_rejects_negative_min_train() -> None:
    inter = Interactions(
        user_ids=np.array([1]), item_ids=np.array([1]), values=np.ones(1), timestamps=np.zeros(1)
    )
    with pytest.raises(ConfigError, match="min_train=-1"):
        leave_one_out(inter, min_train=-1)


# temporal_split --------------------------------------------------------------------------


@FAST
@given(inter=interactions(), fraction=st.floats(0.01, 0.99))
def test_temporal_split_train_before_test(inter: Interactions, fraction: float) -> None:
    if len(inter) == 0:
        with pytest.raises(ConfigError, match="empty"):
            temporal_split(inter, test_fraction=fraction)
        return
    split = temporal_split(inter, test_fraction=fraction)

    assert_partition([split.train, split.test], inter)
    assert len(split.test) >= 1
    if len(split.train):
        assert split.train.timestamps.max() < split.test.timestamps.min()
    for part in (split.train, split.test):
        assert row_ids(part) == sorted(row_ids(part))
    if len(set(inter.timestamps.tolist())) == len(inter):  # no ties: the fraction holds
        assert abs(len(split.test) - fraction * len(inter)) <= 1


@FAST
@given(inter=interactions(), cutoff=st.integers(-1, 12))
def test_temporal_split_at_cutoff(inter: Interactions, cutoff: int) -> None:
    split = temporal_split(inter, cutoff=cutoff)
    assert_partition([split.train, split.test], inter)
    assert (split.train.timestamps < cutoff).all()
    assert (split.test.timestamps >= cutoff).all()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_temporal_split_rejects_bad_fraction(fraction: float) -> None:
    inter = Interactions(
        user_ids=np.array([1]), item_ids=np.array([1]), values=np.ones(1), timestamps=np.zeros(1)
    )
    with pytest.raises(ConfigError, match="test_fraction"):
        temporal_split(inter, test_fraction=fraction)


# random_split ----------------------------------------------------------------------------


@FAST
@given(inter=interactions(), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**32))
def test_random_split_is_seeded_and_loses_nothing(
    inter: Interactions, fraction: float, seed: int
) -> None:
    split = random_split(inter, test_fraction=fraction, rng=seed)

    assert_partition([split.train, split.test], inter)
    assert len(split.test) == round(len(inter) * fraction)
    for part in (split.train, split.test):
        assert row_ids(part) == sorted(row_ids(part))  # original order
    same = random_split(inter, test_fraction=fraction, rng=seed)
    assert row_ids(same.test) == row_ids(split.test)
    from_generator = random_split(inter, test_fraction=fraction, rng=np.random.default_rng(seed))
    assert row_ids(from_generator.test) == row_ids(split.test)


@FAST
@given(inter=interactions(max_rows=60), fraction=st.floats(0.05, 0.95))
def test_random_split_seeds_differ(inter: Interactions, fraction: float) -> None:
    n_test = round(len(inter) * fraction)
    if math.comb(len(inter), n_test) < 1000:
        return  # too few possible splits for distinct seeds to differ reliably
    tests = {
        tuple(row_ids(random_split(inter, test_fraction=fraction, rng=s).test)) for s in range(5)
    }
    assert len(tests) > 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, 2.0])
def test_random_split_rejects_bad_fraction(fraction: float) -> None:
    inter = Interactions(
        user_ids=np.array([1]), item_ids=np.array([1]), values=np.ones(1), timestamps=np.zeros(1)
    )
    with pytest.raises(ConfigError, match="test_fraction"):
        random_split(inter, test_fraction=fraction, rng=0)


# real data -------------------------------------------------------------------------------


def test_kcore_on_ml_latest_small(ml_small: MovieLens) -> None:
    core = kcore(ml_small.interactions, 5)
    assert core.n_users == 610
    assert core.n_items == 3_650
    assert len(core) == 90_274
    assert kcore(core, 5).values.tolist() == core.values.tolist()


def test_leave_one_out_on_ml_latest_small(ml_small: MovieLens) -> None:
    split = leave_one_out(kcore(ml_small.interactions, 5))
    assert len(split.test) == len(split.validation) == 610  # every user has >= 5 rows
    assert len(split.train) == 90_274 - 2 * 610
    assert split.test.user_ids.tolist() == list(range(1, 611))
