"""Tests for ragrec.tuning's example building and config validation (no model)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from tests.tuning.conftest import popular_first

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.tuning import (
    FeedbackSignal,
    TuneConfig,
    TuneExample,
    build_examples,
    holdout_rows,
    parse_tune_config,
)


def _sequence(logs: Interactions, catalog: Catalog, user: int) -> list[int]:
    rows = np.flatnonzero(logs.user_ids == user)
    rows = rows[np.argsort(logs.timestamps[rows], kind="stable")]
    return catalog.positions(logs.item_ids[rows]).tolist()


def test_target_once_history_before_it(catalog: Catalog, logs: Interactions) -> None:
    cfg = TuneConfig(max_examples=None, examples_per_user=5, n_candidates=10)
    examples = build_examples(catalog, logs, candidates=popular_first(catalog), config=cfg)
    assert len(examples) == 6 * 5
    for ex in examples:
        seq = _sequence(logs, catalog, ex.user_id)
        target = ex.candidates[ex.target]
        assert len(ex.candidates) == 10
        assert len(set(ex.candidates)) == 10
        assert ex.candidates.count(target) == 1
        t = seq.index(target)
        # the history is exactly the items before the target: never it, never later ones
        assert list(ex.history) == seq[:t]
        assert not set(ex.candidates) & set(ex.history)
        assert ex.kind == "positive"
        assert ex.source == "log"


def test_hard_negatives_come_from_the_retriever(catalog: Catalog, logs: Interactions) -> None:
    cfg = TuneConfig(max_examples=None, n_candidates=5)
    ex = build_examples(catalog, logs, candidates=popular_first(catalog), config=cfg)[0]
    wrong = sorted(p for i, p in enumerate(ex.candidates) if i != ex.target)
    expected = [p for p in range(len(catalog)) if p not in ex.history][:5]
    assert wrong == [p for p in expected if p != ex.candidates[ex.target]][:4]


def test_random_negatives_mixed_in(catalog: Catalog, logs: Interactions) -> None:
    cfg = TuneConfig(max_examples=None, n_candidates=6, random_negatives=5)
    examples = build_examples(catalog, logs, candidates=popular_first(catalog), config=cfg)
    high = [p for ex in examples for p in ex.candidates if p >= 10]
    assert high  # random items, not just the retriever's first positions
    for ex in examples:
        assert len(set(ex.candidates)) == 6
        assert not set(ex.candidates) & set(ex.history)


def test_shuffle_is_seeded_and_spread(catalog: Catalog, logs: Interactions) -> None:
    def build(seed: int) -> list[TuneExample]:
        cfg = TuneConfig(max_examples=None, examples_per_user=5, seed=seed)
        return build_examples(catalog, logs, candidates=popular_first(catalog), config=cfg)

    assert build(0) == build(0)
    assert build(0) != build(1)
    positions = Counter(ex.target for ex in build(0))
    assert len(positions) >= 8  # the answer is not always under the same label


def test_feedback_becomes_examples(catalog: Catalog, logs: Interactions) -> None:
    liked = FeedbackSignal(user_id=1, item_id=int(catalog.item_ids[3]), positive=True)
    disliked = FeedbackSignal(user_id=1, item_id=int(catalog.item_ids[4]), positive=False)
    cfg = TuneConfig(max_examples=None)
    examples = build_examples(
        catalog, logs, candidates=popular_first(catalog), config=cfg, feedback=[liked, disliked]
    )
    fb = [e for e in examples if e.source == "feedback"]
    assert [(e.kind, e.candidates[e.target]) for e in fb] == [("positive", 3), ("negative", 4)]
    assert 3 not in fb[0].history
    assert 3 in fb[1].history  # the liked item joined the history the dislike came after
    assert 4 not in fb[1].history
    off = build_examples(
        catalog,
        logs,
        candidates=popular_first(catalog),
        config=cfg.model_copy(update={"feedback": False}),
        feedback=[liked],
    )
    assert all(e.source == "log" for e in off)


def test_feedback_on_unknown_item_is_skipped(catalog: Catalog, logs: Interactions) -> None:
    ghost = FeedbackSignal(user_id=1, item_id=99999, positive=True)
    examples = build_examples(
        catalog, logs, candidates=popular_first(catalog), config=TuneConfig(), feedback=[ghost]
    )
    assert all(e.source == "log" for e in examples)


def test_max_examples_cuts(catalog: Catalog, logs: Interactions) -> None:
    cfg = TuneConfig(max_examples=7)
    assert len(build_examples(catalog, logs, candidates=popular_first(catalog), config=cfg)) == 7


def test_json_round_trip(catalog: Catalog, logs: Interactions) -> None:
    ex = build_examples(catalog, logs, candidates=popular_first(catalog))[0]
    assert TuneExample.from_json(ex.to_json(catalog), catalog) == ex


def test_empty_interactions(catalog: Catalog) -> None:
    empty = Interactions(
        user_ids=np.empty(0, np.int64),
        item_ids=np.empty(0, np.int64),
        values=np.empty(0),
        timestamps=np.empty(0, np.int64),
    )
    with pytest.raises(ConfigError, match="interactions is empty"):
        build_examples(catalog, empty, candidates=popular_first(catalog))


def test_no_training_users(catalog: Catalog, logs: Interactions) -> None:
    with pytest.raises(ConfigError, match=r"min_history=20 .* longest sequence has 8"):
        build_examples(
            catalog, logs, candidates=popular_first(catalog), config=TuneConfig(min_history=20)
        )


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"method": "qlora"}, r"method='qlora'.*'lora' or 'full'"),
        ({"random_negatives": 25}, r"random_negatives=25 exceeds"),
        ({"lora_rank": 8}, r"unknown key 'lora_rank'"),
        ({"target_modules": []}, r"target_modules"),
    ],
)
def test_bad_config(options: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse_tune_config(options)


def test_learning_rate_default_per_method() -> None:
    assert TuneConfig().lr == 3e-4
    assert TuneConfig(method="full").lr == 2e-5
    assert TuneConfig(learning_rate=1e-3).lr == 1e-3


def _reversed_retriever(catalog: Catalog) -> tuple[object, list[int]]:
    """A stand-in retriever ranking positions last-first, and a log of the k it was asked."""
    asked: list[int] = []

    def candidates(user: object, history: np.ndarray, k: int) -> list[int]:
        asked.append(k)
        return list(range(len(catalog) - 1, -1, -1))[:k]

    return candidates, asked


def test_retrieval_order_lists_candidates_as_ranked(catalog: Catalog, logs: Interactions) -> None:
    ranked, _ = _reversed_retriever(catalog)
    cfg = TuneConfig(
        max_examples=None, n_candidates=6, random_negatives=5, candidate_order="retrieval"
    )
    examples = build_examples(catalog, logs, candidates=ranked, config=cfg)  # type: ignore[arg-type]
    assert examples
    for ex in examples:
        # the retriever ranks high positions first: label order is descending position
        assert list(ex.candidates) == sorted(ex.candidates, reverse=True)
        assert not set(ex.candidates) & set(ex.history)
    # the answer sits where the retriever ranked it, not always under one label
    assert len({ex.target for ex in examples}) >= 3


def test_retrieval_order_skips_targets_the_retriever_missed(
    catalog: Catalog, logs: Interactions
) -> None:
    ranked, _ = _reversed_retriever(catalog)
    cfg = TuneConfig(max_examples=None, n_candidates=5, candidate_order="retrieval")
    examples = build_examples(catalog, logs, candidates=ranked, config=cfg)  # type: ignore[arg-type]
    shuffled = build_examples(
        catalog,
        logs,
        candidates=ranked,  # type: ignore[arg-type]
        config=cfg.model_copy(update={"candidate_order": "shuffled"}),
    )
    assert 0 < len(examples) < len(shuffled)
    for ex in examples:
        top = [p for p in range(len(catalog) - 1, -1, -1) if p not in ex.history][:5]
        # exactly the retriever's top 5 in its order, the target among them
        assert list(ex.candidates) == top


def test_retrieval_order_with_no_hit_is_a_clear_error(catalog: Catalog, logs: Interactions) -> None:
    def nothing_useful(user: object, history: np.ndarray, k: int) -> list[int]:
        seq = set(_sequence(logs, catalog, int(user)))  # type: ignore[call-overload]
        return [p for p in range(len(catalog)) if p not in seq][:k]

    cfg = TuneConfig(max_examples=None, n_candidates=4, candidate_order="retrieval")
    with pytest.raises(ConfigError, match="random_negatives"):
        build_examples(catalog, logs, candidates=nothing_useful, config=cfg)


def test_max_examples_cut_before_retrieval(catalog: Catalog, logs: Interactions) -> None:
    ranked, asked = _reversed_retriever(catalog)
    cfg = TuneConfig(max_examples=3, n_candidates=5, random_negatives=4)
    examples = build_examples(catalog, logs, candidates=ranked, config=cfg)  # type: ignore[arg-type]
    assert len(examples) == 3
    assert len(asked) == 0  # random negatives only, shuffled: no ranking needed
    retr = cfg.model_copy(update={"candidate_order": "retrieval"})
    assert len(build_examples(catalog, logs, candidates=ranked, config=retr)) == 3  # type: ignore[arg-type]
    assert len(asked) == 3  # one ranking per kept example, not one per sampled step


def test_holdout_targets_are_the_last_items_the_retriever_never_saw(
    catalog: Catalog, logs: Interactions
) -> None:
    rows = holdout_rows(catalog, logs, 2)
    assert len(rows) == len(logs) - 6 * 2
    for user in range(1, 7):
        seq = _sequence(logs, catalog, user)
        assert _sequence(rows, catalog, user) == seq[:-2]
    cfg = TuneConfig(max_examples=None, examples_per_user=5, holdout_last=2, n_candidates=5)
    examples = build_examples(catalog, logs, candidates=popular_first(catalog), config=cfg)
    assert len(examples) == 6 * 2
    for ex in examples:
        seq = _sequence(logs, catalog, ex.user_id)
        assert seq.index(ex.candidates[ex.target]) >= len(seq) - 2
    assert holdout_rows(catalog, logs, 0) is logs


def _show_rank(**options: object) -> TuneConfig:
    from ragrec.tuning import TUNE_PROMPT

    return TuneConfig(prompt=TUNE_PROMPT.model_copy(update={"show_rank": "inline"}), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("random_negatives", [0, 3, 5])
def test_show_rank_gives_each_shuffled_candidate_its_retrieval_rank(
    catalog: Catalog, logs: Interactions, random_negatives: int
) -> None:
    ranked, _ = _reversed_retriever(catalog)
    cfg = _show_rank(max_examples=None, n_candidates=6, random_negatives=random_negatives)
    examples = build_examples(catalog, logs, candidates=ranked, config=cfg)  # type: ignore[arg-type]
    assert examples
    for ex in examples:
        assert ex.ranks is not None
        assert sorted(ex.ranks) == list(range(1, 7))
        # the reversed retriever ranks high positions first: rank order is descending position
        by_rank = [p for _, p in sorted(zip(ex.ranks, ex.candidates, strict=True))]
        assert by_rank == sorted(ex.candidates, reverse=True)
    # the labels stay shuffled: the rank-1 candidate is not always under label A
    assert len({ex.ranks.index(1) for ex in examples if ex.ranks}) >= 3
    assert TuneExample.from_json(examples[0].to_json(catalog), catalog) == examples[0]


def test_show_rank_in_retrieval_order_counts_up(catalog: Catalog, logs: Interactions) -> None:
    ranked, _ = _reversed_retriever(catalog)
    cfg = _show_rank(n_candidates=6, random_negatives=5, candidate_order="retrieval")
    for ex in build_examples(catalog, logs, candidates=ranked, config=cfg):  # type: ignore[arg-type]
        assert ex.ranks == (1, 2, 3, 4, 5, 6)


def test_no_ranks_without_show_rank(catalog: Catalog, logs: Interactions) -> None:
    ranked, _ = _reversed_retriever(catalog)
    plain = build_examples(catalog, logs, candidates=ranked)  # type: ignore[arg-type]
    assert all(ex.ranks is None for ex in plain)
    # showing ranks draws no extra randomness: the same candidates under the same labels
    shown = build_examples(catalog, logs, candidates=ranked, config=_show_rank())  # type: ignore[arg-type]
    assert [(e.candidates, e.target) for e in shown] == [(e.candidates, e.target) for e in plain]
