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
    prepare_protocol,
)
from ragrec.eval.metrics import UNRANKED
from ragrec.generation import BUNDLED_MODEL, Generator, RerankRequest
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
    """The same retriever ranking alone, to the same depth, with the same configured
    channel weights (the llm ranker does not fit the fusion on validation)."""
    ranker = make_ranker("retrieval", {"retriever": RETRIEVER, "depth": DEPTH, "fit_fusion": False})
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


def test_llm_ranker_reranks_exactly_the_candidate_set(ml_small: Any) -> None:
    """Under llmrank-c20 the LLM sees the protocol's 20 candidates (target among them), and
    every one of them is ranked: none is a miss for lying below the retrieval depth."""
    data = prepare_protocol("llmrank-c20", ml_small.catalog, ml_small.interactions)
    ranker = _llm_ranker(real_generator())
    seen: list[list[Any]] = []
    score_batch = ranker.ranker.score_batch

    def recording(requests: Sequence[RerankRequest]) -> Any:
        seen.extend([c[0] for c in r.candidates] for r in requests)
        return score_batch(requests)

    ranker.ranker.score_batch = recording  # type: ignore[method-assign]
    result = evaluate(data, ranker, split="test", limit_users=4, metrics=["ndcg@10"])
    cases = data.cases("test").head(4)
    test_lists = seen[-4:]  # after the validation users of the blend fit
    for shown, cands in zip(test_lists, cases.candidates, strict=True):
        assert sorted(shown) == sorted(data.catalog.item_ids[cands].tolist())
    assert ((result.ranks >= 1) & (result.ranks <= 20)).all()
    for top in result.top_ids:
        assert len([t for t in top if t is not None]) == 20


def test_tuned_state_round_trip() -> None:
    ranker = make_ranker("llm", {"retriever": RETRIEVER})
    assert isinstance(ranker, LLMRanker)
    ranker.blend_weight = 0.35
    other = make_ranker(*ranker.spec)  # type: ignore[misc]
    other.load_tuned_state(ranker.tuned_state())
    assert isinstance(other, LLMRanker)
    assert other.blend_weight == 0.35


def test_llm_ranker_on_ray_matches_local(llamarec_data: ProtocolData) -> None:
    """Two Ray actors, each loading its own model and fitting its own retriever, give the
    local run's ranks; the blend weight tuned on the driver reaches them."""
    config = {"retriever": RETRIEVER, "blend_users": 3, "generator": {"threads": 1}}
    local = evaluate(llamarec_data, make_ranker("llm", config), limit_users=4, batch_size=2)
    on_ray = evaluate(
        llamarec_data,
        make_ranker("llm", config),
        limit_users=4,
        batch_size=2,
        engine="ray",
        engine_options={"workers": 2},
    )
    np.testing.assert_array_equal(on_ray.ranks, local.ranks)
    assert on_ray.top_ids == local.top_ids
    assert on_ray.config["blend_weight"] == local.config["blend_weight"]
