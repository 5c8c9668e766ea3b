"""The Recommender facade with real components: the retriever with the bundled embedder
and FAISS, the SQLite feedback store, and the bundled LLM where the LLM matters.

The data is a slice of ml-latest-small (the 200 most-rated movies, the first 60 users
who rated them). The embedding cache is shared by the module, so only the first build
embeds the catalog; most recommenders here skip the LLM (``llm_candidates=0``), a few
render prompts with the real tokenizer, and two tests run the real model.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from generation.conftest import FailingGenerator, real_generator
from ragrec import (
    Catalog,
    ConfigError,
    DataValidationError,
    Interactions,
    Recommendation,
    Recommender,
)
from ragrec.feedback import (
    FeedbackConflictError,
    FeedbackOutcome,
    InvalidFeedbackError,
    open_store,
)
from ragrec.generation import blend_scores, display_title
from ragrec.retrieval import Filters

N_ITEMS = 200
N_USERS = 60
ITEM_TEXT = {"template": "{title}. Genres: {genres}"}
NO_SEMANTIC = [
    {"kind": "transition", "weight": 1.0},
    {"kind": "ease", "weight": 0.5},
    {"kind": "popularity", "weight": 0.01},
]

Build = Callable[..., Recommender]


# fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(ml_small: Any) -> tuple[Catalog, Interactions]:
    """The most-rated movies of ml-latest-small and the first users who rated them."""
    catalog, interactions = ml_small.catalog, ml_small.interactions
    ids, counts = np.unique(interactions.item_ids, return_counts=True)
    top = ids[np.argsort(-counts, kind="stable")[:N_ITEMS]]
    catalog = catalog.subset(np.sort(catalog.positions(top)))
    rows = interactions.restrict_items(catalog)
    users = np.unique(rows.user_ids)[:N_USERS]
    return catalog, rows.select(np.isin(rows.user_ids, users))


@pytest.fixture(scope="module")
def build(data: tuple[Catalog, Interactions], tmp_path_factory: pytest.TempPathFactory) -> Build:
    """``build(path=None, llm=None, interactions=None, **config)``: a new recommender
    on the module's data, with ``llm`` as its generator; ``config`` is merged into the
    test defaults."""
    cache = tmp_path_factory.mktemp("embeddings")

    def make(
        path: Path | None = None,
        llm: Any = None,
        interactions: Interactions | None = None,
        **config: Any,
    ) -> Recommender:
        defaults = {
            "generator": {"device": "cpu", "threads": 1},
            "retriever": {"cache_dir": str(cache), "item_text": ITEM_TEXT, "fusion": {"depth": 30}},
            "llm_candidates": 0,
            "exemplars": {"k": 0},
            # evidence sentences only: the tests that need the LLM's rewrites turn them on
            "explain": {"rewrite": False},
        }
        return Recommender.build(
            data[0],
            data[1] if interactions is None else interactions,
            _merge(defaults, config),
            path=path,
            generator=llm,
        )

    return make


@pytest.fixture(scope="module")
def rec(build: Build) -> Iterator[Recommender]:
    """A retrieval-only recommender that tests only read (feedback goes elsewhere)."""
    recommender = build()
    yield recommender
    recommender.close()


@pytest.fixture(scope="module")
def user(data: tuple[Catalog, Interactions]) -> int:
    """A user with a history of at least 20 rows."""
    ids, counts = np.unique(data[1].user_ids, return_counts=True)
    return int(ids[counts >= 20][0])


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _like(
    rec: Recommender, user: Any, item: Any, *, rec_id: str | None = None, **kw: Any
) -> FeedbackOutcome:
    return rec.feedback({"user_id": user, "item_id": item, "kind": "like", "rec_id": rec_id, **kw})


def _popularity(interactions: Interactions) -> dict[Any, int]:
    ids, counts = np.unique(interactions.item_ids, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist(), strict=True))


# recommending ------------------------------------------------------------------------------


def test_recommend_for_a_known_user(
    rec: Recommender, data: tuple[Catalog, Interactions], user: int
) -> None:
    catalog, interactions = data
    seen = set(interactions.item_ids[interactions.user_ids == user].tolist())
    result = rec.recommend(user, k=10, explain=False)

    assert isinstance(result, Recommendation)
    assert result.user_id == user
    assert not result.cold_start
    assert not result.degraded
    assert result.reason is None
    assert len(result.items) == 10
    assert len(set(result.item_ids)) == 10
    assert not set(result.item_ids) & seen, "an item from the user's history came back"
    assert [it.rank for it in result.items] == list(range(1, 11))
    scores = [it.score for it in result.items]
    assert scores == sorted(scores, reverse=True)
    titles = dict(zip(catalog.item_ids.tolist(), catalog.titles.tolist(), strict=True))
    for it in result.items:
        assert it.title == titles[it.item_id]
        assert it.channels, f"item {it.item_id} has no provenance"
        assert {c for c, _, _ in it.channels} <= set(result.weights)
        assert all(r >= 1 and math.isfinite(s) for _, r, s in it.channels)
        assert it.label is None
        assert it.llm_logprob is None
        assert it.explanation is None
    assert result.weights == rec.weights(user)
    assert set(result.weights) == {
        "transition",
        "ease",
        "sasrec",
        "als",
        "itemknn",
        "semantic",
        "popularity",
    }
    assert result.prompt_id is None
    assert result.prompt_hash is None
    assert not result.llm_ranked
    assert result.model == rec.config.generator.model
    assert result.backend == rec.config.generator.backend
    assert set(result.timings) == {"retrieval", "llm_rank", "explain", "total"}
    assert all(t >= 0 for t in result.timings.values())
    assert result.timings["total"] >= result.timings["retrieval"] > 0


def test_recommendation_ids_are_unique_and_the_dict_is_json(rec: Recommender, user: int) -> None:
    first, second = rec.recommend(user, k=3), rec.recommend(user, k=3)
    assert first.id != second.id
    assert first.item_ids == second.item_ids  # same state, same answer

    data = json.loads(json.dumps(first.to_dict(), allow_nan=False))
    assert data["id"] == first.id
    assert [i["item_id"] for i in data["items"]] == first.item_ids
    assert data["items"][0]["channels"][0][0] == first.items[0].channels[0][0]
    # every recommendation is logged with its provenance, for crediting feedback later
    logged = rec.store.recommendation(first.id)
    assert logged is not None
    assert [i.item_id for i in logged.items] == first.item_ids
    assert logged.items[0].channels == tuple(c for c, _, _ in first.items[0].channels)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_k_must_be_a_positive_integer(rec: Recommender, user: int, k: Any) -> None:
    with pytest.raises(ConfigError, match=r"k=.*integer >= 1"):
        rec.recommend(user, k=k)
    with pytest.raises(ConfigError, match=r"k="):
        rec.recommend_batch([user], k=k)


def test_unknown_user_gets_the_most_popular_items(
    rec: Recommender, data: tuple[Catalog, Interactions]
) -> None:
    result = rec.recommend(10**9, k=5, explain=False)
    assert result.cold_start
    assert rec.history(10**9) == []
    popularity = _popularity(data[1])
    top = sorted(popularity.values(), reverse=True)[:5]
    assert [popularity[i] for i in result.item_ids] == top
    assert all(c == "popularity" for it in result.items for c, _, _ in it.channels)


def test_query_for_a_cold_user_finds_related_titles(
    rec: Recommender, data: tuple[Catalog, Interactions]
) -> None:
    catalog = data[0]
    result = rec.recommend("nobody", k=5, query="animated cartoon for kids", explain=False)
    assert result.cold_start
    assert result.query == "animated cartoon for kids"
    genres = [set(catalog.categories[catalog.position(i)]) for i in result.item_ids]
    family = [g & {"Animation", "Children"} for g in genres]
    assert sum(map(bool, family)) >= 4, list(zip(result.item_ids, genres, strict=True))
    assert "semantic" in [c for c, _, _ in result.items[0].channels]
    # without the query the same cold user gets the popular items instead
    assert rec.recommend("nobody", k=5, explain=False).item_ids != result.item_ids
    # an anonymous request works too, and is logged under no user
    anonymous = rec.recommend(None, k=5, query="animated cartoon for kids", explain=False)
    assert anonymous.item_ids == result.item_ids
    assert rec.store.recommendation(anonymous.id) is None


def test_a_query_steers_a_warm_users_list(
    build: Build, user: int, data: tuple[Catalog, Interactions]
) -> None:
    """The semantic channel reads the query; ``query_boost`` makes it count for that
    request, so a known user asking for cartoons gets more of them than without."""
    catalog = data[0]

    def family(recommender: Recommender) -> int:
        got = recommender.recommend(user, k=10, query="animated cartoon for kids", explain=False)
        cats = [set(catalog.categories[catalog.position(i)]) for i in got.item_ids]
        return sum(bool(c & {"Animation", "Children"}) for c in cats)

    boosted, flat = build(), build(query_boost={})
    try:
        with_boost, without = family(boosted), family(flat)
    finally:
        boosted.close()
        flat.close()
    assert with_boost > without
    assert with_boost >= 5


def test_filters_are_respected(
    rec: Recommender, data: tuple[Catalog, Interactions], user: int
) -> None:
    catalog = data[0]
    unfiltered = rec.recommend(user, k=10, explain=False)
    flt = Filters(genres_any=["Comedy"], year_min=1990, exclude_ids=[unfiltered.item_ids[0]])
    result = rec.recommend(user, k=10, explain=False, filters=flt)
    assert len(result.items) == 10
    assert unfiltered.item_ids[0] not in result.item_ids
    for item_id in result.item_ids:
        pos = catalog.position(item_id)
        assert "Comedy" in catalog.categories[pos]
        assert catalog.years[pos] >= 1990

    allowed = catalog.item_ids[:5].tolist()
    only = rec.recommend(user, k=10, explain=False, filters=Filters(include_ids=allowed))
    assert set(only.item_ids) <= set(allowed)
    with pytest.raises(ConfigError, match="filters="):
        rec.recommend(user, filters={"genres_any": ["Comedy"]})  # type: ignore[arg-type]


def test_recommend_batch_matches_single_requests(
    rec: Recommender, data: tuple[Catalog, Interactions]
) -> None:
    users = [int(u) for u in np.unique(data[1].user_ids)[:3]] + [10**9]
    batch = rec.recommend_batch(users, k=4)
    assert [r.user_id for r in batch] == users
    assert [r.item_ids for r in batch] == [rec.recommend(u, k=4).item_ids for u in users]
    assert [r.cold_start for r in batch] == [False, False, False, True]
    assert len({r.id for r in batch}) == len(users)
    for r in batch:
        # each request's own retrieval time, not the batch's total
        assert 0 < r.timings["retrieval"] <= r.timings["total"]
    assert rec.recommend_batch([], k=4) == []


# the LLM -----------------------------------------------------------------------------------


def test_the_llm_ranks_and_explains(build: Build, user: int) -> None:
    """The real bundled model: the blend orders the candidates it saw, every item has
    its label and log-probability and an explanation; the top item's is the LLM's
    checked rewrite or, when the rewrite failed a check, the evidence sentence with the
    reason."""
    rec = build(
        llm=real_generator(),
        llm_candidates=6,
        explain_top=1,
        explain={"rewrite": True},
        rerank={"blend_weight": 0.5},
        exemplars={"k": 1, "selection": "fixed", "n_seed": 20},
    )
    result = rec.recommend(user, k=6, explain=True)

    assert not result.degraded, result.reason
    assert result.llm_ranked
    assert result.llm_note is None
    assert result.blend_weight == 0.5
    assert result.prompt_id
    assert result.prompt_hash
    assert len(result.exemplar_ids) == 1
    assert result.exemplar_ids[0] in rec.pool
    assert sorted(it.label or "" for it in result.items) == list("ABCDEF")
    logprobs = [it.llm_logprob for it in result.items]
    assert all(lp is not None and lp <= 0 for lp in logprobs)
    # the order is the blend of the retrieval scores and the LLM's
    by_retrieval = sorted(result.items, key=lambda it: -it.retrieval_score)
    blend = blend_scores(
        np.array([it.retrieval_score for it in by_retrieval]),
        np.array([it.llm_logprob for it in by_retrieval], dtype=np.float64),
        0.5,
    )
    expected = [by_retrieval[i].item_id for i in np.argsort(-blend, kind="stable")]
    assert result.item_ids == expected
    np.testing.assert_allclose([it.score for it in result.items], np.sort(blend)[::-1])
    assert result.timings["llm_rank"] > 0
    assert result.timings["explain"] > 0

    history = {i for i, _ in rec.history(user)}
    top, rest = result.items[0], result.items[1:]
    exp = top.explanation
    assert exp is not None
    assert exp.item_id == top.item_id
    assert exp.llm_text, "the top item's rewrite was asked for"
    assert exp.tokens > 0
    if exp.source == "llm":
        assert exp.text == exp.llm_text
        assert exp.rejected is None
    else:
        assert exp.text == exp.template
        assert exp.rejected
        assert exp.rejected.startswith("rejected: ")
    assert set(exp.cited) <= history
    for it in rest:
        assert it.explanation is not None
        assert it.explanation.source == "template"
        assert it.explanation.text == it.explanation.template
        assert it.explanation.rejected == "beyond explain_top"
        assert it.explanation.llm_text is None
        assert set(it.explanation.cited) <= history
    rec.close()


def test_every_item_is_explained_from_its_evidence(rec: Recommender, user: int) -> None:
    """Without the LLM, every item gets the sentence built from its own evidence: the
    history items it cites are the user's, named in the sentence, and they carry the
    largest share of the item's score among its history evidence."""
    result = rec.recommend(user, k=10, explain=True)
    history = dict(rec.history(user))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert len(data["items"]) == 10
    for it, as_json in zip(result.items, data["items"], strict=True):
        exp = it.explanation
        assert exp is not None, f"item {it.item_id} has no explanation"
        assert exp.item_id == it.item_id
        assert exp.source == "template"
        assert exp.text == exp.template
        assert exp.text.endswith(".")
        assert "dropped" not in exp.text
        assert exp.rejected == "rewrites off (explain.rewrite = false)"
        ev = exp.evidence
        assert ev is not None
        assert ev.channels, "every candidate came from some channel"
        assert sum(c.share for c in ev.channels) == pytest.approx(1.0)
        assert {c.channel for c in ev.channels} <= {c for c, _, _ in it.channels}
        shares = [h.share for h in ev.history]
        assert shares == sorted(shares, reverse=True)
        assert all(0 < s <= 1 for s in shares)
        assert set(exp.cited) <= set(history)
        assert list(exp.cited) == [h.item_id for h in ev.history][: len(exp.cited)]
        for cited in exp.cited:
            assert display_title(history[cited]) in exp.text
        assert as_json["explanation"]["text"] == exp.text
    assert any(it.explanation and it.explanation.cited for it in result.items), (
        "a warm user's items cite their history"
    )
    assert result.timings["llm_rank"] == 0.0


def test_a_cold_user_gets_explanations_without_history(rec: Recommender) -> None:
    result = rec.recommend("nobody at all", k=5, explain=True)
    assert result.cold_start
    for it in result.items:
        assert it.explanation is not None
        assert it.explanation.cited == ()
        assert it.explanation.text.endswith(".")


def test_blend_weight_zero_runs_no_llm_ranking_pass(build: Build, user: int) -> None:
    """With blend weight 0 the LLM cannot change the order: no prompt is scored (a
    generator that counts calls sees none), llm_rank takes 0 s and the result says how
    to turn the ranking on; served candidates are still logged under their labels, so
    feedback still becomes exemplars."""
    counting = FailingGenerator(real_generator().tokenizer)
    rec = build(llm=counting, llm_candidates=6, exemplars={"k": 0, "n_seed": 1})
    result = rec.recommend(user, k=5, explain=True)

    assert counting.calls == 0
    assert not result.degraded
    assert not result.llm_ranked
    assert result.prompt_id is None
    assert result.timings["llm_rank"] == 0.0
    assert result.llm_note is not None
    assert "LLM ranking off: blend weight 0" in result.llm_note
    assert "ragrec tune" in result.llm_note
    logged = rec.store.recommendation(result.id)
    assert logged is not None
    context = logged.context or {}
    assert len(context["candidate_ids"]) == 6
    assert context["labels"] == list("ABCDEF")
    out = rec.feedback(
        {"user_id": user, "item_id": result.item_ids[0], "kind": "like", "rec_id": result.id}
    )
    assert out.exemplar in rec.pool
    rec.close()


@pytest.mark.parametrize("blend", [0.5, 0.0])
def test_a_failing_llm_degrades_to_the_retrieval_order(
    build: Build, rec: Recommender, user: int, blend: float
) -> None:
    """A backend that is down: ranking (when on) degrades to the retrieval order,
    flagged; explanations keep the evidence sentences, saying why the rewrite is
    missing."""
    failing = FailingGenerator(real_generator().tokenizer)
    broken = build(
        llm=failing,
        llm_candidates=6,
        explain_top=2,
        explain={"rewrite": True},
        rerank={"blend_weight": blend},
    )
    result = broken.recommend(user, k=5, explain=True)

    assert failing.calls >= 1
    assert result.degraded == (blend > 0)
    if blend > 0:
        assert result.reason
        assert "refused the connection" in result.reason
    assert not result.llm_ranked
    assert result.blend_weight == 0.0
    assert result.item_ids == rec.recommend(user, k=5, explain=False).item_ids
    assert all(it.llm_logprob is None for it in result.items)
    for n, it in enumerate(result.items):
        exp = it.explanation
        assert exp is not None
        assert exp.source == "template"
        assert exp.text
        if n < 2:
            assert exp.rejected
            assert "refused the connection" in exp.rejected
    broken.close()


def test_a_model_that_cannot_load_degrades_instead_of_raising(
    build: Build, rec: Recommender, user: int, tmp_path: Path
) -> None:
    broken = build(
        generator={"model": str(tmp_path / "no-such-model")},
        llm_candidates=5,
        rerank={"blend_weight": 0.5},
    )
    result = broken.recommend(user, k=5)
    assert result.degraded
    assert result.reason is not None
    assert "no-such-model" in result.reason
    assert result.item_ids == rec.recommend(user, k=5).item_ids
    broken.close()


# feedback ----------------------------------------------------------------------------------


def test_feedback_is_stored_durably(build: Build, tmp_path: Path, user: int) -> None:
    store_dir = tmp_path / "store"
    rec = build(path=store_dir)
    served = rec.recommend(user, k=3, explain=False)
    item = served.item_ids[0]
    out = _like(rec, user, item, rec_id=served.id, event_id="e-durable")
    assert out.stored is True
    assert out.event_id == "e-durable"
    assert out.reward == 1.0

    with open_store(store_dir) as other:  # another connection sees the committed event
        events = other.events(user)
    assert [(e.event_id, e.item_id, str(e.kind), e.rec_id) for e in events] == [
        ("e-durable", item, "like", served.id)
    ]
    rec.close()
    again = Recommender.load(store_dir)
    assert item in [i for i, _ in again.history(user)]
    assert [e.event_id for e in again.store.events(user)] == ["e-durable"]
    again.close()


def test_a_repeated_event_is_stored_and_learned_once(build: Build, user: int) -> None:
    rec = build()
    served = rec.recommend(user, k=3, explain=False)
    event = {
        "event_id": "e-repeat",
        "user_id": user,
        "item_id": served.item_ids[0],
        "kind": "like",
        "rec_id": served.id,
        "timestamp": datetime(2024, 5, 1, tzinfo=UTC),
    }
    before = rec.weights(user)
    first = rec.feedback(event)
    after = rec.weights(user)
    second = rec.feedback(event)

    assert first.stored is True
    assert second.stored is False
    assert after != before, "the like did not move the weights"
    assert rec.weights(user) == after, "the repeat was learned from again"
    assert second.weights == after
    assert rec.store.count() == 1
    with pytest.raises(FeedbackConflictError):
        rec.feedback({**event, "kind": "dislike"})
    assert rec.store.count() == 1
    rec.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "loved"}, "kind"),
        ({"kind": "rating"}, "value"),
        ({"kind": "rating", "value": 9.0}, "value"),
        ({"item_id": 987654321}, "item_id"),
        ({"user_id": None}, "user_id"),
        ({"timestamp": datetime(2024, 1, 1)}, "timestamp"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_malformed_events_name_the_field_and_store_nothing(
    rec: Recommender, user: int, change: dict[str, Any], field: str
) -> None:
    before = rec.store.count()
    weights = rec.weights(user)
    event = {"user_id": user, "item_id": int(rec.catalog.item_ids[0]), "kind": "like", **change}
    with pytest.raises(InvalidFeedbackError, match=f"'{field}'") as caught:
        rec.feedback(event)
    assert isinstance(caught.value, DataValidationError)
    assert field in [issue.field for issue in caught.value.issues]
    assert rec.store.count() == before
    assert rec.weights(user) == weights


def test_feedback_many_learns_like_single_events(build: Build, user: int) -> None:
    one_by_one, batched = build(), build()
    served = [r.recommend(user, k=3, explain=False) for r in (one_by_one, batched)]
    stamp = datetime(2024, 5, 1, tzinfo=UTC)

    def events(rec_id: str, items: list[Any]) -> list[dict[str, Any]]:
        return [
            {"event_id": f"e{i}", "user_id": user, "item_id": item, "kind": kind,
             "rec_id": rec_id, "timestamp": stamp}
            for i, (item, kind) in enumerate(zip(items, ["like", "dislike"], strict=True))
        ]  # fmt: skip

    singles = [one_by_one.feedback(e) for e in events(served[0].id, served[0].item_ids[:2])]
    sent = events(served[1].id, served[1].item_ids[:2])
    results = batched.feedback_many([*sent, sent[0]])

    assert [r.stored for r in results] == [True, True, False]
    assert [r.event_id for r in results] == ["e0", "e1", "e0"]
    assert results[1].weights == singles[1].weights
    assert batched.weights(user) == one_by_one.weights(user)
    assert batched.history(user) == one_by_one.history(user)
    assert batched.store.count() == 2
    assert batched.feedback_many(sent)[0].stored is False
    one_by_one.close()
    batched.close()


def test_feedback_many_names_every_bad_event_and_stores_none(rec: Recommender, user: int) -> None:
    before = rec.store.count()
    item = int(rec.catalog.item_ids[0])
    good = {"user_id": user, "item_id": item, "kind": "like"}
    with pytest.raises(InvalidFeedbackError) as caught:
        rec.feedback_many([good, {**good, "kind": "loved"}, {**good, "colour": "red"}])
    assert [i.field for i in caught.value.issues] == ["1.kind", "2.colour"]
    with pytest.raises(InvalidFeedbackError, match="not in the catalog") as caught:
        rec.feedback_many([good, {**good, "item_id": 987654321}])
    assert [i.field for i in caught.value.issues] == ["1.item_id"]
    assert rec.store.count() == before
    assert rec.feedback_many([]) == []


def test_a_like_enters_the_history_at_once(build: Build, user: int) -> None:
    rec = build()
    served = rec.recommend(user, k=5, explain=False)
    liked = served.item_ids[2]
    _like(rec, user, liked, rec_id=served.id)

    assert rec.history(user)[-1][0] == liked
    after = rec.recommend(user, k=5, explain=False)
    assert liked not in after.item_ids
    # a cold user who likes an item is cold no more
    assert rec.recommend("newcomer", k=3).cold_start
    _like(rec, "newcomer", liked)
    assert rec.known_user("newcomer")
    warm = rec.recommend("newcomer", k=3, explain=False)
    assert not warm.cold_start
    assert liked not in warm.item_ids
    rec.close()


def test_a_dislike_blocks_the_item_for_that_user_only(build: Build, user: int) -> None:
    rec = build()
    other = 10**9
    served = rec.recommend(user, k=5, explain=False)
    disliked = served.item_ids[0]
    rec.feedback({"user_id": user, "item_id": disliked, "kind": "dislike", "rec_id": served.id})

    everything = Filters(exclude_seen=False)
    assert disliked not in rec.recommend(user, k=50, filters=everything).item_ids
    assert disliked not in [i for i, _ in rec.history(user)]
    assert rec.weights(user) != served.weights  # the proposing channels lost weight
    rec.feedback({"user_id": other, "item_id": disliked, "kind": "like"})  # not blocked
    assert disliked in [i for i, _ in rec.history(other)]
    # the latest event wins: a like after the dislike unblocks (and enters the history)
    _like(rec, user, disliked)
    assert disliked in [i for i, _ in rec.history(user)]
    rec.close()


def test_feedback_cannot_credit_another_users_recommendation(build: Build, user: int) -> None:
    rec = build()
    served = rec.recommend(user, k=3, explain=False)
    before = rec.weights(user)
    out = _like(rec, "intruder", served.item_ids[0], rec_id=served.id)
    assert out.stored is True
    assert rec.weights("intruder") == rec.weights(None) == before
    assert rec.store.get_weights("intruder") == {}
    rec.close()


def test_consistent_likes_raise_the_channel_weight_and_its_share(
    build: Build, data: tuple[Catalog, Interactions]
) -> None:
    """The issue's acceptance test: a user who keeps liking what the semantic channel
    proposes (the items it ranks best among their proposers, so it gets most of the
    credit) gets a higher semantic weight and more semantic items."""
    channel = "semantic"
    rounds = 5

    def led_by_channel(channels: tuple[tuple[str, int, float], ...]) -> bool:
        ranks = {c: r for c, r, _ in channels}
        return channel in ranks and ranks[channel] <= min(ranks.values())

    def share(result: Recommendation) -> float:
        return float(np.mean([channel in [c for c, _, _ in it.channels] for it in result.items]))

    # each channel proposes only 10 items, so provenance tells the channels apart
    users = [int(u) for u in np.unique(data[1].user_ids)]
    rec = build(retriever={"fusion": {"depth": 10}})
    for candidate in users:
        first = rec.recommend(candidate, k=10, explain=False)
        if sum(led_by_channel(it.channels) for it in first.items) >= 2 and share(first) <= 0.5:
            break
    else:
        pytest.fail("no user has items led by the semantic channel")
    u = candidate

    weights = [rec.weights(u)[channel]]
    shares = []
    result = first
    for _ in range(rounds):
        shares.append(share(result))
        liked = [it.item_id for it in result.items if led_by_channel(it.channels)]
        assert liked, f"round {len(shares)}: nothing led by {channel}: {result.items}"
        for item_id in liked:
            _like(rec, u, item_id, rec_id=result.id)
        weights.append(rec.weights(u)[channel])
        result = rec.recommend(u, k=10, explain=False)
    shares.append(share(result))

    assert all(b > a for a, b in itertools.pairwise(weights)), weights
    assert shares[-1] > shares[0], shares
    assert rec.weights(u)[channel] > 2 * rec.weights(None)[channel]
    # the weights are durable: the store holds the user's current weights
    assert rec.store.get_weights(u) == rec.weights(u)
    rec.close()


def test_liked_recommendations_become_exemplars(build: Build, user: int) -> None:
    """At blend weight 0 no prompt is rendered, but the candidates the LLM would have
    seen are logged under their labels: a like turns the request into an exemplar; a
    dislike removes it."""
    rec = build(llm=real_generator(), llm_candidates=5)
    served = rec.recommend(user, k=5, explain=False)
    assert served.prompt_hash is None
    assert not served.llm_ranked
    assert not served.degraded
    item = served.items[1]
    exemplar_id = _like(rec, user, item.item_id, rec_id=served.id).exemplar

    exemplar = rec.pool.get(exemplar_id)
    assert exemplar.source == "feedback"
    assert exemplar.user_id == user
    logged = rec.store.recommendation(served.id)
    assert logged is not None
    shown = list((logged.context or {})["candidate_ids"])
    assert exemplar.label == "ABCDE"[shown.index(item.item_id)]
    assert exemplar.chosen == item.title
    assert set(exemplar.candidate_ids) == set(served.item_ids)
    out = rec.feedback({"user_id": user, "item_id": item.item_id, "kind": "dislike",
                        "rec_id": served.id})  # fmt: skip
    assert out.exemplar == exemplar_id
    assert exemplar_id not in rec.pool
    rec.close()


# forgetting --------------------------------------------------------------------------------


def _text_ids(interactions: Interactions) -> Interactions:
    return Interactions(
        user_ids=np.array([f"person-{u}-x" for u in interactions.user_ids.tolist()], object),
        item_ids=interactions.item_ids,
        values=interactions.values,
        timestamps=interactions.timestamps,
        kinds=interactions.kinds,
    )


def _mentions(folder: Path, needle: str) -> list[str]:
    """Where ``needle`` occurs: table cells of the feedback database, the saved files
    parsed, and the raw bytes of every file in the store."""
    found = []
    conn = sqlite3.connect(folder / "feedback.sqlite")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                if any(needle in str(cell) for cell in row):
                    found.append(f"table {table}: {row}")
    finally:
        conn.close()
    frame = pd.read_parquet(folder / "interactions.parquet")
    if (frame["user_id"].astype(str) == needle).any():
        found.append("interactions.parquet")
    exemplars = json.loads((folder / "exemplars.json").read_text())["exemplars"]
    found += [f"exemplar {e['id']}" for e in exemplars if e["user_id"] == needle]
    per_user = json.loads((folder / "weights.json").read_text())["per_user"]
    found += [f"weights of {k}" for k in per_user if needle in k]
    for file in sorted(folder.rglob("*")):
        if file.is_file() and needle.encode() in file.read_bytes():
            found.append(f"bytes of {file.name}")
    return found


def test_forget_user_leaves_no_trace(
    build: Build, data: tuple[Catalog, Interactions], tmp_path: Path
) -> None:
    interactions = _text_ids(data[1])
    users = sorted(set(interactions.user_ids.tolist()))
    gone, kept = users[3], users[4]
    folder = tmp_path / "store"
    rec = build(
        path=folder,
        interactions=interactions,
        llm=real_generator(),
        llm_candidates=5,
        exemplars={"k": 1, "selection": "fixed", "n_seed": 100},
    )
    for u in (gone, kept):
        served = rec.recommend(u, k=3, explain=False)
        _like(rec, u, served.item_ids[0], rec_id=served.id)
        rec.feedback({"user_id": u, "item_id": served.item_ids[1], "kind": "dislike"})
    kept_events = rec.store.events(kept)
    kept_weights = rec.weights(kept)
    kept_exemplars = {e.id for e in rec.pool if e.user_id == kept}
    n_rows = len(interactions)
    gone_rows = int((interactions.user_ids == gone).sum())
    assert rec.weights(gone) != rec.weights(None)
    assert len(kept_exemplars) == 2  # seeded from training + the like
    rec.save(folder)
    assert _mentions(folder, gone), "the scan does not find the user it must not find later"

    counts = rec.forget_user(gone)

    assert counts["events"] == 2
    assert counts["recommendations"] == 1
    assert counts["user_weights"] >= 1
    assert counts["exemplars"] == 2
    assert counts["profile"] == 1
    assert counts["interactions"] == gone_rows > 0
    assert _mentions(folder, gone) == []
    # everyone else is intact
    assert rec.store.events(kept) == kept_events
    assert rec.weights(kept) == kept_weights
    assert {e.id for e in rec.pool if e.user_id == kept} == kept_exemplars
    assert len(rec.interactions) == n_rows - gone_rows
    assert rec.history(kept)
    # the user is a stranger now, also after a reload
    after = rec.recommend(gone, k=3, explain=False)
    assert after.cold_start
    assert rec.history(gone) == []
    assert rec.weights(gone) == rec.weights(None)
    assert rec.forget_user(gone)["recommendations"] == 1  # the request just made
    rec.close()
    loaded = Recommender.load(folder, generator=real_generator())
    assert loaded.history(gone) == []
    assert loaded.recommend(gone, k=3, explain=False).cold_start
    assert loaded.store.events(kept) == kept_events
    loaded.close()


def test_forget_user_takes_numpy_ids(build: Build, data: tuple[Catalog, Interactions]) -> None:
    rec = build()
    uid = data[1].user_ids[0]  # numpy int64, as ids come out of the data
    assert isinstance(uid, np.integer)
    rows = int((data[1].user_ids == uid).sum())
    _like(rec, int(uid), int(rec.catalog.item_ids[0]))
    counts = rec.forget_user(uid)
    assert counts["events"] == 1
    assert counts["interactions"] == rows
    assert not rec.known_user(int(uid))
    with pytest.raises(ConfigError, match=r"user_id=2\.5"):
        rec.forget_user(2.5)
    rec.close()


# saving and loading ------------------------------------------------------------------------


def test_save_and_load_round_trip(build: Build, tmp_path: Path, user: int) -> None:
    rec = build(
        llm=real_generator(),
        llm_candidates=5,
        exemplars={"k": 1, "selection": "fixed", "n_seed": 10},
    )
    temporary = Path(rec.store.location)
    served = rec.recommend(user, k=5, explain=False)
    liked, disliked = served.item_ids[0], served.item_ids[1]
    _like(rec, user, liked, rec_id=served.id)
    rec.feedback({"user_id": user, "item_id": disliked, "kind": "dislike", "rec_id": served.id})
    events = rec.store.events()
    assert len(events) == 2
    folder = rec.save(tmp_path / "store")

    # the temporary database moved into the store; its copy with every event is gone
    assert Path(rec.store.location) == folder / "feedback.sqlite"
    assert not temporary.exists()
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert {p.name for p in folder.iterdir()} >= set(files)

    loaded = Recommender.load(folder, generator=real_generator())
    assert loaded.config == rec.config
    for name in ("item_ids", "titles", "years"):
        np.testing.assert_array_equal(getattr(loaded.catalog, name), getattr(rec.catalog, name))
    assert loaded.catalog.categories == rec.catalog.categories
    assert set(loaded.catalog.text) == set(rec.catalog.text) == {"genres", "tags"}
    for name, values in rec.catalog.text.items():
        assert loaded.catalog.text[name].tolist() == values.tolist()
    np.testing.assert_array_equal(loaded.interactions.user_ids, rec.interactions.user_ids)
    assert loaded.weights(user) == rec.weights(user) != rec.weights(None)
    assert loaded.weights(None) == rec.weights(None)
    assert [e.id for e in loaded.pool] == [e.id for e in rec.pool]
    assert loaded.store.events() == events
    assert loaded.store.recommendation(served.id) == rec.store.recommendation(served.id)
    assert loaded.history(user) == rec.history(user)
    assert loaded.history(user)[-1][0] == liked
    everything = Filters(exclude_seen=False)
    served_again = loaded.recommend(user, k=50, explain=False, filters=everything)
    assert disliked not in served_again.item_ids
    assert served_again.prompt_hash is None  # blend weight 0: no ranking prompt
    assert (
        loaded.recommend(user, k=5, explain=False).item_ids
        == rec.recommend(user, k=5, explain=False).item_ids
    )
    rec.close()
    loaded.close()


def test_learned_weights_survive_without_a_save(build: Build, tmp_path: Path, user: int) -> None:
    """weights.json is written by save(); the store has every update since, and wins."""
    rec = build(path=tmp_path / "store")
    served = rec.recommend(user, k=3, explain=False)
    _like(rec, user, served.item_ids[0], rec_id=served.id)
    learned = rec.weights(user)
    assert learned != served.weights
    rec.close()  # no save(): as if the process had died here
    loaded = Recommender.load(tmp_path / "store")
    assert loaded.weights(user) == learned
    assert loaded.weights(None) == rec.weights(None)
    loaded.close()


def _saved(build: Build, folder: Path) -> Path:
    build(path=folder, retriever={"channels": NO_SEMANTIC}).close()
    return folder


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "manifest.json").unlink(), "is not a ragrec store"),
        (lambda f: (f / "manifest.json").write_text('{"format": 99}'), "upgrade ragrec"),
        (lambda f: (f / "manifest.json").write_text("{not json"), r"manifest.json is damaged"),
        (lambda f: (f / "manifest.json").write_text('{"format": "1"}'), "is damaged"),
        (lambda f: (f / "config.json").unlink(), "config.json is missing"),
        (lambda f: (f / "config.json").write_text("[1, 2"), "config.json is damaged"),
        (lambda f: (f / "catalog.parquet").write_bytes(b"PAR1junk"), "catalog.parquet is damaged"),
        (lambda f: (f / "feedback.sqlite").unlink(), "feedback.sqlite is missing"),
    ],
)
def test_load_explains_what_is_wrong(
    build: Build, tmp_path: Path, damage: Callable[[Path], Any], message: str
) -> None:
    folder = _saved(build, tmp_path / "store")
    damage(folder)
    with pytest.raises(ConfigError, match=message):
        Recommender.load(folder)


def test_a_store_is_never_overwritten(build: Build, tmp_path: Path) -> None:
    folder = _saved(build, tmp_path / "store")
    before = (folder / "manifest.json").read_text()
    with pytest.raises(ConfigError, match="already holds a ragrec store"):
        build(path=folder)
    other = build(retriever={"channels": NO_SEMANTIC})
    with pytest.raises(ConfigError, match="holds another ragrec store"):
        other.save(folder)
    assert (folder / "manifest.json").read_text() == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        build(path=tmp_path / "file")
    other.close()


# catalog changes ---------------------------------------------------------------------------


def test_add_items(build: Build, user: int) -> None:
    rec = build()
    _like(rec, user, int(rec.catalog.item_ids[7]))
    history = rec.history(user)
    new = pd.DataFrame(
        {
            "item_id": [900001, 900002],
            "title": ["Octopus Detectives of the Deep Sea (2031)", "Quiet Ledger (2030)"],
            "genres": ["Animation|Mystery", "Documentary"],
        }
    )
    assert rec.add_items(Catalog.from_frame(new, columns={"genres": "genres"})) == 2
    assert len(rec.catalog) == N_ITEMS + 2
    found = rec.recommend("diver", k=3, query="octopus detective mystery under the sea")
    assert found.item_ids[0] == 900001
    assert rec.history(user) == history  # feedback profiles kept their items
    with pytest.raises(DataValidationError, match="already in the catalog"):
        rec.add_items(pd.DataFrame({"item_id": [900001], "title": ["Again (2031)"]}))
    assert len(rec.catalog) == N_ITEMS + 2
    rec.close()


def test_remove_items(build: Build, data: tuple[Catalog, Interactions], user: int) -> None:
    rec = build()
    liked = int(rec.catalog.item_ids[-1])
    _like(rec, user, liked)
    gone = rec.recommend(user, k=3, explain=False).item_ids[0]
    popular = rec.recommend(10**9, k=1).item_ids[0]
    assert rec.remove_items([gone, popular, gone]) == 2

    assert gone not in rec.catalog
    assert popular not in rec.catalog
    users = [int(u) for u in np.unique(data[1].user_ids)[:10]] + [10**9]
    for result in rec.recommend_batch(users, k=20, filters=Filters(exclude_seen=False)):
        assert gone not in result.item_ids
        assert popular not in result.item_ids
    assert popular not in rec.recommend("x", k=10, query=data[0].titles[0]).item_ids
    assert popular not in rec.interactions.item_ids
    # the user's liked item keeps its place (positions were remapped)
    assert rec.history(user)[-1] == (liked, str(data[0].titles[-1]))
    with pytest.raises(DataValidationError, match="not in the catalog"):
        rec.remove_items([gone])
    with pytest.raises(ConfigError, match="remove all"):
        rec.remove_items(rec.catalog.item_ids.tolist())
    assert len(rec.catalog) == N_ITEMS - 2
    rec.close()


# concurrency and crashes -------------------------------------------------------------------


def test_recommend_while_feedback_arrives(build: Build, user: int) -> None:
    rec = build()
    items = rec.catalog.item_ids.tolist()
    errors: list[BaseException] = []
    stop = threading.Event()

    def serve() -> None:
        try:
            while not stop.is_set():
                for result in rec.recommend_batch([user, "cold", 10**9], k=10):
                    assert len(result.items) == 10
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i, item in enumerate(items[:40]):
            kind = "dislike" if i % 3 == 0 else "like"
            rec.feedback({"user_id": user, "item_id": item, "kind": kind})
            rec.feedback({"user_id": "cold", "item_id": item, "kind": kind})
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []
    assert rec.store.count() == 80
    blocked = set(items[:40:3])
    for u in (user, "cold"):
        got = rec.recommend(u, k=50, filters=Filters(exclude_seen=False)).item_ids
        assert not set(got) & blocked
    rec.close()


CHILD = """
import sys
from ragrec import Recommender

rec = Recommender.load(sys.argv[1])
user = int(sys.argv[2])
i = 0
while True:
    served = rec.recommend(user, k=3, explain=False)
    for item in served.items:
        event_id = f"kill-{i}"
        kind = "like" if i % 4 else "click"
        rec.feedback({"event_id": event_id, "user_id": user, "item_id": item.item_id,
                      "kind": kind, "rec_id": served.id})
        print(event_id, item.item_id, flush=True)
        i += 1
"""


def test_acknowledged_feedback_survives_sigkill(build: Build, tmp_path: Path, user: int) -> None:
    """A process sends feedback through the facade and prints each event id once
    feedback() has returned; killed with SIGKILL, every printed event is in the store,
    the store loads, and the history and weights reflect them."""
    folder = _saved(build, tmp_path / "store")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), str(user)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(120, proc.kill)  # a stuck child fails the test, not CI
    watchdog.start()
    acknowledged: list[tuple[str, int]] = []
    try:
        while len(acknowledged) < 30:
            line = proc.stdout.readline()
            if not line:
                break
            event_id, item = line.split()
            acknowledged.append((event_id, int(item)))
        os.kill(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
    finally:
        watchdog.cancel()
    assert len(acknowledged) >= 30, f"the child stopped early: {err}"
    assert proc.returncode == -signal.SIGKILL
    complete, _, _partial = rest.rpartition("\n")
    acknowledged += [(e, int(i)) for e, i in (line.split() for line in complete.splitlines())]

    loaded = Recommender.load(folder)
    stored = {e.event_id: e for e in loaded.store.events(user)}
    missing = [e for e, _ in acknowledged if e not in stored]
    assert missing == [], f"{len(missing)} acknowledged events lost"
    assert len(set(stored) - {e for e, _ in acknowledged}) <= 1  # the one in flight
    history = [i for i, _ in loaded.history(user)]
    assert {i for _, i in acknowledged} <= set(history)
    assert loaded.weights(user) == loaded.store.get_weights(user) != loaded.weights(None)
    conn = sqlite3.connect(folder / "feedback.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    loaded.close()
