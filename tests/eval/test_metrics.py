"""Tests for ragrec.eval.metrics, checked against pytrec_eval (trec_eval)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import pytrec_eval
from hypothesis import given, settings
from hypothesis import strategies as st

from ragrec.errors import ConfigError
from ragrec.eval.metrics import (
    MRR,
    NDCG,
    UNRANKED,
    AveragePrecision,
    HitRate,
    Metric,
    Precision,
    Recall,
    parse_metric,
    parse_metrics,
)

ALL_TYPES: tuple[type[Metric], ...] = (NDCG, Recall, HitRate, MRR, Precision, AveragePrecision)
IDS = [f"d{i:02d}" for i in range(15)]
FAST = settings(max_examples=200, deadline=None)

ranked_lists = st.lists(st.sampled_from(IDS), unique=True, max_size=len(IDS))
relevant_sets = st.sets(st.sampled_from(IDS), min_size=1, max_size=8)
graded = st.dictionaries(st.sampled_from(IDS), st.integers(1, 3), min_size=1, max_size=8)
cutoffs = st.integers(1, 20)
metric_objects = st.builds(
    lambda cls, k: cls(k), st.sampled_from(ALL_TYPES), st.none() | st.integers(1, 50)
)


def trec(ranked: Sequence[str], qrel: Mapping[str, int], measures: set[str]) -> dict[str, float]:
    """pytrec_eval's measures for one query, with strictly decreasing scores."""
    run = {"q": {doc: float(len(ranked) - i) for i, doc in enumerate(ranked)}}
    evaluator = pytrec_eval.RelevanceEvaluator({"q": dict(qrel)}, measures)
    result: dict[str, float] = evaluator.evaluate(run)["q"]
    return result


def binary(relevant: set[str]) -> dict[str, int]:
    return dict.fromkeys(relevant, 1)


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-4)


# --- fixed cases ---------------------------------------------------------------------

RANKED = ["a", "x", "b", "y", "c", "z"]
RELEVANT = {"a", "b", "c", "w"}


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (NDCG(3), (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))),
        (Recall(3), 2 / 4),
        (Recall(None), 3 / 4),
        (HitRate(1), 1.0),
        (HitRate(None), 1.0),
        (MRR(None), 1.0),
        (Precision(3), 2 / 3),
        (Precision(10), 3 / 10),
        (Precision(None), 3 / 6),
        (AveragePrecision(3), (1 + 2 / 3) / 4),
        (AveragePrecision(None), (1 + 2 / 3 + 3 / 5) / 4),
    ],
    ids=str,
)
def test_fixed_values(metric: Metric, expected: float) -> None:
    assert metric.compute(RANKED, RELEVANT) == pytest.approx(expected)


def test_mrr_beyond_cutoff_is_zero() -> None:
    assert MRR(2).compute(["x", "y", "a"], {"a"}) == 0.0
    assert MRR(3).compute(["x", "y", "a"], {"a"}) == pytest.approx(1 / 3)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_fixed_run_matches_pytrec_eval(k: int) -> None:
    ref = trec(RANKED, binary(RELEVANT), {f"ndcg_cut.{k}", f"recall.{k}", f"P.{k}", f"map_cut.{k}"})
    assert NDCG(k).compute(RANKED, RELEVANT) == approx(ref[f"ndcg_cut_{k}"])
    assert Recall(k).compute(RANKED, RELEVANT) == approx(ref[f"recall_{k}"])
    assert Precision(k).compute(RANKED, RELEVANT) == approx(ref[f"P_{k}"])
    assert AveragePrecision(k).compute(RANKED, RELEVANT) == approx(ref[f"map_cut_{k}"])
    rr = trec(RANKED[:k], binary(RELEVANT), {"recip_rank"})["recip_rank"]
    assert MRR(k).compute(RANKED, RELEVANT) == approx(rr)


def test_graded_ndcg_matches_pytrec_eval() -> None:
    qrel = {"a": 1, "b": 3, "c": 2, "w": 3, "x": 0}
    for k in (1, 2, 4, 10):
        ref = trec(RANKED, qrel, {f"ndcg_cut.{k}"})[f"ndcg_cut_{k}"]
        assert NDCG(k).compute(RANKED, qrel) == approx(ref)


def test_mapping_values_at_or_below_zero_are_not_relevant() -> None:
    assert Recall(None).compute(["a", "b"], {"a": 1.0, "b": 0.0, "c": -1.0}) == 1.0
    assert NDCG(None).compute(["b", "a"], {"a": 2.0, "b": 0}) == pytest.approx(1 / math.log2(3))


@pytest.mark.parametrize("metric_type", ALL_TYPES)
@pytest.mark.parametrize("relevant", [set(), {}, {"a": 0.0}], ids=["set", "dict", "zero-gain"])
def test_empty_relevant_scores_zero(metric_type: type[Metric], relevant: object) -> None:
    assert metric_type(5).compute(["a", "b"], relevant) == 0.0  # type: ignore[arg-type]


@pytest.mark.parametrize("metric_type", ALL_TYPES)
def test_empty_ranked_scores_zero(metric_type: type[Metric]) -> None:
    assert metric_type(5).compute([], {"a"}) == 0.0
    assert metric_type(None).compute([], {"a"}) == 0.0


def test_duplicate_ranked_id_is_named() -> None:
    with pytest.raises(ValueError, match="'b'"):
        NDCG(5).compute(["a", "b", "c", "b"], {"a"})


@pytest.mark.parametrize("gain", [math.nan, math.inf, "high"])
def test_bad_gain_is_rejected(gain: object) -> None:
    with pytest.raises(ValueError, match="gain"):
        NDCG(5).compute(["a"], {"a": gain})


def test_string_inputs_are_rejected() -> None:
    with pytest.raises(TypeError, match="ranked"):
        Recall(5).compute("abc", {"a"})
    with pytest.raises(TypeError, match="relevant"):
        Recall(5).compute(["a"], "a")


@pytest.mark.parametrize("k", [0, -1, 2.5, "10", True])
def test_bad_cutoff_at_construction(k: object) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        NDCG(k)  # type: ignore[arg-type]


def test_metric_objects_are_frozen_values() -> None:
    assert NDCG(10) == NDCG(np.int64(10))  # type: ignore[arg-type]
    assert NDCG(10) != Recall(10)
    assert len({NDCG(10), NDCG(10), MRR(None)}) == 2
    assert NDCG(np.int64(10)).k.__class__ is int  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        NDCG(10).k = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Metric(10)  # type: ignore[abstract]


# --- hypothesis against pytrec_eval --------------------------------------------------


@FAST
@given(ranked=ranked_lists, relevant=relevant_sets, k=cutoffs)
def test_matches_pytrec_eval_at_cutoff(ranked: list[str], relevant: set[str], k: int) -> None:
    ref = trec(ranked, binary(relevant), {f"ndcg_cut.{k}", f"recall.{k}", f"P.{k}", f"map_cut.{k}"})
    assert NDCG(k).compute(ranked, relevant) == approx(ref[f"ndcg_cut_{k}"])
    assert Recall(k).compute(ranked, relevant) == approx(ref[f"recall_{k}"])
    assert Precision(k).compute(ranked, relevant) == approx(ref[f"P_{k}"])
    assert AveragePrecision(k).compute(ranked, relevant) == approx(ref[f"map_cut_{k}"])
    rr = trec(ranked[:k], binary(relevant), {"recip_rank"})["recip_rank"]
    assert MRR(k).compute(ranked, relevant) == approx(rr)


@FAST
@given(ranked=ranked_lists, relevant=relevant_sets)
def test_matches_pytrec_eval_without_cutoff(ranked: list[str], relevant: set[str]) -> None:
    ref = trec(ranked, binary(relevant), {"ndcg", "map", "recip_rank"})
    assert NDCG(None).compute(ranked, relevant) == approx(ref["ndcg"])
    assert AveragePrecision(None).compute(ranked, relevant) == approx(ref["map"])
    assert MRR(None).compute(ranked, relevant) == approx(ref["recip_rank"])


@FAST
@given(ranked=ranked_lists, qrel=graded, k=st.none() | cutoffs)
def test_graded_ndcg_matches_pytrec_eval_hypothesis(
    ranked: list[str], qrel: dict[str, int], k: int | None
) -> None:
    measure = "ndcg" if k is None else f"ndcg_cut.{k}"
    key = "ndcg" if k is None else f"ndcg_cut_{k}"
    assert NDCG(k).compute(ranked, qrel) == approx(trec(ranked, qrel, {measure})[key])


# --- from_ranks ----------------------------------------------------------------------


@FAST
@given(
    metric=metric_objects,
    n_items=st.integers(1, 40),
    data=st.data(),
)
def test_from_ranks_agrees_with_compute(metric: Metric, n_items: int, data: st.DataObject) -> None:
    if isinstance(metric, Precision) and metric.k is None:
        return
    ranked = [f"i{j}" for j in range(n_items)]
    ranks = data.draw(st.lists(st.integers(1, n_items) | st.just(UNRANKED), max_size=10))
    targets = [ranked[r - 1] if r <= n_items else "absent" for r in ranks]
    expected = [metric.compute(ranked, {target}) for target in targets]
    got = metric.from_ranks(np.array(ranks, dtype=np.int64))
    assert got.dtype == np.float64
    assert got.shape == (len(ranks),)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("metric_type", ALL_TYPES)
def test_from_ranks_known_values(metric_type: type[Metric]) -> None:
    ranks = np.array([1, 2, 3, 4, UNRANKED])
    got = metric_type(3).from_ranks(ranks)
    assert got[3] == 0.0
    assert got[4] == 0.0
    if metric_type is NDCG:
        np.testing.assert_allclose(got[:3], [1, 1 / math.log2(3), 0.5])
    elif metric_type in (Recall, HitRate):
        np.testing.assert_allclose(got[:3], [1, 1, 1])
    elif metric_type is Precision:
        np.testing.assert_allclose(got[:3], [1 / 3] * 3)
    else:
        np.testing.assert_allclose(got[:3], [1, 1 / 2, 1 / 3])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint16, np.uint64])
def test_from_ranks_accepts_integer_dtypes(dtype: type[np.integer]) -> None:
    ranks = np.array([1, 2, 100], dtype=dtype)
    np.testing.assert_allclose(MRR(None).from_ranks(ranks), [1, 0.5, 0.01])
    big = np.array([np.iinfo(np.uint64).max], dtype=np.uint64)
    assert MRR(None).from_ranks(big).tolist() == [0.0]


def test_from_ranks_keeps_shape_and_handles_empty() -> None:
    assert NDCG(5).from_ranks(np.array([], dtype=np.int64)).shape == (0,)
    assert NDCG(5).from_ranks([]).dtype == np.float64
    assert NDCG(5).from_ranks(np.ones((2, 3), dtype=np.int64)).shape == (2, 3)


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_from_ranks_rejects_ranks_below_one(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"ranks.*got {bad}.*UNRANKED"):
        NDCG(10).from_ranks(np.array([3, bad, 1]))


@pytest.mark.parametrize("ranks", [np.array([1.0, 2.0]), np.array([True, False])])
def test_from_ranks_rejects_non_integer_dtype(ranks: np.ndarray) -> None:
    with pytest.raises(ValueError, match="ranks must be an integer array"):
        Recall(10).from_ranks(ranks)


def test_precision_without_cutoff_from_ranks_explains() -> None:
    with pytest.raises(ValueError, match="precision@10"):
        Precision(None).from_ranks(np.array([1, 2]))


# --- invariants ----------------------------------------------------------------------


@FAST
@given(
    metric=metric_objects,
    ranked=ranked_lists,
    relevant=st.sets(st.sampled_from(IDS), max_size=8) | graded,
)
def test_values_in_unit_interval_and_inputs_untouched(
    metric: Metric, ranked: list[str], relevant: set[str] | dict[str, int]
) -> None:
    ranked_before = list(ranked)
    relevant_before = copy.copy(relevant)
    value = metric.compute(ranked, relevant)
    assert 0.0 <= value <= 1.0
    assert ranked == ranked_before
    assert relevant == relevant_before


@FAST
@given(metric=metric_objects, ranks=st.lists(st.integers(1, 60) | st.just(UNRANKED), max_size=20))
def test_from_ranks_in_unit_interval_and_input_untouched(metric: Metric, ranks: list[int]) -> None:
    if isinstance(metric, Precision) and metric.k is None:
        return
    arr = np.array(ranks, dtype=np.int64)
    arr.setflags(write=False)
    values = metric.from_ranks(arr)
    assert np.all((values >= 0.0) & (values <= 1.0))
    assert arr.tolist() == ranks


@FAST
@given(
    metric_type=st.sampled_from([Recall, HitRate, MRR, AveragePrecision]),
    ranked=ranked_lists,
    relevant=relevant_sets,
    k=cutoffs,
)
def test_monotone_in_k(
    metric_type: type[Metric], ranked: list[str], relevant: set[str], k: int
) -> None:
    smaller = metric_type(k).compute(ranked, relevant)
    assert smaller <= metric_type(k + 1).compute(ranked, relevant)
    assert smaller <= metric_type(None).compute(ranked, relevant)


@FAST
@given(ranked=ranked_lists, relevant=relevant_sets, k=st.none() | cutoffs)
def test_single_relevant_hit_equals_recall(
    ranked: list[str], relevant: set[str], k: int | None
) -> None:
    one = {min(relevant)}
    assert HitRate(k).compute(ranked, one) == Recall(k).compute(ranked, one)


# --- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ndcg@10", NDCG(10)),
        ("NDCG@10", NDCG(10)),
        (" recall@20 ", Recall(20)),
        ("mrr", MRR(None)),
        ("mrr@5", MRR(5)),
        ("hit@1", HitRate(1)),
        ("hr@3", HitRate(3)),
        ("Hit_Rate@3", HitRate(3)),
        ("precision@7", Precision(7)),
        ("map@100", AveragePrecision(100)),
        ("map", AveragePrecision(None)),
        ("ndcg", NDCG(None)),
    ],
)
def test_parse_good(spec: str, expected: Metric) -> None:
    assert parse_metric(spec) == expected


@FAST
@given(metric=metric_objects)
def test_name_round_trips(metric: Metric) -> None:
    assert parse_metric(metric.name) == metric
    assert str(metric) == metric.name


def test_names() -> None:
    assert NDCG(10).name == "ndcg@10"
    assert MRR(None).name == "mrr"
    assert HitRate(5).name == "hit@5"
    assert AveragePrecision(3).name == "map@3"


def test_unknown_name_message() -> None:
    with pytest.raises(ConfigError) as info:
        parse_metric("ndgc@10")
    assert str(info.value) == (
        "metric 'ndgc@10' is not known; allowed: hit, map, mrr, ndcg, precision, recall; "
        "write it as 'ndcg@10'"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "ndgc@10",
        "ndcg@0",
        "ndcg@x",
        "ndcg@-1",
        "ndcg@",
        "ndcg@1.5",
        "ndcg@10@5",
        "@10",
        "",
        "   ",
        "auc@10",
        "recall@ten",
    ],
)
def test_parse_bad(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_metric(spec)
    message = str(info.value)
    assert repr(spec) in message
    assert "@10" in message


@pytest.mark.parametrize("spec", ["ndcg@0", "ndcg@x", "ndcg@-1"])
def test_bad_cutoff_message(spec: str) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        parse_metric(spec)


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(ConfigError, match="allowed: hit, map, mrr, ndcg, precision, recall"):
        parse_metric("auc")


def test_parse_non_string() -> None:
    with pytest.raises(ConfigError, match="10"):
        parse_metric(10)  # type: ignore[arg-type]


def test_parse_metrics() -> None:
    assert parse_metrics(["ndcg@10", "recall@20", "mrr"]) == (NDCG(10), Recall(20), MRR(None))
    assert parse_metrics([]) == ()
    assert parse_metrics(iter(["hit@5"])) == (HitRate(5),)


@pytest.mark.parametrize(
    ("specs", "repeated"),
    [(["ndcg@10", "NDCG@10"], "'NDCG@10'"), (["hit@10", "recall@5", "hr@10"], "'hr@10'")],
)
def test_parse_metrics_rejects_duplicates(specs: list[str], repeated: str) -> None:
    with pytest.raises(ConfigError, match=repeated):
        parse_metrics(specs)


def test_parse_metrics_rejects_single_string() -> None:
    with pytest.raises(ConfigError, match="'ndcg@10'"):
        parse_metrics("ndcg@10")


def test_parse_metrics_propagates_bad_spec() -> None:
    with pytest.raises(ConfigError, match="'bogus'"):
        parse_metrics(["ndcg@10", "bogus"])


# --- hit rate and from_ranks against pytrec_eval -------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_fixed_run_hit_rate_matches_pytrec_eval(k: int) -> None:
    ref = trec(RANKED, binary(RELEVANT), {f"success.{k}"})[f"success_{k}"]
    assert HitRate(k).compute(RANKED, RELEVANT) == approx(ref)
    late = ["x", "y", "z", "a"]
    assert HitRate(k).compute(late, {"a"}) == approx(
        trec(late, {"a": 1}, {f"success.{k}"})[f"success_{k}"]
    )


@FAST
@given(ranked=ranked_lists, relevant=relevant_sets, k=cutoffs)
def test_hit_rate_matches_pytrec_eval_success(
    ranked: list[str], relevant: set[str], k: int
) -> None:
    ref = trec(ranked, binary(relevant), {f"success.{k}"})[f"success_{k}"]
    assert HitRate(k).compute(ranked, relevant) == approx(ref)
    # without a cutoff: success at a cutoff no shorter than the list
    whole = trec(ranked, binary(relevant), {f"success.{len(IDS)}"})[f"success_{len(IDS)}"]
    assert HitRate(None).compute(ranked, relevant) == approx(whole)


@FAST
@given(
    ranks=st.lists(st.integers(1, len(IDS)) | st.just(UNRANKED), min_size=1, max_size=8),
    k=cutoffs,
)
def test_from_ranks_matches_pytrec_eval(ranks: list[int], k: int) -> None:
    """The single-target path the runner uses, user by user against trec_eval."""
    measures = {f"ndcg_cut.{k}", f"recall.{k}", f"P.{k}", f"map_cut.{k}", f"success.{k}"}
    arr = np.array(ranks, dtype=np.int64)
    got = {
        "ndcg": NDCG(k).from_ranks(arr),
        "recall": Recall(k).from_ranks(arr),
        "precision": Precision(k).from_ranks(arr),
        "map": AveragePrecision(k).from_ranks(arr),
        "hit": HitRate(k).from_ranks(arr),
        "mrr": MRR(k).from_ranks(arr),
    }
    for user, rank in enumerate(ranks):
        target = IDS[rank - 1] if rank <= len(IDS) else "absent"
        ref = trec(IDS, {target: 1}, measures)
        rr = trec(IDS[:k], {target: 1}, {"recip_rank"})["recip_rank"]
        expected = {
            "ndcg": ref[f"ndcg_cut_{k}"],
            "recall": ref[f"recall_{k}"],
            "precision": ref[f"P_{k}"],
            "map": ref[f"map_cut_{k}"],
            "hit": ref[f"success_{k}"],
            "mrr": rr,
        }
        for name, values in got.items():
            assert values[user] == approx(expected[name]), (name, rank, k)
