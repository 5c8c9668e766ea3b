"""The full pipeline as a ranker: retrieval top-N re-ranked by the LLM, blended."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval._protocol import ProtocolData
from ragrec.eval._rankers import Ranker, UserBatch
from ragrec.generation import Generator, GeneratorConfig, make_generator
from ragrec.generation._rerank import RerankConfig, VerbalizerRanker, blend_scores, fit_blend_weight
from ragrec.prompting import PromptBuilder, PromptConfig
from ragrec.retrieval import RetrievalQuery, Retriever, RetrieverConfig

logger = logging.getLogger(__name__)

__all__ = ["LLMRanker", "LLMRankerConfig"]


class LLMRankerConfig(BaseModel):
    """Configuration of :class:`LLMRanker`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


class LLMRanker(Ranker):
    """Retrieval top-``n_candidates`` re-ranked by label log-probabilities, blended with
    the retrieval score by a weight fit on validation data; deeper retrieval candidates
    follow in retrieval order."""

    name = "llm"

    def __init__(
        self, config: LLMRankerConfig | None = None, *, generator: Generator | None = None
    ) -> None:
        self.config = config or LLMRankerConfig()
        self.retriever = Retriever(self.config.retriever)
        self.generator = generator or make_generator(self.config.generator)
        self._ranker: VerbalizerRanker | None = None
        self.blend_weight = self.config.rerank.blend_weight
        self.blend_table: dict[float, float] = {}
        self.degraded = 0
        self.scored = 0

    @property
    def ranker(self) -> VerbalizerRanker:
        """The verbalizer ranker (loads the tokenizer on first use)."""
        if self._ranker is None:
            builder = PromptBuilder(self.generator.tokenizer, self.config.prompt)
            self._ranker = VerbalizerRanker(self.generator, builder, self.config.rerank)
        return self._ranker

    def fit(self, catalog: Catalog, interactions: Interactions) -> LLMRanker:
        self.retriever.fit(catalog, interactions)
        self._catalog = catalog
        self.degraded = self.scored = 0
        return self

    def tune(self, data: ProtocolData) -> None:
        """Fit the blend weight on the validation split (called by the runner)."""
        if not self.config.fit_blend:
            return
        cases = data.cases("validation")
        if self.config.blend_users is not None:
            cases = cases.head(self.config.blend_users)
        batch = UserBatch(cases.user_ids, cases.histories, cases.ratings)
        lists = self._rerank(*self._retrieve(batch, self.config.n_candidates))
        retrieval, llm, targets = [], [], []
        for (positions, ret_scores, llm_scores), target in zip(lists, cases.targets, strict=True):
            hits = np.flatnonzero(positions == target)
            retrieval.append(ret_scores)
            llm.append(llm_scores)
            targets.append(int(hits[0]) if len(hits) else -1)
        self.blend_weight, self.blend_table = fit_blend_weight(retrieval, llm, targets)
        logger.info("blend weight fit on %d validation users: %s", len(cases), self.blend_weight)

    def _retrieve(self, batch: UserBatch, k: int) -> tuple[list[RetrievalQuery], list[Any]]:
        ratings = batch.ratings or tuple(np.empty(0) for _ in batch.histories)
        queries = [
            RetrievalQuery(u, h, r if len(r) == len(h) else None)
            for u, h, r in zip(batch.user_ids, batch.histories, ratings, strict=True)
        ]
        return queries, self.retriever.retrieve_batch(queries, k=k)

    def _rerank(
        self, queries: list[RetrievalQuery], results: list[Any]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """LLM scores for each result's top ``n_candidates``."""
        catalog = self._catalog
        n = self.config.n_candidates
        requests = []
        for q, res in zip(queries, results, strict=True):
            hist = [(catalog.item_ids[p], str(catalog.titles[p])) for p in q.history]
            cands = [(c.item_id, c.title) for c in res.candidates[:n]]
            requests.append({"user_key": q.user_id, "history": hist, "candidates": cands})
        scored = self.ranker.score_batch(requests) if requests else []
        out = []
        for res, llm in zip(results, scored, strict=True):
            self.scored += 1
            self.degraded += int(llm.degraded)
            out.append((res.positions[:n], res.scores[:n], llm.logprobs))
        return out

    def score(self, batch: UserBatch) -> np.ndarray:
        if self.retriever.catalog is None:
            raise ConfigError("ranker 'llm' scored before fit(); call fit first")
        out = np.full((len(batch), len(self._catalog)), -np.inf)
        queries, deep = self._retrieve(batch, max(self.config.depth, self.config.n_candidates))
        for row, res in enumerate(deep):
            # deeper candidates keep retrieval order below every re-ranked one
            out[row, res.positions] = res.scores - res.scores.max() - 1.0 if len(res) else 0.0
        for row, (positions, ret, llm) in enumerate(self._rerank(queries, deep)):
            if len(positions):
                blended = blend_scores(ret, llm, self.blend_weight)
                out[row, positions] = 1000.0 + blended
        return out

    def report(self) -> dict[str, Any]:
        """Model, backend, blend weight and degraded count, for the run's summary."""
        info = self.generator.info
        return {
            "backend": info.backend,
            "model": info.model,
            "device": info.device,
            "blend_weight": self.blend_weight,
            "blend_table": self.blend_table,
            "degraded": self.degraded,
            "scored": self.scored,
        }
