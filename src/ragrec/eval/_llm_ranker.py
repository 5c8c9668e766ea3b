"""The full pipeline as a ranker: retrieval top-N re-ranked by the LLM, blended, with
optional few-shot exemplars and explanations of each user's top items."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval._protocol import ProtocolData
from ragrec.eval._rankers import Ranker, UserBatch
from ragrec.generation import (
    ExplainConfig,
    Explainer,
    ExplainItem,
    ExplanationResult,
    Generator,
    GeneratorConfig,
    LLMScores,
    TitleIndex,
    make_generator,
)
from ragrec.generation._rerank import RerankConfig, VerbalizerRanker, blend_scores, fit_blend_weight
from ragrec.prompting import LABELS, ExemplarConfig, ExemplarPool, PromptBuilder, PromptConfig
from ragrec.retrieval import (
    Candidate,
    CandidateList,
    RetrievalQuery,
    Retriever,
    RetrieverConfig,
)

logger = logging.getLogger(__name__)

__all__ = ["LLMRanker", "LLMRankerConfig"]


class LLMRankerConfig(Settings):
    """Configuration of :class:`LLMRanker`."""

    retriever: RetrieverConfig = Field(default_factory=RetrieverConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    n_candidates: int = Field(default=20, ge=2, le=26, description="Candidates re-ranked.")
    depth: int = Field(default=100, ge=1, description="Retrieval candidates scored in all.")
    fit_blend: bool = Field(
        default=True,
        description="Fit the blend weight on the validation split before scoring (else "
        "use rerank.blend_weight).",
    )
    blend_users: int | None = Field(
        default=200, ge=1, description="Validation users the blend is fit on (None: all)."
    )
    exemplars: ExemplarConfig = Field(
        default_factory=lambda: ExemplarConfig(k=0),
        description="Few-shot exemplars, seeded from the training rows in fit(). Off by "
        "default (k=0): each costs prompt tokens, and with selection='similar' defeats "
        "the prefix cache. An [exemplars] table turns them on (k=2 unless set).",
    )
    explain_top: int = Field(
        default=0,
        ge=0,
        le=26,
        description="Explain each scored user's top N items of the final ranking (0: off; "
        "each explanation is a generation, seconds on CPU). They go into users.jsonl.",
    )
    explain: ExplainConfig = Field(
        default_factory=ExplainConfig, description="Explanation budget and validation."
    )

    @model_validator(mode="after")
    def _explain_within_candidates(self) -> LLMRankerConfig:
        if self.explain_top > self.n_candidates:
            raise ValueError(
                f"explain_top={self.explain_top} exceeds n_candidates={self.n_candidates}: only "
                "re-ranked candidates have a label to explain; lower explain_top"
            )
        return self


class LLMRanker(Ranker):
    """Retrieval top-``n_candidates`` re-ranked by label log-probabilities, blended with
    the retrieval score by a weight fit on validation data; deeper retrieval candidates
    follow in retrieval order.

    With ``exemplars.k > 0``, :meth:`fit` seeds an exemplar pool from the training rows it
    is given (never a held-out target) and every prompt gets ``k`` of them (never the
    scored user's own). With ``explain_top > 0``, :meth:`score` explains each user's top
    items; :meth:`user_extras` hands them to the runner for ``users.jsonl``.
    """

    name = "llm"

    def __init__(
        self, config: LLMRankerConfig | None = None, *, generator: Generator | None = None
    ) -> None:
        self.config = config or LLMRankerConfig()
        self.retriever = Retriever(self.config.retriever)
        self.generator = generator or make_generator(self.config.generator)
        self._ranker: VerbalizerRanker | None = None
        self.exemplars: ExemplarPool | None = None
        self.blend_weight = self.config.rerank.blend_weight
        self.blend_table: dict[float, float] = {}
        self.degraded = 0
        self.scored = 0
        self.explained = self.explained_llm = self.rewrites = 0
        self.explain_seconds = 0.0
        self._labels: dict[Any, str] = {}
        self._title_index: TitleIndex | None = None
        self.stage_seconds = {"retrieve": 0.0, "llm": 0.0}
        self._extras: dict[Any, dict[str, Any]] = {}

    @property
    def ranker(self) -> VerbalizerRanker:
        """The verbalizer ranker (loads the tokenizer on first use)."""
        if self._ranker is None:
            builder = PromptBuilder(self.generator.tokenizer, self.config.prompt)
            self._ranker = VerbalizerRanker(
                self.generator, builder, self.config.rerank, exemplars=self.exemplars
            )
        return self._ranker

    def fit(self, catalog: Catalog, interactions: Interactions) -> LLMRanker:
        """Fit the retriever and, with exemplars on, seed their pool from ``interactions``
        (the training rows: each exemplar's answer is a user's last training item)."""
        self.retriever.fit(catalog, interactions)
        self._catalog = catalog
        self.degraded = self.scored = 0
        self.explained = self.explained_llm = self.rewrites = 0
        self._title_index = None
        self.explain_seconds = 0.0
        self.stage_seconds = {"retrieve": 0.0, "llm": 0.0}
        self._extras = {}
        self.exemplars = None
        cfg = self.config.exemplars
        if cfg.k > 0:
            embedder = self.retriever.embedder if cfg.selection == "similar" else None
            self.exemplars = ExemplarPool(cfg, embedder=embedder)
            self.exemplars.seed_from_training(
                catalog, interactions, candidates=self._retrieved_positions
            )
        if self._ranker is not None:
            self._ranker.exemplars = self.exemplars
        return self

    def _retrieved_positions(self, user_id: Any, history: np.ndarray, k: int) -> list[int]:
        """Retrieval candidates for a history: the seeded exemplars' wrong answers, as hard
        as the candidates the model is asked to rank."""
        result = self.retriever.retrieve(RetrievalQuery(user_id, history), k=k)
        return [int(p) for p in result.positions]

    def tune(self, data: ProtocolData) -> None:
        """Fit the blend weight on the validation split (called by the runner)."""
        if not self.config.fit_blend:
            return
        cases = data.cases("validation")
        if self.config.blend_users is not None:
            cases = cases.head(self.config.blend_users)
        batch = UserBatch(cases.user_ids, cases.histories, cases.ratings, cases.candidates)
        lists = self._rerank(*self._retrieve(batch, self.config.n_candidates))
        retrieval, llm, targets = [], [], []
        for (positions, ret_scores, llm_scores), target in zip(lists, cases.targets, strict=True):
            hits = np.flatnonzero(positions == target)
            retrieval.append(ret_scores)
            llm.append(llm_scores.logprobs)
            targets.append(int(hits[0]) if len(hits) else -1)
        self.blend_weight, self.blend_table = fit_blend_weight(retrieval, llm, targets)
        logger.info("blend weight fit on %d validation users: %s", len(cases), self.blend_weight)

    def tuned_state(self) -> dict[str, Any]:
        """The blend weight fit by :meth:`tune`."""
        return {"blend_weight": self.blend_weight}

    def load_tuned_state(self, state: dict[str, Any]) -> None:
        if "blend_weight" in state:
            self.blend_weight = float(state["blend_weight"])

    def _retrieve(
        self, batch: UserBatch, k: int
    ) -> tuple[list[RetrievalQuery], list[CandidateList]]:
        ratings = batch.ratings or tuple(np.empty(0) for _ in batch.histories)
        queries = [
            RetrievalQuery(u, h, r if len(r) == len(h) else None)
            for u, h, r in zip(batch.user_ids, batch.histories, ratings, strict=True)
        ]
        start = time.perf_counter()
        if not batch.candidates:
            results = self.retriever.retrieve_batch(queries, k=k)
        else:
            # a candidate-set protocol: the given items, in retrieval order, are re-ranked
            full = self.retriever.retrieve_batch(queries, k=len(self._catalog))
            results = [
                self._restrict(res, cands)
                for res, cands in zip(full, batch.candidates, strict=True)
            ]
        self.stage_seconds["retrieve"] += time.perf_counter() - start
        return queries, results

    def _restrict(self, result: CandidateList, positions: np.ndarray) -> CandidateList:
        """``result`` cut to ``positions``; a position retrieval did not score follows the
        scored ones (below the lowest score, in the given order)."""
        wanted = {int(p) for p in positions}
        kept = [c for c in result.candidates if c.position in wanted]
        floor = min((c.score for c in kept), default=0.0) - 1.0
        found = {c.position for c in kept}
        kept += [
            Candidate(self._catalog.item_ids[p], int(p), str(self._catalog.titles[p]), floor, ())
            for p in positions
            if int(p) not in found
        ]
        return dataclasses.replace(result, candidates=tuple(kept))

    def _rerank(
        self, queries: list[RetrievalQuery], results: list[CandidateList]
    ) -> list[tuple[np.ndarray, np.ndarray, LLMScores]]:
        """LLM scores for each result's top ``n_candidates``."""
        catalog = self._catalog
        n = self.config.n_candidates
        requests = []
        for q, res in zip(queries, results, strict=True):
            hist = [(catalog.item_ids[p], str(catalog.titles[p])) for p in q.history]
            cands = [(c.item_id, c.title) for c in res.candidates[:n]]
            requests.append({"user_key": q.user_id, "history": hist, "candidates": cands})
        start = time.perf_counter()
        scored = self.ranker.score_batch(requests) if requests else []
        self.stage_seconds["llm"] += time.perf_counter() - start
        out = []
        for res, llm in zip(results, scored, strict=True):
            self.scored += 1
            self.degraded += int(llm.degraded)
            out.append((res.positions[:n], res.scores[:n], llm))
        return out

    def score(self, batch: UserBatch) -> np.ndarray:
        if self.retriever.catalog is None:
            raise ConfigError("ranker 'llm' scored before fit(); call fit first")
        out = np.full((len(batch), len(self._catalog)), -np.inf)
        queries, deep = self._retrieve(batch, max(self.config.depth, self.config.n_candidates))
        for row, res in enumerate(deep):
            # deeper candidates keep retrieval order below every re-ranked one
            out[row, res.positions] = res.scores - res.scores.max() - 1.0 if len(res) else 0.0
        extras: dict[Any, dict[str, Any]] = {}
        explainer = Explainer(self.generator, self.config.explain)
        for row, (positions, ret, llm) in enumerate(self._rerank(queries, deep)):
            results: list[ExplanationResult] = []
            if len(positions):
                blended = blend_scores(ret, llm.logprobs, self.blend_weight)
                out[row, positions] = 1000.0 + blended
                if self.config.explain_top:
                    results = self._explain(
                        explainer, queries[row], deep[row], positions, blended, llm
                    )
            if self.config.explain_top:
                extras[_key(queries[row].user_id)] = {
                    "explanations": [_as_json(r, self._labels) for r in results]
                }
        self._extras = extras
        return out

    def _explain(
        self,
        explainer: Explainer,
        query: RetrievalQuery,
        candidates: CandidateList,
        positions: np.ndarray,
        blended: np.ndarray,
        llm: LLMScores,
    ) -> list[ExplanationResult]:
        """Explanations of the top ``explain_top`` items of one user's final ranking, from
        their retrieval evidence (rewritten by the LLM, checked), as the product writes
        them; each item's label is the one it had in the (first) ranking prompt."""
        n = len(positions)
        if llm.prompts:
            prompt = llm.prompts[0]
            self._labels = {item: prompt.label_of(item) for item in prompt.candidate_ids}
        else:  # the prompt could not be rendered: the labels it would have shown
            order = self.ranker.builder.order(query.user_id, n, 0)
            self._labels = {llm.item_ids[i]: LABELS[j] for j, i in enumerate(order)}
        top = np.argsort(-blended, kind="stable")[: self.config.explain_top]
        chosen = self.retriever.evidence(query, [candidates.candidates[i] for i in top])
        if self._title_index is None:
            self._title_index = TitleIndex(self._catalog.titles.tolist())
        results = explainer.explain(
            [ExplainItem(c.item_id, c.title, c.evidence) for c in chosen],
            rewrite=len(chosen),
            titles=self._title_index,
        )
        for r in results:
            self.explained += 1
            self.explained_llm += int(r.source == "llm")
            self.rewrites += int(r.llm_text is not None)
            self.explain_seconds += r.seconds
        return results

    def user_extras(self, batch: UserBatch) -> list[dict[str, Any]]:
        """Per user of the batch just scored: ``{"explanations": [...]}`` when
        ``explain_top > 0`` (item, label, text, source, template, cited, rejected,
        seconds per item, best first), else nothing."""
        return [self._extras.get(_key(u), {}) for u in batch.user_ids]

    def report(self) -> dict[str, Any]:
        """Model, backend, blend weight, degraded count, exemplar pool size, and the
        explanation counts (``explanations``: valid ones written; ``explanations_invalid``:
        dropped after a retry; ``invalid_rate``: invalid share; ``explain_seconds``), and
        the seconds spent retrieving and in the LLM's ranking pass (``stage_seconds``,
        validation users of the blend fit included)."""
        info = self.generator.info
        return {
            "backend": info.backend,
            "model": info.model,
            "device": info.device,
            "blend_weight": self.blend_weight,
            "blend_table": self.blend_table,
            "degraded": self.degraded,
            "scored": self.scored,
            "exemplar_pool": len(self.exemplars) if self.exemplars is not None else 0,
            "explanations": self.explained,
            "explanations_llm": self.explained_llm,
            "rewrites": self.rewrites,
            "rewrite_acceptance": self.explained_llm / self.rewrites if self.rewrites else 0.0,
            "explain_seconds": self.explain_seconds,
            "stage_seconds": dict(self.stage_seconds),
        }


def _key(user_id: Any) -> Any:
    return user_id.item() if isinstance(user_id, np.generic) else user_id


def _as_json(result: ExplanationResult, labels: Mapping[Any, str]) -> dict[str, Any]:
    return {
        "item": _key(result.item_id),
        "label": labels.get(result.item_id),
        "text": result.text,
        "source": result.source,
        "template": result.template,
        "cited": [_key(c) for c in result.cited],
        "rejected": result.rejected,
        "seconds": round(result.seconds, 3),
    }
