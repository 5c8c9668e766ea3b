"""Channels whose candidates are the nearest item vectors to a user vector, searched
through the same vector index path (FAISS, or the exact numpy reference) as the semantic
channel: collaborative factors (ALS, BPR) and the sequential model's item embeddings."""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ragrec.errors import ConfigError
from ragrec.retrieval._channel_base import Channel, ChannelContext, _index_candidates
from ragrec.retrieval._index import IndexConfig, VectorIndex, make_index
from ragrec.retrieval._types import ChannelCandidates, RetrievalQuery

logger = logging.getLogger(__name__)

__all__ = ["VectorChannel"]


def recency_weights(length: int, decay: float) -> np.ndarray:
    """``decay**n`` for the history item ``n`` steps before the newest (oldest first)."""
    if decay >= 1.0:
        return np.ones(length)
    return decay ** np.arange(length - 1, -1, -1, dtype=np.float64)


def latest_weights(history: np.ndarray, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """The distinct positions of a history and, per position, the recency weight of its
    newest occurrence (a repeated item counts once, as recent as it last was)."""
    hist = np.asarray(history, dtype=np.int64)
    weights = recency_weights(len(hist), decay)
    reversed_unique, first = np.unique(hist[::-1], return_index=True)
    return reversed_unique, weights[::-1][first]


class VectorChannel(Channel):
    """A channel that puts one vector per item into a vector index and searches it with
    one vector per user (inner product).

    Subclasses implement :meth:`_fit_vectors` (item vectors, with a mask of the items
    that have one) and :meth:`user_vectors`; persistence, search and scoring are shared.
    The index is built with the retriever's :class:`IndexConfig` (``context.index_config``),
    so it moves to the GPU or becomes approximate under the same rules as the semantic
    index.
    """

    def fit(self, context: ChannelContext) -> VectorChannel:
        start = time.perf_counter()
        vectors, known = self._fit_vectors(context)
        self._set_vectors(context, vectors, known)
        self.fit_seconds = time.perf_counter() - start
        logger.info(
            "%s channel: %d item vectors (dim %d) in %.1f s",
            self.name,
            int(known.sum()),
            vectors.shape[1],
            self.fit_seconds,
        )
        return self

    @abstractmethod
    def _fit_vectors(self, context: ChannelContext) -> tuple[np.ndarray, np.ndarray]:
        """``(n_items, dim)`` item vectors and the boolean mask of items that have one
        (items without training rows have none and are never proposed)."""

    @abstractmethod
    def user_vectors(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        """``(len(queries), dim)`` search vectors (queries have a history)."""

    def _set_vectors(self, context: ChannelContext, vectors: np.ndarray, known: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        catalog = context.catalog
        if vectors.shape[0] != len(catalog) or known.shape != (len(catalog),):
            raise ConfigError(
                f"channel {self.name!r}: {vectors.shape[0]} item vectors for a catalog of "
                f"{len(catalog)} items; refit the channel on this catalog"
            )
        self._vectors = vectors
        self._known = np.asarray(known, dtype=bool)
        self._catalog = catalog
        self.index = self._build_index(context.index_config, vectors, self._known)
        self._n_items = len(catalog)

    def _build_index(
        self, config: IndexConfig | None, vectors: np.ndarray, known: np.ndarray
    ) -> VectorIndex:
        index = make_index(
            vectors.shape[1],
            config,
            embedder=f"{self.kind}:{self.name}",
            expected_items=int(known.sum()),
        )
        if known.any():
            index.add(self._catalog.item_ids[known], vectors[known])
        return index

    @property
    def item_vectors(self) -> np.ndarray:
        """The ``(n_items, dim)`` item vectors (zero rows for items without one)."""
        self._check_fitted()
        return self._vectors

    @property
    def known_items(self) -> np.ndarray:
        """Boolean mask of the catalog positions that have a vector (and can be proposed)."""
        self._check_fitted()
        return self._known

    def memory_bytes(self) -> int:
        """Bytes of the item vectors and their index (for benchmarks)."""
        self._check_fitted()
        return int(self._vectors.nbytes) + int(self.index.memory_bytes())

    def propose(
        self, queries: Sequence[RetrievalQuery], k: int, *, blocked: Sequence[np.ndarray]
    ) -> list[ChannelCandidates]:
        self._check_fitted()
        rows = [i for i, q in enumerate(queries) if not q.cold] if len(self.index) else []
        vectors = self.user_vectors([queries[i] for i in rows]) if rows else None
        return _index_candidates(
            self.name, self.index, self._catalog, len(queries), rows, vectors, k, blocked
        )

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Per query, the inner products with the items at ``positions`` (``-inf`` for
        items without a vector, and for every item when the history is empty)."""
        self._check_fitted()
        out: list[np.ndarray] = [np.empty(0)] * len(queries)
        rows = [i for i, q in enumerate(queries) if not q.cold]
        vectors = self.user_vectors([queries[i] for i in rows]) if rows else None
        for i, (q, pos) in enumerate(zip(queries, positions, strict=True)):
            pos = np.asarray(pos, dtype=np.int64)
            if q.cold or vectors is None:
                out[i] = np.full(len(pos), -np.inf)
                continue
            vec = vectors[rows.index(i)].astype(np.float64)
            scores = self._vectors[pos].astype(np.float64) @ vec
            out[i] = np.where(self._known[pos], scores, -np.inf)
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The item vectors and mask (the index is rebuilt from them on load), plus what
        the subclass needs to embed users (:meth:`_extra_state`)."""
        self._check_fitted()
        return {"vectors": self._vectors, "known": self._known, **self._extra_state()}

    def load_state(self, context: ChannelContext, state: Mapping[str, np.ndarray]) -> VectorChannel:
        missing = [k for k in ("vectors", "known") if k not in state]
        if missing:
            raise ConfigError(
                f"channel {self.name!r}: saved state lacks {missing}; rebuild the store "
                "(ragrec index --force) or refit the retriever"
            )
        self._load_extra_state(context, state)
        self._set_vectors(context, np.asarray(state["vectors"]), np.asarray(state["known"]))
        return self

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {}

    def _load_extra_state(self, context: ChannelContext, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`_extra_state` saved (before the vectors are set)."""
