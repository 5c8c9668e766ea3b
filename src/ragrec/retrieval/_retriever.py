"""The retriever: channels, fusion with channel weights, and filters."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.retrieval._channels import CHANNELS, Channel, ChannelContext, channel_kinds
from ragrec.retrieval._embedders import (
    CachedEmbedder,
    Embedder,
    EmbedderConfig,
    EmbeddingCache,
    ItemTextConfig,
    make_embedder,
)
from ragrec.retrieval._fusion import ChannelWeights, Filters, FusionConfig, blocked_positions, fuse
from ragrec.retrieval._index import IndexConfig
from ragrec.retrieval._items import ItemEmbeddings
from ragrec.retrieval._types import CandidateList, ChannelCandidates, RetrievalQuery

logger = logging.getLogger(__name__)

__all__ = ["ChannelSpec", "Retriever", "RetrieverConfig"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelSpec(_Config):
    """One channel of a retriever."""

    kind: str = Field(description="Registered channel kind: transition, ease, semantic, ...")
    name: str | None = Field(default=None, description="Name in results (default: kind).")
    weight: float = Field(default=1.0, ge=0, description="Global prior weight in fusion.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="The channel's own config (checked by its model)."
    )

    @property
    def label(self) -> str:
        """The channel's name in results."""
        return self.name or self.kind


def _default_channels() -> list[ChannelSpec]:
    # Prior weights: the fusion fit (ragrec.retrieval.fit_fusion) on the llamarec
    # validation split of ml-latest-small (benchmarks/retrieval_quality.py), rounded;
    # `ragrec fit-fusion` fits them to a store's own data.
    return [
        ChannelSpec(kind="transition", weight=1.0),
        ChannelSpec(kind="ease", weight=0.2),
        ChannelSpec(kind="sasrec", weight=0.87),
        ChannelSpec(kind="als", weight=0.86),
        ChannelSpec(kind="itemknn", weight=0.76),
        ChannelSpec(kind="semantic", weight=0.62),
        # It also orders cold-start lists, where it is the only channel with candidates.
        ChannelSpec(kind="popularity", weight=0.15),
    ]


class RetrieverConfig(_Config):
    """Configuration of :class:`Retriever`."""

    n_candidates: int = Field(default=20, ge=1, description="Candidates returned (N).")
    channels: list[ChannelSpec] = Field(
        default_factory=_default_channels, description="Channels and their prior weights."
    )
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    item_text: ItemTextConfig = Field(default_factory=ItemTextConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    cache_dir: str | None = Field(
        default=None, description="Embedding cache folder; None computes every time."
    )


def _build_channel(spec: ChannelSpec) -> Channel:
    try:
        cls = CHANNELS[spec.kind]
    except KeyError:
        raise ConfigError(
            f"channel kind {spec.kind!r} is not known; registered: {channel_kinds()}"
        ) from None
    try:
        config = cls.config_class.model_validate(spec.options)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"channel {spec.label!r} ({spec.kind}) options invalid: {bad}; allowed keys: "
            f"{', '.join(cls.config_class.model_fields)}"
        ) from exc
    return cls(config, name=spec.label)


class Retriever:
    """Proposes N candidates per user from several channels, fused with channel weights.

    Args:
        config: Channels, weights, fusion, embedder and index settings.
        embedder: An embedder to use instead of building one from ``config.embedder``
            (shares a loaded model between components).
    """

    def __init__(self, config: RetrieverConfig | None = None, *, embedder: Embedder | None = None):
        self.config = config or RetrieverConfig()
        names = [s.label for s in self.config.channels]
        if not names:
            raise ConfigError("a retriever needs at least one channel")
        if len(set(names)) != len(names):
            raise ConfigError(f"channel names must be unique; got {names} (set name=...)")
        self.channels = [_build_channel(s) for s in self.config.channels]
        self.weights = ChannelWeights({s.label: s.weight for s in self.config.channels})
        self._embedder = embedder
        self.embeddings: ItemEmbeddings | None = None
        self.catalog: Catalog | None = None
        self._histories: dict[Any, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def embedder(self) -> Embedder:
        """The text embedder (built on first use)."""
        if self._embedder is None:
            self._embedder = make_embedder(self.config.embedder)
        # A shared embedder is cached too: cache_dir must not be ignored silently.
        if self.config.cache_dir and not isinstance(self._embedder, CachedEmbedder):
            cache = EmbeddingCache(Path(self.config.cache_dir) / "embeddings.sqlite")
            self._embedder = CachedEmbedder(self._embedder, cache)
        return self._embedder

    def fit(self, catalog: Catalog, interactions: Interactions) -> Retriever:
        """Embed and index the catalog (when a channel needs it), and fit every channel.

        Raises:
            ConfigError: Empty catalog.
        """
        if len(catalog) == 0:
            raise ConfigError("the catalog is empty; add items before fitting a retriever")
        start = time.perf_counter()
        if any(c.kind == "semantic" for c in self.channels):
            self.embeddings = ItemEmbeddings.build(
                catalog,
                self.embedder,
                text_config=self.config.item_text,
                index_config=self.config.index,
            )
        context = ChannelContext.build(
            catalog, interactions, self.embeddings, index_config=self.config.index
        )
        for channel in self.channels:
            channel.fit(context)
        self.catalog = catalog
        self._histories = {u: (seq, context.ratings[u]) for u, seq in context.sequences.items()}
        logger.info(
            "retriever fit on %d items, %d rows in %.1f s (channels: %s)",
            len(catalog),
            len(interactions),
            time.perf_counter() - start,
            ", ".join(c.name for c in self.channels),
        )
        return self

    def _require_fit(self) -> Catalog:
        if self.catalog is None:
            raise ConfigError("the retriever is not fit; call fit(catalog, interactions) first")
        return self.catalog

    def query(self, user_id: Any, *, text: str | None = None) -> RetrievalQuery:
        """A query for a user from the fit data; unknown users get an empty history."""
        self._require_fit()
        history, ratings = self._histories.get(
            user_id, (np.empty(0, np.int64), np.empty(0, np.float64))
        )
        return RetrievalQuery(user_id, history, ratings, text)

    def retrieve(
        self,
        query: RetrievalQuery,
        *,
        k: int | None = None,
        filters: Filters | None = None,
        weights: ChannelWeights | None = None,
    ) -> CandidateList:
        """The fused top-``k`` candidates (default ``n_candidates``) for one query."""
        return self.retrieve_batch([query], k=k, filters=filters, weights=weights)[0]

    def retrieve_batch(
        self,
        queries: Sequence[RetrievalQuery],
        *,
        k: int | None = None,
        filters: Filters | None = None,
        weights: ChannelWeights | None = None,
    ) -> list[CandidateList]:
        """Fused candidates for several queries (channels score the batch together)."""
        catalog = self._require_fit()
        n = self.config.n_candidates if k is None else k
        if n < 1:
            raise ConfigError(f"k={n} must be >= 1")
        flt = filters or Filters()
        wts = weights or self.weights
        start = time.perf_counter()
        blocked = [blocked_positions(catalog, flt, q.history) for q in queries]
        depth = max(self.config.fusion.depth, n)
        per_channel: list[list[ChannelCandidates]] = []
        timings: dict[str, float] = {}
        for channel in self.channels:
            t0 = time.perf_counter()
            active = [i for i, q in enumerate(queries) if not (channel.needs_history and q.cold)]
            lists = [ChannelCandidates(channel.name, np.empty(0, np.int64), np.empty(0))] * len(
                queries
            )
            if active:
                got = channel.propose(
                    [queries[i] for i in active], depth, blocked=[blocked[i] for i in active]
                )
                for i, lst in zip(active, got, strict=True):
                    lists[i] = lst
            per_channel.append(lists)
            timings[channel.name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fused = []
        for row, q in enumerate(queries):
            user_weights = wts.for_user(q.user_id)
            lists = [per_channel[c][row] for c in range(len(self.channels))]
            candidates = fuse(lists, user_weights, self.config.fusion, catalog, n)
            used = tuple(lst.channel for lst in lists if len(lst))
            fused.append((q, candidates, user_weights, used))
        timings["fusion"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - start
        return [
            CandidateList(
                user_id=q.user_id,
                candidates=candidates,
                weights=user_weights,
                cold_start=q.cold,
                channels=used,
                fusion=self.config.fusion.method,
                seconds=dict(timings),
            )
            for q, candidates, user_weights, used in fused
        ]
