"""The full pipeline as a ranker: retrieval top-N re-ranked by the LLM, blended, with
optional few-shot exemplars and explanations of each user's top items. It runs the
product's request path (:class:`ragrec._pipeline.Pipeline`), so what is measured is the
order a user gets."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ragrec._pipeline import Pipeline, Ranked
from ragrec._results import plain_value
from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval._protocol import ProtocolData
from ragrec.eval._rankers import Ranker, UserBatch
from ragrec.generation import (
    ExplainConfig,
    ExplanationResult,
    Generator,
    GeneratorConfig,
    RerankConfig,
    VerbalizerRanker,
    fit_blend_weight,
    make_generator,
)
from ragrec.prompting import LABELS, ExemplarConfig, ExemplarPool, PromptConfig
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
    follow in retrieval order (the product's rule, :func:`ragrec._pipeline.final_order`).

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
        cfg = self.config
        self.retriever = Retriever(cfg.retriever)
        self.pipeline = Pipeline(
            generator or make_generator(cfg.generator),
            prompt=cfg.prompt,
            rerank=cfg.rerank,
            explain=cfg.explain,
            n_candidates=cfg.n_candidates,
        )
        self.exemplars: ExemplarPool | None = None
        self.blend_weight = cfg.rerank.blend_weight
        self.blend_table: dict[float, float] = {}
        self.degraded = 0
        self.scored = 0
        self.explained = self.explained_llm = self.rewrites = 0
        self.explain_seconds = 0.0
        self._labels: dict[Any, str] = {}
        self.stage_seconds = {"retrieve": 0.0, "llm": 0.0}
        self._extras: dict[Any, dict[str, Any]] = {}

    @property
    def generator(self) -> Generator:
        """The LLM backend."""
        return self.pipeline.generator

    @generator.setter
    def generator(self, generator: Generator) -> None:
        self.pipeline.generator = generator

    @property
    def ranker(self) -> VerbalizerRanker:
        """The verbalizer ranker (loads the tokenizer on first use)."""
        return self.pipeline.ranker

    def fit(self, catalog: Catalog, interactions: Interactions) -> LLMRanker:
        """Fit the retriever and, with exemplars on, seed their pool from ``interactions``
        (the training rows: each exemplar's answer is a user's last training item)."""
        self.retriever.fit(catalog, interactions)
        self._catalog = catalog
        self.degraded = self.scored = 0
        self.explained = self.explained_llm = self.rewrites = 0
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
        self.pipeline.exemplars = self.exemplars
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
        queries, results = self._retrieve(batch, self.config.n_candidates)
        outcomes = self._time_llm(lambda: self.pipeline.rerank(queries, results, self._catalog))
        retrieval, llm, targets = [], [], []
        n = self.config.n_candidates
        for res, outcome, target in zip(results, outcomes, cases.targets, strict=True):
            self._count(outcome.degraded)
            positions = res.positions[:n]
            hits = np.flatnonzero(positions == target)
            retrieval.append(res.scores[:n])
            # a degraded list has no LLM scores: zeros leave its retrieval order
            lp = outcome.logprobs
            llm.append(lp if lp is not None else np.zeros(len(positions)))
            targets.append(int(hits[0]) if len(hits) else -1)
        self.blend_weight, self.blend_table = fit_blend_weight(retrieval, llm, targets)
        logger.info("blend weight fit on %d validation users: %s", len(cases), self.blend_weight)

    def tuned_state(self) -> dict[str, Any]:
        """The blend weight fit by :meth:`tune`."""
        return {"blend_weight": self.blend_weight}

    def load_tuned_state(self, state: dict[str, Any]) -> None:
        if "blend_weight" in state:
            self.blend_weight = float(state["blend_weight"])

    def _count(self, degraded: str | None) -> None:
        self.scored += 1
        self.degraded += int(degraded is not None)

    def _time_llm(self, call: Any) -> Any:
        start = time.perf_counter()
        out = call()
        self.stage_seconds["llm"] += time.perf_counter() - start
        return out

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
            results, _ = self.pipeline.retrieve(self.retriever, queries, k=k)
        else:
            # a candidate-set protocol: the given items, in retrieval order, are re-ranked
            full, _ = self.pipeline.retrieve(self.retriever, queries, k=len(self._catalog))
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

    def score(self, batch: UserBatch) -> np.ndarray:
        if self.retriever.catalog is None:
            raise ConfigError("ranker 'llm' scored before fit(); call fit first")
        out = np.full((len(batch), len(self._catalog)), -np.inf)
        queries, deep = self._retrieve(batch, max(self.config.depth, self.config.n_candidates))
        top = self.config.explain_top
        ranked = self.pipeline.rank(
            self.retriever,
            queries,
            deep,
            self._catalog,
            k=top,
            blend=self.blend_weight,
            explain=top > 0,
            rewrite=top,
        )
        extras: dict[Any, dict[str, Any]] = {}
        for row, r in enumerate(ranked):
            self._count(r.rerank.degraded)
            self.stage_seconds["llm"] += r.llm_seconds
            # the product's order, as scores: the final score decreases with the rank
            out[row, r.candidates.positions] = r.final
            if top:
                results = [it.explanation for it in r.items if it.explanation is not None]
                self._tally(results, r)
                extras[plain_value(r.query.user_id)] = {
                    "explanations": [_as_json(e, self._labels) for e in results]
                }
        self._extras = extras
        return out

    def _tally(self, results: list[ExplanationResult], ranked: Ranked) -> None:
        """Count the explanations, and note each explained item's label: the one it had in
        the (first) ranking prompt, or the one it would have had."""
        if not results:
            return
        prompt = ranked.rerank.prompt
        if prompt is not None:
            self._labels = {item: prompt.label_of(item) for item in prompt.candidate_ids}
        else:  # the prompt could not be rendered: the labels it would have shown
            n = min(len(ranked.candidates), self.config.n_candidates)
            order = self.ranker.builder.order(plain_value(ranked.query.user_id), n, 0)
            items = ranked.candidates.item_ids
            self._labels = {items[i]: LABELS[j] for j, i in enumerate(order)}
        for r in results:
            self.explained += 1
            self.explained_llm += int(r.source == "llm")
            self.rewrites += int(r.llm_text is not None)
            self.explain_seconds += r.seconds

    def user_extras(self, batch: UserBatch) -> list[dict[str, Any]]:
        """Per user of the batch just scored: ``{"explanations": [...]}`` when
        ``explain_top > 0`` (item, label, text, source, template, cited, rejected,
        seconds per item, best first), else nothing."""
        return [self._extras.get(plain_value(u), {}) for u in batch.user_ids]

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


def _as_json(result: ExplanationResult, labels: Mapping[Any, str]) -> dict[str, Any]:
    return {
        "item": plain_value(result.item_id),
        "label": labels.get(result.item_id),
        "text": result.text,
        "source": result.source,
        "template": result.template,
        "cited": [plain_value(c) for c in result.cited],
        "rejected": result.rejected,
        "seconds": round(result.seconds, 3),
    }
