"""One request path: the product and its evaluation rank through the same pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from generation.conftest import real_generator
from ragrec import Recommender
from ragrec._pipeline import final_order
from ragrec.eval import LLMRanker, UserBatch, make_ranker

RETRIEVER = {"channels": [{"kind": "transition"}, {"kind": "popularity", "weight": 0.01}]}
BLEND = 0.5
USERS = [1, 7]


def test_final_order_puts_the_reranked_head_above_the_tail() -> None:
    retrieval = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    llm = np.array([-3.0, -0.1, -2.0])  # prefers the second candidate
    order, final = final_order(retrieval, llm, 1.0)
    assert order.tolist() == [1, 2, 0, 3, 4]
    assert np.all(np.diff(final[order]) < 0)
    # without LLM scores, or with weight 0, the retrieval order stands
    assert final_order(retrieval, None, 1.0)[0].tolist() == [0, 1, 2, 3, 4]
    assert final_order(retrieval, llm, 0.0)[0].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_eval_ranker_measures_the_order_users_get(ml_small: Any) -> None:
    """For the same user, data and blend weight, ``ragrec eval --ranker llm`` ranks the
    items in exactly the order ``Recommender.recommend`` serves them (the LLM really
    ranks: its scores enter the blend)."""
    generator = real_generator()
    rec = Recommender.build(
        ml_small.catalog,
        ml_small.interactions,
        {
            "retriever": RETRIEVER,
            "rerank": {"blend_weight": BLEND},
            "exemplars": {"k": 0},
            "llm_candidates": 20,
        },
        generator=generator,
    )
    ranker = make_ranker(
        "llm",
        {"retriever": RETRIEVER, "rerank": {"blend_weight": BLEND}, "fit_blend": False},
    )
    assert isinstance(ranker, LLMRanker)
    ranker.generator = generator
    ranker.fit(ml_small.catalog, ml_small.interactions)
    queries = [rec.retriever.query(u) for u in USERS]
    batch = UserBatch(
        np.asarray(USERS),
        tuple(q.history for q in queries),
        tuple(q.ratings if q.ratings is not None else np.empty(0) for q in queries),
    )
    scores = ranker.score(batch)
    for row, user in enumerate(USERS):
        served = rec.recommend(user, k=10, explain=False)
        assert served.llm_ranked
        assert not served.degraded
        measured = np.argsort(-scores[row], kind="stable")[:10]
        assert ml_small.catalog.item_ids[measured].tolist() == served.item_ids
    assert ranker.report()["degraded"] == 0
    rec.close()
