"""Rankers that score through the retrieval stage: the fused retriever and each channel."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval._rankers import Ranker, UserBatch
from ragrec.retrieval import (
    ChannelSpec,
    FusionFit,
    FusionFitConfig,
    RetrievalQuery,
    Retriever,
    RetrieverConfig,
    apply_fusion,
    fit_fusion,
)

__all__ = ["ChannelRankerConfig", "RetrievalRanker", "RetrievalRankerConfig", "channel_ranker"]


class RetrievalRankerConfig(Settings):
    """Configuration of :class:`RetrievalRanker`."""

    retriever: RetrieverConfig = Field(default_factory=RetrieverConfig)
    depth: int = Field(
        default=100,
        ge=1,
        description="Fused candidates scored per user; the rest rank as misses.",
    )
    fit_fusion: bool = Field(
        default=True,
        description="Before scoring the test split, fit the channel weights and the "
        "normalisation on the validation targets (ragrec.retrieval.fit_fusion); the "
        "configured weights are the starting point. False keeps the configured ones.",
    )
    fusion_fit: FusionFitConfig = Field(
        default_factory=FusionFitConfig, description="How the fusion is fit."
    )


class RetrievalRanker(Ranker):
    """Ranks by the retriever's fused score; items outside its top ``depth`` are misses
    (under candidate-set protocols, every item is scored). With ``fit_fusion``, the
    fusion is fit on the validation split before the test split is scored."""

    name = "retrieval"

    def __init__(self, config: RetrievalRankerConfig | None = None, *, name: str | None = None):
        self.config = config or RetrievalRankerConfig()
        if name is not None:
            self.name = name  # type: ignore[misc]  # per-channel rankers report their channel
        self.retriever = Retriever(self.config.retriever)
        self.fusion: FusionFit | None = None

    def fit(self, catalog: Catalog, interactions: Interactions) -> RetrievalRanker:
        self.retriever.fit(catalog, interactions)
        embeddings = self.retriever.embeddings
        self.device = getattr(getattr(embeddings, "index", None), "device", "cpu")
        self._n_items = len(catalog)
        self.fusion = None
        return self

    def tune(self, data: Any) -> None:
        """Fit the fusion on the validation split (see ``fit_fusion``)."""
        if not self.config.fit_fusion or len(self.retriever.channels) < 2:
            return
        cases = data.cases("validation")
        ratings = cases.ratings or tuple(np.empty(0) for _ in cases.histories)
        queries = [
            RetrievalQuery(uid, hist, r if len(r) == len(hist) else None)
            for uid, hist, r in zip(cases.user_ids, cases.histories, ratings, strict=True)
        ]
        self.fusion = fit_fusion(
            self.retriever, queries, cases.targets, config=self.config.fusion_fit
        )
        apply_fusion(self.retriever, self.fusion)

    def tuned_state(self) -> dict[str, Any]:
        if self.fusion is None:
            return {}
        return {"fusion": self.fusion.as_dict()}

    def load_tuned_state(self, state: dict[str, Any]) -> None:
        if "fusion" in state:
            self.fusion = FusionFit(**state["fusion"])
            apply_fusion(self.retriever, self.fusion)

    def report(self) -> dict[str, Any]:
        return {"fusion_fit": self.fusion.as_dict()} if self.fusion is not None else {}

    def score(self, batch: UserBatch) -> np.ndarray:
        if self.retriever.catalog is None:
            raise ConfigError(f"ranker {self.name!r} scored before fit(); call fit first")
        ratings = batch.ratings or tuple(np.empty(0) for _ in batch.histories)
        queries = [
            RetrievalQuery(uid, hist, r if len(r) == len(hist) else None)
            for uid, hist, r in zip(batch.user_ids, batch.histories, ratings, strict=True)
        ]
        out = np.full((len(batch), self._n_items), -np.inf)
        # a candidate-set protocol ranks given items: score every item, so none is a miss
        # only for lying below the retrieval depth
        depth = self._n_items if batch.candidates else self.config.depth
        for row, result in enumerate(self.retriever.retrieve_batch(queries, k=depth)):
            out[row, result.positions] = result.scores
        return out


class ChannelRankerConfig(Settings):
    """Configuration of a single-channel ranker (``--ranker transition`` and so on)."""

    options: dict[str, Any] = Field(default_factory=dict, description="The channel's own config.")
    depth: int = Field(default=100, ge=1, description="Candidates scored per user.")
    cache_dir: str | None = Field(default=None, description="Embedding cache folder.")


def channel_ranker(
    kind: str, config: ChannelRankerConfig | None = None, *, name: str | None = None
) -> RetrievalRanker:
    """A ranker that retrieves with one channel only (named ``name``, default ``kind``)."""
    cfg = config or ChannelRankerConfig()
    retriever = RetrieverConfig(
        channels=[ChannelSpec(kind=kind, options=cfg.options)], cache_dir=cfg.cache_dir
    )
    return RetrievalRanker(
        RetrievalRankerConfig(retriever=retriever, depth=cfg.depth), name=name or kind
    )
