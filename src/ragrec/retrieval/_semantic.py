"""The semantic channel: nearest items to the user's profile vector and/or the query
text, through the item vector index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from ragrec.errors import ConfigError
from ragrec.retrieval._channel_base import Channel, ChannelConfig, ChannelContext, _index_candidates
from ragrec.retrieval._types import ChannelCandidates, RetrievalQuery

__all__ = ["SemanticChannel", "SemanticConfig"]


class SemanticConfig(ChannelConfig):
    """Configuration of :class:`SemanticChannel`."""

    recency_half_life: float | None = Field(
        default=20.0,
        gt=0,
        description="History items lose half their weight every this many newer items; "
        "None weighs all alike.",
    )
    rating_weight: bool = Field(
        default=True,
        description="Weigh history items by rating above the user's mean (disliked items "
        "count less).",
    )
    query_weight: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="With a free-text query, its share of the search vector (the profile "
        "gets the rest).",
    )


class SemanticChannel(Channel):
    """Nearest items to the user's profile vector and/or the query text, through the item
    vector index."""

    kind = "semantic"
    config_class = SemanticConfig
    needs_history = False
    config: SemanticConfig

    def fit(self, context: ChannelContext) -> SemanticChannel:
        if context.embeddings is None:
            raise ConfigError("the semantic channel needs item embeddings; build them first")
        self._emb = context.embeddings
        self._n_items = len(context.catalog)
        return self

    def _history_weights(self, query: RetrievalQuery) -> np.ndarray:
        hist = query.history
        weights = np.ones(len(hist))
        if self.config.recency_half_life is not None:
            age = np.arange(len(hist))[::-1]
            weights *= 0.5 ** (age / self.config.recency_half_life)
        if self.config.rating_weight and query.ratings is not None and len(hist) > 1:
            centred = query.ratings - query.ratings.mean()
            weights *= np.clip(1.0 + centred, 0.1, None)
        return weights

    def _profile_sum(self, query: RetrievalQuery) -> tuple[np.ndarray, float]:
        """The weighted sum of the history's vectors and its norm."""
        vec = (self._history_weights(query)[:, None] * self._emb.vectors_at(query.history)).sum(
            axis=0
        )
        return vec, float(np.linalg.norm(vec))

    def profile(self, query: RetrievalQuery) -> np.ndarray | None:
        """The unit-length profile vector of a history, or ``None`` when empty."""
        if query.cold:
            return None
        vec, norm = self._profile_sum(query)
        return vec / norm if norm > 0 else None

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        # Free-text queries bypass the embedding cache: they rarely repeat and would grow it.
        embedder = getattr(self._emb.embedder, "inner", self._emb.embedder)
        return np.asarray(embedder.encode(texts))

    def search_vectors(self, queries: Sequence[RetrievalQuery]) -> list[np.ndarray | None]:
        """Per query, the vector searched (profile, query text, or their mix)."""
        texts = [q.text for q in queries if q.text]
        encoded = iter(self._encode_texts(texts)) if texts else iter(())
        out: list[np.ndarray | None] = []
        for q in queries:
            prof = self.profile(q)
            text_vec = next(encoded) if q.text else None
            if prof is not None and text_vec is not None:
                a = self.config.query_weight
                vec = a * text_vec + (1 - a) * prof
                out.append(vec / max(float(np.linalg.norm(vec)), 1e-12))
            else:
                out.append(text_vec if text_vec is not None else prof)
        return out

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        out = []
        for vec, pos in zip(self.search_vectors(queries), positions, strict=True):
            pos = np.asarray(pos, dtype=np.int64)
            if vec is None:
                out.append(np.full(len(pos), -np.inf))
            else:
                out.append(self._emb.vectors_at(pos).astype(np.float64) @ vec)
        return out

    def contributions(self, query: RetrievalQuery, positions: np.ndarray) -> np.ndarray:
        """Exact terms of the cosine with the profile: history item ``j`` adds
        ``w_j * (v_j . v_item) / |sum of w v|`` (times the profile's share when a query
        text is mixed in)."""
        out = np.zeros((len(positions), len(query.history)))
        if query.cold or not len(positions):
            return out
        total, norm = self._profile_sum(query)
        if norm <= 0:
            return out
        share = 1.0
        if query.text:
            # searched: (a * text + (1 - a) * profile) / |that|; the history's terms scale
            a = self.config.query_weight
            text_vec = self._encode_texts([query.text])[0]
            mixed = float(np.linalg.norm(a * text_vec + (1 - a) * total / norm))
            share = (1 - a) / max(mixed, 1e-12)
        weights = self._history_weights(query)
        sims = (
            self._emb.vectors_at(np.asarray(positions, np.int64))
            @ self._emb.vectors_at(query.history).T
        )
        return share * sims * weights[None, :] / norm

    def propose(
        self, queries: Sequence[RetrievalQuery], k: int, *, blocked: Sequence[np.ndarray]
    ) -> list[ChannelCandidates]:
        self._check_fitted()
        vectors = self.search_vectors(queries)
        rows = [i for i, v in enumerate(vectors) if v is not None]
        found = [v for v in vectors if v is not None]
        return _index_candidates(
            self.name,
            self._emb.index,
            self._emb.catalog,
            len(queries),
            rows,
            np.stack(found) if found else None,
            k,
            blocked,
        )
