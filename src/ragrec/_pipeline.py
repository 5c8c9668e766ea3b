"""The request path after retrieval, shared by the product and its evaluation: re-rank
the top candidates with the LLM, blend with the retrieval score, order, explain.

:class:`~ragrec.Recommender` retrieves with the user's profile, filters and query boost,
the ``llm`` evaluation ranker with the protocol's histories; both hand the candidate
lists to :meth:`Pipeline.rank`, so the order a user gets is the order that is measured.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ragrec._results import Recommendation, RecommendedItem, plain_value
from ragrec.data import Catalog
from ragrec.errors import ConfigError
from ragrec.generation import (
    ExplainConfig,
    Explainer,
    ExplainItem,
    ExplanationResult,
    Generator,
    GeneratorConfig,
    LLMScores,
    RerankConfig,
    RerankRequest,
    TitleIndex,
    VerbalizerRanker,
    blend_scores,
)
from ragrec.prompting import (
    ExemplarPool,
    Message,
    PromptBuilder,
    PromptConfig,
    RenderedPrompt,
)
from ragrec.retrieval import (
    Candidate,
    CandidateList,
    ChannelWeights,
    Filters,
    RetrievalQuery,
    Retriever,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Pipeline",
    "Ranked",
    "RerankOutcome",
    "check_request",
    "final_order",
]


@dataclass(frozen=True)
class RerankOutcome:
    """The LLM's pass over one candidate list.

    Attributes:
        scores: The verbalizer's scores (None when the list was empty or the stage
            failed before scoring).
        prompt: The (first) ranking prompt, None when none was rendered.
        degraded: Why the LLM's scores cannot be used (None when they can).
    """

    scores: LLMScores | None = None
    prompt: RenderedPrompt | None = None
    degraded: str | None = None

    @property
    def logprobs(self) -> np.ndarray | None:
        """The label log-probabilities in retrieval order, None when degraded."""
        if self.scores is None or self.degraded is not None:
            return None
        return self.scores.logprobs


@dataclass(frozen=True)
class Ranked:
    """One candidate list after the pipeline.

    Attributes:
        query: The retrieval query (history and text).
        candidates: The retrieval candidates, retrieval order.
        order: Indices into ``candidates``, best first (every candidate).
        final: Final score per candidate (retrieval order; decreasing along ``order``).
        rerank: The LLM's pass (an empty outcome when it did not run).
        items: The first ``k`` of ``order`` as recommended items (explained when asked).
        llm_seconds: This list's share of the batch's LLM ranking time.
        explain_seconds: Time spent explaining this list.
    """

    query: RetrievalQuery
    candidates: CandidateList
    order: np.ndarray
    final: np.ndarray
    rerank: RerankOutcome
    items: tuple[RecommendedItem, ...]
    llm_seconds: float = 0.0
    explain_seconds: float = 0.0

    def recommendation(
        self,
        *,
        query: str | None,
        model: GeneratorConfig,
        blend: float,
        retrieval_seconds: float,
        note: str | None,
    ) -> Recommendation:
        """The typed result a user gets (a new id)."""
        prompt, lp = self.rerank.prompt, self.rerank.logprobs
        return Recommendation(
            id=uuid.uuid4().hex,
            user_id=self.query.user_id,
            items=self.items,
            query=query,
            weights=dict(self.candidates.weights),
            prompt_id=prompt.template_id if prompt else None,
            prompt_hash=prompt.hash if prompt else None,
            exemplar_ids=prompt.exemplar_ids if prompt else (),
            model=model.model,
            backend=model.backend,
            blend_weight=blend if lp is not None else 0.0,
            llm_ranked=lp is not None and blend > 0,
            timings={
                "retrieval": retrieval_seconds,
                "llm_rank": self.llm_seconds,
                "explain": self.explain_seconds,
                "total": retrieval_seconds + self.llm_seconds + self.explain_seconds,
            },
            degraded=self.rerank.degraded is not None,
            reason=self.rerank.degraded,
            cold_start=self.candidates.cold_start,
            llm_note=note,
        )


def check_request(k: Any, filters: Any) -> tuple[int, Filters]:
    """A request's ``k`` and filters, checked.

    Raises:
        ConfigError: ``k`` is not an integer >= 1, or ``filters`` is not a Filters.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k={k!r}: pass the number of items wanted, an integer >= 1")
    if filters is not None and not isinstance(filters, Filters):
        raise ConfigError(
            f"filters={filters!r}: pass a ragrec.retrieval.Filters (or None), e.g. "
            "Filters(genres_any=['Comedy'])"
        )
    return int(k), filters or Filters()


def final_order(
    retrieval: np.ndarray, llm: np.ndarray | None, blend: float
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the candidate list, best first, and the final scores.

    With LLM scores (for the first ``len(llm)`` candidates) and ``blend > 0``, those
    candidates get their blend; deeper ones keep the retrieval order below them (shifted
    under the lowest blend), so the final scores decrease with the rank.
    """
    final = np.asarray(retrieval, dtype=np.float64).copy()
    if llm is not None and blend > 0 and len(llm):
        n = len(llm)
        head = blend_scores(final[:n], llm, blend)
        tail = final[n:]
        if len(tail):
            tail = tail - tail.max() + head.min() - 1.0
        final = np.concatenate([head, tail])
    order = np.argsort(-final, kind="stable")
    return order, final


class _SharedPoolRanker(VerbalizerRanker):
    """The verbalizer ranker with exemplar selection under a lock, so a concurrent
    feedback event cannot change the pool while a request selects from it (the forward
    pass itself runs outside the lock)."""

    def __init__(self, *args: Any, lock: threading.RLock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool_lock = lock

    def shots(
        self, *, user_key: Any, history: Sequence[tuple[Any, str]]
    ) -> list[tuple[str, tuple[Message, Message]]]:
        with self._pool_lock:
            return super().shots(user_key=user_key, history=history)


class Pipeline:
    """Re-rank, blend, order and explain retrieval candidates.

    The LLM components are built on first use (a pipeline that never ranks nor rewrites
    never loads a model).

    Args:
        generator: The LLM backend, or a function that builds it.
        prompt: Ranking prompt template and budget.
        rerank: Permutations, calibration, and the default blend weight.
        explain: Explanation settings.
        n_candidates: Candidates the LLM ranks (labels A..); 0: retrieval only.
        exemplars: Few-shot exemplars for the ranking prompt (None: zero-shot).
        pool_lock: Held while exemplars are selected (the pool's writers hold it too).
    """

    def __init__(
        self,
        generator: Generator | Callable[[], Generator],
        *,
        prompt: PromptConfig,
        rerank: RerankConfig,
        explain: ExplainConfig,
        n_candidates: int,
        exemplars: ExemplarPool | None = None,
        pool_lock: threading.RLock | None = None,
    ) -> None:
        # a backend itself, or a function that builds one on first use
        factory = not isinstance(generator, Generator) and callable(generator)
        self._generator: Generator | None = None if factory else generator  # type: ignore[assignment]
        self._make_generator: Callable[[], Generator] | None = generator if factory else None  # type: ignore[assignment]
        self.prompt_config = prompt
        self.rerank_config = rerank
        self.explain_config = explain
        self.n_candidates = n_candidates
        self._exemplars = exemplars
        self._pool_lock = pool_lock or threading.RLock()
        self._ranker: VerbalizerRanker | None = None
        self._explainer: Explainer | None = None
        self._titles: tuple[Catalog, TitleIndex] | None = None
        self._lazy = threading.RLock()

    @property
    def generator(self) -> Generator:
        """The LLM backend (built on first use)."""
        if self._generator is None:
            with self._lazy:
                if self._generator is None:
                    assert self._make_generator is not None
                    self._generator = self._make_generator()
        return self._generator

    @generator.setter
    def generator(self, generator: Generator) -> None:
        with self._lazy:
            self._generator = generator
            self._ranker = None
            self._explainer = None

    def configure(
        self,
        *,
        prompt: PromptConfig,
        rerank: RerankConfig,
        explain: ExplainConfig,
        n_candidates: int,
    ) -> None:
        """Change the settings; the ranker and explainer are rebuilt on next use when
        theirs changed (the generator is kept)."""
        with self._lazy:
            if (prompt, rerank) != (self.prompt_config, self.rerank_config):
                self._ranker = None
            if explain != self.explain_config:
                self._explainer = None
            self.prompt_config, self.rerank_config = prompt, rerank
            self.explain_config, self.n_candidates = explain, n_candidates

    @property
    def exemplars(self) -> ExemplarPool | None:
        """The exemplar pool the ranking prompts draw from."""
        return self._exemplars

    @exemplars.setter
    def exemplars(self, pool: ExemplarPool | None) -> None:
        self._exemplars = pool
        if self._ranker is not None:
            self._ranker.exemplars = pool

    @property
    def ranker(self) -> VerbalizerRanker:
        """Prompt rendering and verbalizer scoring."""
        if self._ranker is None:
            with self._lazy:
                if self._ranker is None:
                    builder = PromptBuilder(self.generator.tokenizer, self.prompt_config)
                    self._ranker = _SharedPoolRanker(
                        self.generator,
                        builder,
                        self.rerank_config,
                        exemplars=self._exemplars,
                        lock=self._pool_lock,
                    )
        return self._ranker

    @property
    def explainer(self) -> Explainer:
        """Writes explanations."""
        if self._explainer is None:
            with self._lazy:
                if self._explainer is None:
                    self._explainer = Explainer(self.generator, self.explain_config)
        return self._explainer

    def titles(self, catalog: Catalog) -> TitleIndex:
        """The catalog's titles, indexed for checking explanations (once per catalog)."""
        cached = self._titles
        if cached is None or cached[0] is not catalog:
            cached = (catalog, TitleIndex(catalog.titles.tolist()))
            self._titles = cached
        return cached[1]

    # stages ---------------------------------------------------------------------------

    @staticmethod
    def retrieve(
        retriever: Retriever,
        queries: Sequence[RetrievalQuery],
        *,
        k: int,
        filters: Sequence[Filters] | None = None,
        boost: Mapping[str, float] | None = None,
    ) -> tuple[list[CandidateList], list[float]]:
        """Each query's ``k`` fused candidates and the seconds each took. ``filters``:
        one per query; ``boost``: multiply these channels' weights for the request (a
        free-text query is about its text). Without either, the queries are retrieved
        as one batch (channels score them together)."""
        if filters is None and not boost:
            start = time.perf_counter()
            results = retriever.retrieve_batch(queries, k=k)
            share = (time.perf_counter() - start) / max(1, len(queries))
            return results, [share] * len(queries)
        results, seconds = [], []
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            weights = None
            if boost:
                base = retriever.weights.for_user(q.user_id)
                weights = ChannelWeights({c: w * boost.get(c, 1.0) for c, w in base.items()})
            flt = filters[i] if filters is not None else None
            results.append(retriever.retrieve(q, k=k, filters=flt, weights=weights))
            seconds.append(time.perf_counter() - t0)
        return results, seconds

    def rerank(
        self,
        queries: Sequence[RetrievalQuery],
        results: Sequence[CandidateList],
        catalog: Catalog,
        *,
        text: str | None = None,
    ) -> list[RerankOutcome]:
        """The LLM's scores for each list's first ``n_candidates``. Never raises: a
        backend that cannot be built or fails degrades the lists (with the reason)."""
        n = self.n_candidates
        requests = [
            RerankRequest(
                # the shuffle is seeded by the key's repr: np.int64(1) and 1 must agree
                user_key=plain_value(q.user_id),
                history=[
                    (plain_value(catalog.item_ids[p]), str(catalog.titles[p])) for p in q.history
                ],
                candidates=[(c.item_id, c.title) for c in res.candidates[:n]],
                query=text,
            )
            for q, res in zip(queries, results, strict=True)
        ]
        outcomes = [RerankOutcome() for _ in requests]
        todo = [i for i, r in enumerate(requests) if r.candidates]
        if not todo:
            return outcomes
        try:
            scored = self.ranker.score_batch([requests[i] for i in todo])
        # Serving must not fail because the LLM stage did (a backend that cannot be built,
        # an unexpected error in a backend): degrade to the retrieval order.
        except Exception as exc:
            logger.warning("LLM stage failed; using the retrieval order", exc_info=True)
            reason = f"{type(exc).__name__}: {exc}"
            for i in todo:
                outcomes[i] = RerankOutcome(degraded=reason)
            return outcomes
        for i, s in zip(todo, scored, strict=True):
            outcomes[i] = RerankOutcome(
                scores=s,
                prompt=s.prompts[0] if s.prompts else None,
                degraded=s.reason if s.degraded else None,
            )
        return outcomes

    def explain(
        self,
        retriever: Retriever,
        query: RetrievalQuery,
        candidates: Sequence[Candidate],
        catalog: Catalog,
        *,
        rewrite: int,
        text: str | None = None,
    ) -> list[ExplanationResult]:
        """Explanations of ``candidates`` (best first): every one gets the sentence built
        from its retrieval evidence, the first ``rewrite`` the LLM's rewrite of it when
        it passes the checks. Never raises: a failing LLM leaves the evidence sentences."""
        with_evidence = retriever.evidence(query, candidates)
        asked = [ExplainItem(c.item_id, c.title, c.evidence) for c in with_evidence]
        rewrite = rewrite if self.explain_config.rewrite else 0
        explainer: Explainer | None = None
        reason = None
        if rewrite:
            try:
                explainer = self.explainer
            except Exception as exc:  # the backend cannot be built here: sentences only
                reason = f"LLM unavailable: {type(exc).__name__}: {exc}"
                logger.warning("explanation rewrites off: %s", reason)
        if explainer is None:
            explainer = Explainer(None, self.explain_config)
        results = explainer.explain(asked, rewrite=rewrite, titles=self.titles(catalog), query=text)
        if reason is not None:
            results = [replace(r, rejected=reason) for r in results]
        return results

    def rank(
        self,
        retriever: Retriever,
        queries: Sequence[RetrievalQuery],
        results: Sequence[CandidateList],
        catalog: Catalog,
        *,
        k: int,
        blend: float,
        score: bool = True,
        explain: bool = False,
        rewrite: int = 0,
        text: str | None = None,
    ) -> list[Ranked]:
        """Re-rank (when ``score``), blend with weight ``blend``, order, and turn each
        list's first ``k`` into recommended items, explained when ``explain`` (the first
        ``rewrite`` of them reworded by the LLM)."""
        n = len(queries)
        t0 = time.perf_counter()
        outcomes = (
            self.rerank(queries, results, catalog, text=text)
            if score and self.n_candidates > 0
            else [RerankOutcome() for _ in queries]
        )
        llm_seconds = (time.perf_counter() - t0) / max(1, n) if score else 0.0
        out = []
        for q, res, outcome in zip(queries, results, outcomes, strict=True):
            order, final = final_order(res.scores, outcome.logprobs, blend)
            items = _items(res, order[:k], final, outcome)
            t1 = time.perf_counter()
            if explain and items:
                chosen = [res.candidates[idx] for idx in order[:k]]
                explained = self.explain(retriever, q, chosen, catalog, rewrite=rewrite, text=text)
                items = [replace(it, explanation=r) for it, r in zip(items, explained, strict=True)]
            out.append(
                Ranked(
                    query=q,
                    candidates=res,
                    order=order,
                    final=final,
                    rerank=outcome,
                    items=tuple(items),
                    llm_seconds=llm_seconds,
                    explain_seconds=time.perf_counter() - t1,
                )
            )
        return out


def _items(
    result: CandidateList, top: np.ndarray, final: np.ndarray, outcome: RerankOutcome
) -> list[RecommendedItem]:
    prompt, lp = outcome.prompt, outcome.logprobs
    items = []
    for rank, idx in enumerate(top.tolist(), start=1):
        c = result.candidates[idx]
        label = (
            prompt.label_of(c.item_id)
            if prompt is not None and c.item_id in prompt.candidate_ids
            else None
        )
        items.append(
            RecommendedItem(
                item_id=c.item_id,
                title=c.title,
                rank=rank,
                score=float(final[idx]),
                retrieval_score=float(c.score),
                llm_logprob=float(lp[idx]) if lp is not None and idx < len(lp) else None,
                label=label,
                channels=tuple((p.channel, p.rank, p.score) for p in c.provenance),
            )
        )
    return items
