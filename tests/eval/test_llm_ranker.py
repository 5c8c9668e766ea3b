"""Tests for ragrec.eval._llm_ranker: the full pipeline (retrieval, the real LLM, the
fitted blend) evaluated on the llamarec split, and its degradation to retrieval order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from generation.conftest import FailingGenerator, real_generator
from ragrec.eval import (
    DEFAULT_METRICS,
    EvalResult,
    LLMRanker,
    ProtocolData,
    evaluate,
    make_ranker,
)
from ragrec.eval.metrics import UNRANKED
from ragrec.generation import BUNDLED_MODEL, Generator
from ragrec.retrieval import RetrievalQuery

RETRIEVER = {"channels": [{"kind": "transition"}, {"kind": "popularity", "weight": 0.01}]}
USERS = 6
N_CANDIDATES = 20  # LLMRankerConfig's default
DEPTH = 100


def _llm_ranker(generator: Generator) -> LLMRanker:
    """The llm ranker with ``generator`` injected (the session's model, loaded once)."""
    ranker = make_ranker("llm", {"retriever": RETRIEVER, "blend_users": USERS})
    assert isinstance(ranker, LLMRanker)
    ranker.generator = generator
    ranker._ranker = None  # rebuilt around the injected generator on first use
    return ranker


@pytest.fixture(scope="module")
def retrieval_only(llamarec_data: ProtocolData) -> EvalResult:
    """The same retriever ranking alone, to the same depth."""
    ranker = make_ranker("retrieval", {"retriever": RETRIEVER, "depth": DEPTH})
    return evaluate(llamarec_data, ranker, split="test", limit_users=USERS)


def test_llm_ranker_on_the_llamarec_test_split(
    llamarec_data: ProtocolData, retrieval_only: EvalResult
) -> None:
    ranker = _llm_ranker(real_generator())
    result = evaluate(llamarec_data, ranker, split="test", limit_users=USERS)

    assert set(result.metrics) == set(DEFAULT_METRICS)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    np.testing.assert_array_equal(result.user_ids, retrieval_only.user_ids)
    for llm_rank, ret_rank in zip(result.ranks, retrieval_only.ranks, strict=True):
        if ret_rank == UNRANKED:  # the target is not among the retrieval candidates
            assert llm_rank == UNRANKED
        elif ret_rank <= N_CANDIDATES:  # re-ranked, still among the top candidates
            assert 1 <= llm_rank <= N_CANDIDATES
        else:  # deeper candidates keep their retrieval rank
            assert llm_rank == ret_rank
    assert (result.ranks[retrieval_only.ranks < UNRANKED] <= DEPTH).all()

    report = ranker.report()
    assert report["backend"] == "transformers"
    assert report["model"] == BUNDLED_MODEL
    assert report["device"] == "cpu"
    assert 0.0 <= report["blend_weight"] <= 1.0
    assert len(report["blend_table"]) == 21
    assert report["blend_weight"] in report["blend_table"]
    assert report["blend_table"][report["blend_weight"]] == max(report["blend_table"].values())
    assert report["scored"] == 2 * USERS  # validation users for the blend, then test users
    assert report["degraded"] == 0
    assert result.config["blend_weight"] == report["blend_weight"]
    assert result.config["model"] == BUNDLED_MODEL


def test_failing_backend_degrades_to_retrieval_order(
    llamarec_data: ProtocolData,
    retrieval_only: EvalResult,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing = FailingGenerator(real_generator().tokenizer)
    ranker = _llm_ranker(failing)
    queries: list[RetrievalQuery] = []
    retrieve_batch = ranker.retriever.retrieve_batch

    def recording(batch: Sequence[RetrievalQuery], **kwargs: Any) -> Any:
        queries.extend(batch)
        return retrieve_batch(batch, **kwargs)

    monkeypatch.setattr(ranker.retriever, "retrieve_batch", recording)
    with caplog.at_level(logging.WARNING, logger="ragrec.generation._rerank"):
        result = evaluate(llamarec_data, ranker, split="test", limit_users=USERS)

    # the deep and the re-ranked lists ask with ratings, as the retrieval ranker does
    # (rating-weighted channels would otherwise order the deep candidates differently)
    assert len(queries) == 2 * USERS  # validation lists, then the test lists (top N sliced)
    assert all(q.ratings is not None and len(q.ratings) == len(q.history) for q in queries)

    assert failing.calls >= 2  # the blend fit and the test batch both tried the backend
    assert "degraded to retrieval order" in caplog.text
    report = ranker.report()
    assert report["scored"] == 2 * USERS
    assert report["degraded"] == report["scored"]
    assert report["blend_weight"] == 0.0  # nothing to blend: ties go to retrieval
    assert report["backend"] == "failing"
    np.testing.assert_array_equal(result.user_ids, retrieval_only.user_ids)
    np.testing.assert_array_equal(result.ranks, retrieval_only.ranks)
    assert result.metrics == retrieval_only.metrics
