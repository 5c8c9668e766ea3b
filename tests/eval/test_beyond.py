"""Tests for ragrec.eval.beyond: hand-computed cases, edge cases and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ragrec.data import Catalog
from ragrec.errors import ConfigError
from ragrec.eval.beyond import (
    PAD,
    coverage,
    genre_features,
    head_items,
    intra_list_diversity,
    latency_percentiles,
    long_tail_share,
    novelty,
)

FAST = settings(max_examples=100, deadline=None)
TOP = np.array([[0, 1, 2], [1, 3, PAD], [PAD, PAD, PAD]], dtype=np.int64)
COUNTS = np.array([50, 30, 10, 5, 5, 0])  # 6 items, 100 interactions


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


# --- coverage ------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "expected"), [(1, 2 / 6), (2, 3 / 6), (3, 4 / 6), (50, 4 / 6)])
def test_coverage_hand_computed(k: int, expected: float) -> None:
    assert coverage(TOP, 6, k) == pytest.approx(expected)


def test_coverage_edge_cases() -> None:
    assert coverage(np.full((3, 4), PAD), 5, 4) == 0.0
    assert coverage(np.empty((0, 4), dtype=np.int64), 5, 4) == 0.0
    assert coverage(np.array([[2, 0, 1]]), 3, 10) == 1.0  # one user, k > K


# --- novelty -------------------------------------------------------------------------


def test_novelty_hand_computed() -> None:
    counts = np.array([4, 2, 1, 0])  # 4 training users; item 3 unseen -> counted once
    top = np.array([[0, 1], [2, 3], [1, PAD]])
    per_user = [(0 + 1) / 2, (2 + 2) / 2, 1.0]  # -log2(4/4), -log2(2/4), -log2(1/4)
    assert novelty(top, counts, 4, 2) == pytest.approx(np.mean(per_user))
    assert novelty(top, counts, 4, 1) == pytest.approx(np.mean([0.0, 2.0, 1.0]))


def test_novelty_unseen_item_is_capped_at_log2_users() -> None:
    assert novelty(np.array([[3]]), np.array([4, 2, 1, 0]), 8, 5) == pytest.approx(3.0)


def test_novelty_all_padding_is_nan() -> None:
    assert math.isnan(novelty(np.full((2, 3), PAD), np.array([1, 1]), 2, 3))


def test_novelty_rejects_counts_above_users() -> None:
    with pytest.raises(ValueError, match=r"item_counts\[1\] = 9 exceeds n_train_users=4"):
        novelty(np.array([[0]]), np.array([1, 9]), 4, 1)


# --- head / long tail ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("share", "head"),
    [
        (0.2, [0]),  # 50 >= 20
        (0.5, [0]),  # 50 >= 50: exactly reaching the share is enough
        (0.51, [0, 1]),  # 80 >= 51
        (0.8, [0, 1]),
        (0.85, [0, 1, 2]),
        (0.99, [0, 1, 2, 3, 4]),  # never the zero-count item
    ],
)
def test_head_items_hand_computed(share: float, head: list[int]) -> None:
    assert np.flatnonzero(head_items(COUNTS, head_share=share)).tolist() == head


def test_head_items_ties_by_catalog_position_and_order_free() -> None:
    counts = np.array([5, 10, 10, 5])  # total 30; 0.3 * 30 = 9 -> first of the two 10s
    assert np.flatnonzero(head_items(counts, head_share=0.3)).tolist() == [1]
    assert not head_items(np.zeros(4)).any()


def test_long_tail_share_hand_computed() -> None:
    # head at 0.2 = {0}; user 0: [0, 1, 2] -> 2/3 tail; user 1: [1, 3] -> 1; user 2 skipped
    assert long_tail_share(TOP, COUNTS, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert long_tail_share(TOP, COUNTS, 1) == pytest.approx((0 + 1) / 2)
    # head at 0.8 = {0, 1}: user 0 -> 1/3, user 1 -> 1/2
    assert long_tail_share(TOP, COUNTS, 3, head_share=0.8) == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert math.isnan(long_tail_share(np.full((1, 2), PAD), COUNTS, 2))


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5, math.nan, "0.2", True])
def test_head_share_out_of_range(share: object) -> None:
    with pytest.raises(ConfigError, match="head_share"):
        long_tail_share(TOP, COUNTS, 3, head_share=share)  # type: ignore[arg-type]


# --- intra-list diversity -------------------------------------------------------------

FEATURES = np.array(
    [
        [1.0, 0.0],  # 0
        [1.0, 0.0],  # 1: same as 0
        [0.0, 1.0],  # 2: orthogonal to 0
        [1.0, 1.0],  # 3: 45 degrees
        [0.0, 0.0],  # 4: no features
    ]
)


def test_ild_hand_computed() -> None:
    top = np.array([[0, 1, 2], [0, 3, PAD], [4, 4, PAD], [2, PAD, PAD]])
    user0 = ((1 - 1) + (1 - 0) + (1 - 0)) / 3
    user1 = 1 - 1 / math.sqrt(2)
    user2 = 1.0  # zero rows have similarity 0, even with each other
    assert intra_list_diversity(top, FEATURES, 3) == pytest.approx((user0 + user1 + user2) / 3)
    assert intra_list_diversity(top, FEATURES, 2) == pytest.approx((0 + user1 + user2) / 3)


def test_ild_needs_two_items() -> None:
    assert math.isnan(intra_list_diversity(np.array([[0, PAD], [1, PAD]]), FEATURES, 2))
    assert math.isnan(intra_list_diversity(np.array([[0, 1, 2]]), FEATURES, 1))
    assert intra_list_diversity(np.array([[0, 2]]), FEATURES, 99) == pytest.approx(1.0)


def test_ild_is_scale_invariant_and_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    feats = rng.random((20, 4))
    top = rng.integers(0, 20, size=(7, 5))
    expected = intra_list_diversity(top, feats, 5)
    assert intra_list_diversity(top, feats * 3.0, 5) == pytest.approx(expected)
    monkeypatch.setattr("ragrec.eval.beyond._ILD_BLOCK", 2)
    assert intra_list_diversity(top, feats, 5) == pytest.approx(expected)


def test_ild_rejects_bad_features() -> None:
    with pytest.raises(ValueError, match="2-D"):
        intra_list_diversity(TOP, np.ones(6), 3)
    with pytest.raises(ValueError, match="finite"):
        intra_list_diversity(TOP, np.full((6, 2), np.nan), 3)


# --- genre features -----------------------------------------------------------------


def test_genre_features_from_catalog() -> None:
    catalog = Catalog(
        item_ids=np.array([10, 20, 30]),
        titles=np.array(["a", "b", "c"], dtype=object),
        categories=(("Drama", "Comedy"), (), ("Comedy",)),
    )
    feats = genre_features(catalog)
    np.testing.assert_array_equal(feats, [[1, 1], [0, 0], [1, 0]])  # Comedy, Drama
    assert feats.dtype == np.float64
    fixed = genre_features(catalog, genres=["Drama", "Horror"])
    np.testing.assert_array_equal(fixed, [[1, 0], [0, 0], [0, 0]])
    top = np.array([[0, 2]])
    assert intra_list_diversity(top, feats, 2) == pytest.approx(1 - 1 / math.sqrt(2))
    with pytest.raises(ConfigError, match="Drama"):
        genre_features(catalog, genres=["Drama", "Drama"])


# --- latency -------------------------------------------------------------------------


def test_latency_percentiles() -> None:
    seconds = np.arange(1, 101, dtype=np.float64)
    got = latency_percentiles(seconds)
    assert list(got) == ["p50", "p90", "p95", "p99"]
    assert got == pytest.approx(
        dict(zip(got, np.percentile(seconds, [50, 90, 95, 99]), strict=True))
    )
    assert latency_percentiles([0.5], (50, 99.9)) == {"p50": 0.5, "p99.9": 0.5}


@pytest.mark.parametrize(
    ("seconds", "percentiles", "match"),
    [
        ([], (50,), "empty"),
        ([1.0, math.nan], (50,), "finite"),
        ([-1.0], (50,), ">= 0"),
        ([1.0], (101,), "outside"),
    ],
)
def test_latency_percentiles_errors(
    seconds: list[float], percentiles: tuple[int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        latency_percentiles(seconds, percentiles)


# --- validation ----------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -3, 2.0, True])
def test_bad_k(k: object) -> None:
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        coverage(TOP, 6, k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("top", "match"),
    [
        (np.array([0, 1]), "2-D"),
        (np.array([[0.0, 1.0]]), "integer"),
        (np.array([[0, 6]]), r"top\[0, 1\] = 6"),
        (np.array([[0, -2]]), r"top\[0, 1\] = -2"),
    ],
)
def test_bad_top(top: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        coverage(top, 6, 2)


def test_bad_counts() -> None:
    with pytest.raises(ValueError, match="1-D"):
        long_tail_share(TOP, COUNTS[None, :], 3)
    with pytest.raises(ValueError, match=">= 0"):
        head_items(np.array([1, -1]))


# --- invariants ----------------------------------------------------------------------

N_ITEMS = 12
tops = hnp.arrays(
    np.int64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(-1, N_ITEMS - 1)
)
counts_st = hnp.arrays(np.int64, N_ITEMS, elements=st.integers(0, 20))


@FAST
@given(top=tops, counts=counts_st, k=st.integers(1, 8), share=st.floats(0.05, 0.95))
def test_ranges_and_inputs_untouched(
    top: np.ndarray, counts: np.ndarray, k: int, share: float
) -> None:
    top_ro, counts_ro = _readonly(top), _readonly(counts)
    feats = _readonly(np.random.default_rng(1).random((N_ITEMS, 3)))
    cov = coverage(top_ro, N_ITEMS, k)
    nov = novelty(top_ro, counts_ro, 20, k)
    lts = long_tail_share(top_ro, counts_ro, k, head_share=share)
    ild = intra_list_diversity(top_ro, feats, k)
    assert 0.0 <= cov <= 1.0
    if (top[:, :k] != PAD).any():
        assert 0.0 <= nov <= math.log2(20) + 1e-12
        assert 0.0 <= lts <= 1.0
    else:
        assert math.isnan(nov)
        assert math.isnan(lts)
    assert math.isnan(ild) or -1e-12 <= ild <= 1.0 + 1e-12
    np.testing.assert_array_equal(top_ro, top)
    np.testing.assert_array_equal(counts_ro, counts)


@FAST
@given(top=tops, k=st.integers(1, 8))
def test_coverage_monotone_in_k(top: np.ndarray, k: int) -> None:
    assert coverage(top, N_ITEMS, k) <= coverage(top, N_ITEMS, k + 1)


@FAST
@given(counts=counts_st, share=st.floats(0.01, 0.99))
def test_head_is_shortest_prefix(counts: np.ndarray, share: float) -> None:
    head = head_items(counts, head_share=share)
    total = counts.sum()
    if total == 0:
        assert not head.any()
        return
    held = counts[head].sum()
    assert held >= share * total * (1 - 1e-9)
    # every head item is at least as popular as every tail item
    if head.any() and (~head).any():
        assert counts[head].min() >= counts[~head].max()
    # dropping the least popular head item falls below the share
    assert held - counts[head].min() < share * total
