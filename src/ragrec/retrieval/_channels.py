"""Retrieval channels: each proposes scored candidates for a batch of queries."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions, user_sequences
from ragrec.errors import ConfigError
from ragrec.retrieval._index import IndexConfig
from ragrec.retrieval._items import ItemEmbeddings
from ragrec.retrieval._types import ChannelCandidates, RetrievalQuery

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNELS",
    "Channel",
    "ChannelConfig",
    "ChannelContext",
    "DenseChannel",
    "EaseChannel",
    "EaseConfig",
    "PopularityChannel",
    "PopularityChannelConfig",
    "SemanticChannel",
    "SemanticConfig",
    "TransitionChannel",
    "TransitionConfig",
    "register_channel",
]


class ChannelConfig(Settings):
    """Base of channel configs: closed (unknown keys are errors), immutable."""


@dataclass(frozen=True)
class ChannelContext:
    """What channels are fit on.

    Attributes:
        catalog: The items.
        interactions: Training rows.
        sequences: Per user id, catalog positions in time order (from ``interactions``).
        ratings: Per user id, the values aligned with ``sequences``.
        embeddings: Item vectors and their index, when a channel needs them.
        index_config: How channels that search their own item vectors build the index
            (the retriever's; None: the defaults).
    """

    catalog: Catalog
    interactions: Interactions
    sequences: dict[Any, np.ndarray]
    ratings: dict[Any, np.ndarray]
    embeddings: ItemEmbeddings | None = None
    index_config: IndexConfig | None = None

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        interactions: Interactions,
        embeddings: ItemEmbeddings | None = None,
        *,
        index_config: IndexConfig | None = None,
    ) -> ChannelContext:
        """Index the training rows per user, in (timestamp, item id) order."""
        sequences, ratings = user_sequences(catalog, interactions)
        return cls(catalog, interactions, sequences, ratings, embeddings, index_config)


class Channel(ABC):
    """A source of candidates.

    Subclasses set ``kind`` and ``config_class``, implement :meth:`fit` and
    :meth:`propose`. ``needs_history`` channels are skipped for cold-start users.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type[ChannelConfig]]
    needs_history: ClassVar[bool] = True

    def __init__(self, config: ChannelConfig | None = None, *, name: str | None = None) -> None:
        cfg = config if config is not None else self.config_class()
        if not isinstance(cfg, self.config_class):
            raise ConfigError(
                f"channel {self.kind!r} takes a {self.config_class.__name__}, "
                f"got {type(cfg).__name__}"
            )
        self.config = cfg
        self.name = name or self.kind
        self._n_items = -1

    @abstractmethod
    def fit(self, context: ChannelContext) -> Channel:
        """Learn from the training rows; returns ``self``."""

    @abstractmethod
    def propose(
        self, queries: Sequence[RetrievalQuery], k: int, *, blocked: Sequence[np.ndarray]
    ) -> list[ChannelCandidates]:
        """Up to ``k`` candidates per query, none of them in that query's ``blocked``."""

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Per query, the channel's scores of the given catalog positions (``-inf`` where
        the channel would not propose the item). The default proposes the whole catalog
        and looks the items up; channels override it with a direct computation."""
        self._check_fitted()
        out = []
        for q, pos in zip(queries, positions, strict=True):
            found = self.propose([q], self._n_items, blocked=[np.empty(0, np.int64)])[0]
            by_pos = dict(zip(found.positions.tolist(), found.scores.tolist(), strict=True))
            out.append(np.array([by_pos.get(int(p), -np.inf) for p in pos], dtype=np.float64))
        return out

    def contributions(self, query: RetrievalQuery, positions: np.ndarray) -> np.ndarray:
        """How much each history item adds to this channel's score of each item.

        Returns ``(len(positions), len(query.history))``: entry ``[i, j]`` is the score of
        ``positions[i]`` with the full history minus its score without history item ``j``
        (leave-one-out, over the newest ``CONTRIBUTION_HISTORY`` items; older ones get 0).
        Channels with an additive score override this with the exact terms.
        """
        hist = query.history
        out = np.zeros((len(positions), len(hist)))
        if not len(hist) or not len(positions) or not self.needs_history_evidence:
            return out
        full = self.score_items([query], [positions])[0]
        newest = range(max(0, len(hist) - CONTRIBUTION_HISTORY), len(hist))
        variants = [_without(query, j) for j in newest]
        reduced = self.score_items(variants, [positions] * len(variants))
        for j, scores in zip(newest, reduced, strict=True):
            delta = np.where(np.isfinite(full), full, 0.0) - np.where(
                np.isfinite(scores), scores, 0.0
            )
            out[:, j] = delta
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The fitted arrays :meth:`load_state` restores, saved with a store so that
        loading it does not fit again. Empty: nothing to save (the channel is refit when
        the store loads)."""
        return {}

    def load_state(self, context: ChannelContext, state: Mapping[str, np.ndarray]) -> Channel:
        """Restore what :meth:`state` returned for the same catalog and training rows as
        ``context``; returns ``self``. The default fits again."""
        return self.fit(context)

    def _check_fitted(self) -> None:
        if self._n_items < 0:
            raise ConfigError(f"channel {self.name!r} used before fit(); call fit first")

    @property
    def needs_history_evidence(self) -> bool:
        """Whether history items can explain this channel's scores (popularity: no)."""
        return self.needs_history


CONTRIBUTION_HISTORY = 12
_NEGLIGIBLE = 1e-6
"""History items (the newest) whose leave-one-out contribution the default
:meth:`Channel.contributions` computes."""


def _without(query: RetrievalQuery, j: int) -> RetrievalQuery:
    keep = np.arange(len(query.history)) != j
    ratings = query.ratings[keep] if query.ratings is not None else None
    return RetrievalQuery(query.user_id, query.history[keep], ratings, query.text)


def _require_state(channel: Channel, state: Mapping[str, np.ndarray], *names: str) -> None:
    missing = [n for n in names if n not in state]
    if missing:
        raise ConfigError(
            f"channel {channel.name!r}: saved state lacks {missing}; rebuild the store "
            "(ragrec index --force) or refit the retriever"
        )


def _top_k(
    name: str, scores: np.ndarray, k: int, blocked: Sequence[np.ndarray]
) -> list[ChannelCandidates]:
    out = []
    for row, block in zip(scores, blocked, strict=True):
        row = row.copy()
        row[block] = -np.inf
        kk = min(k, int(np.isfinite(row).sum()))
        if kk <= 0:
            out.append(ChannelCandidates(name, np.empty(0, np.int64), np.empty(0)))
            continue
        top = np.argpartition(-row, kk - 1)[:kk]
        top = top[np.lexsort((top, -row[top]))]
        out.append(ChannelCandidates(name, top.astype(np.int64), row[top].astype(np.float64)))
    return out


class DenseChannel(Channel):
    """A channel that scores every catalog item (item-item models, popularity)."""

    @abstractmethod
    def score(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        """``(len(queries), n_items)`` scores; ``-inf`` for items it does not propose."""

    def propose(
        self, queries: Sequence[RetrievalQuery], k: int, *, blocked: Sequence[np.ndarray]
    ) -> list[ChannelCandidates]:
        self._check_fitted()
        return _top_k(self.name, self.score(queries), k, blocked)

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        scores = self.score(queries)
        return [scores[row, np.asarray(pos, dtype=np.int64)] for row, pos in enumerate(positions)]


class PopularityChannelConfig(ChannelConfig):
    """Configuration of :class:`PopularityChannel`."""

    window_days: float | None = Field(
        default=None,
        gt=0,
        description="Count only interactions within this many days of the latest one "
        "(recent popularity); None counts all time.",
    )


class PopularityChannel(DenseChannel):
    """Items by number of training interactions (overall or recent). Works for cold start."""

    kind = "popularity"
    config_class = PopularityChannelConfig
    needs_history = False
    config: PopularityChannelConfig

    def fit(self, context: ChannelContext) -> PopularityChannel:
        rows = context.interactions
        if self.config.window_days is not None and len(rows):
            rows = rows.select(
                rows.timestamps >= rows.timestamps.max() - self.config.window_days * 86400
            )
        pos = context.catalog.positions(rows.item_ids)
        counts = np.bincount(pos[pos >= 0], minlength=len(context.catalog)).astype(np.float64)
        self._scores = np.log1p(counts)
        self._n_items = len(context.catalog)
        return self

    def score(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        return np.broadcast_to(self._scores, (len(queries), self._n_items)).copy()

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        return [self._scores[np.asarray(p, dtype=np.int64)] for p in positions]

    def state(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {"scores": self._scores}

    def load_state(
        self, context: ChannelContext, state: Mapping[str, np.ndarray]
    ) -> PopularityChannel:
        _require_state(self, state, "scores")
        self._scores = np.asarray(state["scores"], dtype=np.float64)
        self._n_items = len(context.catalog)
        return self


class TransitionConfig(ChannelConfig):
    """Configuration of :class:`TransitionChannel`."""

    window: int = Field(
        default=10, ge=1, description="Items after each item that count as its successors."
    )
    gap_decay: float = Field(
        default=0.5,
        ge=0,
        description="A successor g steps later counts 1/g**gap_decay (0: all count alike).",
    )
    last_items: int = Field(
        default=10, ge=1, description="Recent history items whose successors are scored."
    )
    recency_decay: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="Weight of the j-th most recent history item: recency_decay**j.",
    )


class TransitionChannel(DenseChannel):
    """Item-to-next-items transitions learned from users' time-ordered histories.

    ``T[a, b]`` counts how often ``b`` followed ``a`` within ``window`` steps (weighted by
    the gap), rows normalised to sum 1. A user's scores are the recency-weighted sum of
    the rows of their last ``last_items`` items. Stored sparse.
    """

    kind = "transition"
    config_class = TransitionConfig
    config: TransitionConfig

    def fit(self, context: ChannelContext) -> TransitionChannel:
        n = len(context.catalog)
        rows, cols, vals = [], [], []
        cfg = self.config
        for seq in context.sequences.values():
            for gap in range(1, min(cfg.window, len(seq) - 1) + 1):
                rows.append(seq[:-gap])
                cols.append(seq[gap:])
                vals.append(np.full(len(seq) - gap, 1.0 / gap**cfg.gap_decay))
        if rows:
            t = sp.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
            )
        else:
            t = sp.csr_matrix((n, n))
        sums = np.asarray(t.sum(axis=1)).ravel()
        inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
        self._t = sp.diags(inv) @ t
        self._t = self._t.tocsr().astype(np.float32)
        self._n_items = n
        return self

    def _recent(self, query: RetrievalQuery) -> tuple[np.ndarray, np.ndarray]:
        """History indices of the newest ``last_items`` items, newest first, and their
        recency weights."""
        cfg = self.config
        idx = np.arange(len(query.history))[::-1][: cfg.last_items]
        return idx, cfg.recency_decay ** np.arange(len(idx), dtype=np.float64)

    def score(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        weights = sp.lil_matrix((len(queries), self._n_items), dtype=np.float32)
        for row, q in enumerate(queries):
            idx, w = self._recent(q)
            for j, wj in zip(idx.tolist(), w.tolist(), strict=True):
                weights[row, q.history[j]] += wj
        scores = np.asarray((weights.tocsr() @ self._t).todense(), dtype=np.float64)
        scores[scores <= 0] = -np.inf  # no observed transition: no evidence, not proposed
        return scores

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        out = []
        for q, pos in zip(queries, positions, strict=True):
            idx, w = self._recent(q)
            pos = np.asarray(pos, dtype=np.int64)
            rows = self._t[q.history[idx]][:, pos].toarray() if len(idx) else np.zeros((0, 0))
            scores = w @ rows if len(idx) else np.zeros(len(pos))
            out.append(np.where(scores > 0, scores, -np.inf))
        return out

    def contributions(self, query: RetrievalQuery, positions: np.ndarray) -> np.ndarray:
        """Exact terms: history item ``j`` among the newest ``last_items`` adds its
        recency weight times its transition probability to the item."""
        out = np.zeros((len(positions), len(query.history)))
        idx, w = self._recent(query)
        if len(idx) and len(positions):
            rows = self._t[query.history[idx]][:, np.asarray(positions, np.int64)].toarray()
            np.add.at(out.T, idx, w[:, None] * rows)
        return out

    def state(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        t = self._t
        return {"data": t.data, "indices": t.indices, "indptr": t.indptr}

    def load_state(
        self, context: ChannelContext, state: Mapping[str, np.ndarray]
    ) -> TransitionChannel:
        _require_state(self, state, "data", "indices", "indptr")
        n = len(context.catalog)
        self._t = sp.csr_matrix(
            (np.asarray(state["data"]), np.asarray(state["indices"]), np.asarray(state["indptr"])),
            shape=(n, n),
        )
        self._n_items = n
        return self


class EaseConfig(ChannelConfig):
    """Configuration of :class:`EaseChannel`. ``l2`` and ``recency`` were chosen on the
    llamarec validation split of ml-latest-small."""

    l2: float = Field(default=200.0, gt=0, description="L2 regularisation (lambda).")
    recency: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Weight of a history item when scoring: recency**n for the item n steps "
        "before the newest (1: the whole history alike, plain EASE).",
    )
    max_items: int = Field(
        default=30_000,
        ge=1,
        description="EASE inverts an items x items matrix: refuse catalogs larger than this.",
    )


def _spd_inverse(gram: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite float32 matrix through its Cholesky
    factor (LAPACK potrf/potri, in place), several times faster than ``np.linalg.inv``."""
    from scipy.linalg import lapack

    factor, info = lapack.spotrf(gram, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise ConfigError(
            f"ease channel: the Gram matrix is not positive definite (LAPACK info {info}); raise l2"
        )
    inv, info = lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ConfigError(f"ease channel: inversion failed (LAPACK info {info}); raise l2")
    n = inv.shape[0]
    block = 1024
    for lo in range(0, n, block):  # potri fills the upper triangle: mirror it, in blocks
        hi = min(n, lo + block)
        inv[lo:hi, :lo] = inv[:lo, lo:hi].T
        inv[lo:hi, lo:hi] = np.triu(inv[lo:hi, lo:hi]) + np.triu(inv[lo:hi, lo:hi], 1).T
    return inv


class EaseChannel(DenseChannel):
    """EASE (Steck 2019): a closed-form item-item linear model over who-saw-what.

    ``B = I - P / diag(P)`` with ``P = (X^T X + l2 I)^-1`` and zero diagonal, ``X`` the
    binary user x item matrix of the training rows; a user's scores are
    ``sum_j w_j B[j]`` over their distinct history items, ``w_j = recency**n`` for the
    newest occurrence of ``j`` ``n`` steps before the newest item (so recent items
    count more). Solved in float32 through a Cholesky factorisation.
    """

    kind = "ease"
    config_class = EaseConfig
    config: EaseConfig

    def fit(self, context: ChannelContext) -> EaseChannel:
        n = len(context.catalog)
        if n > self.config.max_items:
            raise ConfigError(
                f"ease channel: catalog has {n} items, more than max_items="
                f"{self.config.max_items} (memory grows with items squared); raise max_items "
                "or use the transition channel"
            )
        rows = [np.full(len(s), u) for u, s in enumerate(context.sequences.values())]
        cols = list(context.sequences.values())
        if rows:
            x = sp.csr_matrix(
                (
                    np.ones(sum(map(len, rows)), dtype=np.float32),
                    (np.concatenate(rows), np.concatenate(cols)),
                ),
                shape=(len(rows), n),
            )
            x.sum_duplicates()
            x.data[:] = 1.0
            gram = np.asarray((x.T @ x).toarray(), dtype=np.float32)
        else:
            gram = np.zeros((n, n), dtype=np.float32)
        gram[np.diag_indices(n)] += np.float32(self.config.l2)
        b = _spd_inverse(gram)
        diag = np.diag(b).copy()
        b /= -diag[None, :]
        b[np.diag_indices(n)] = 0.0
        self._b = b
        self._n_items = n
        return self

    def _history_weights(self, query: RetrievalQuery) -> tuple[np.ndarray, np.ndarray]:
        """Distinct history positions and the recency weight of each one's newest
        occurrence."""
        hist = np.asarray(query.history, dtype=np.int64)
        weights = self.config.recency ** np.arange(len(hist) - 1, -1, -1, dtype=np.float64)
        pos, first = np.unique(hist[::-1], return_index=True)
        return pos, weights[::-1][first]

    def score(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        out = np.zeros((len(queries), self._n_items), dtype=np.float64)
        for row, q in enumerate(queries):
            if len(q.history):
                pos, w = self._history_weights(q)
                # terms under 1e-6 of the newest item's weight change no order that
                # matters; dropping them spares reading rows of B for long histories
                keep = w >= _NEGLIGIBLE * w.max()
                out[row] = w[keep] @ self._b[pos[keep]]
        return out

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Per query, the scores of the items at ``positions`` (without scoring the
        whole catalog)."""
        self._check_fitted()
        out = []
        for q, items in zip(queries, positions, strict=True):
            items = np.asarray(items, dtype=np.int64)
            if not len(q.history):
                out.append(np.zeros(len(items)))
                continue
            pos, w = self._history_weights(q)
            out.append(w @ self._b[np.ix_(pos, items)].astype(np.float64))
        return out

    def contributions(self, query: RetrievalQuery, positions: np.ndarray) -> np.ndarray:
        """Exact terms: history item ``j`` adds ``w_j B[j, item]``, once, at its newest
        occurrence (``(len(positions), len(history))``)."""
        hist = np.asarray(query.history, dtype=np.int64)
        out = np.zeros((len(positions), len(hist)))
        if not len(hist) or not len(positions):
            return out
        pos, w = self._history_weights(query)
        _, first = np.unique(hist[::-1], return_index=True)
        newest = len(hist) - 1 - first  # aligned with pos (both sorted by position)
        terms = self._b[np.ix_(pos, np.asarray(positions, dtype=np.int64))].T
        out[:, newest] = terms * w[None, :]
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The fitted item-item matrix."""
        self._check_fitted()
        return {"b": self._b}

    def load_state(self, context: ChannelContext, state: Mapping[str, np.ndarray]) -> EaseChannel:
        """Restore :meth:`state` for the same catalog."""
        if "b" not in state:
            raise ConfigError(
                f"channel {self.name!r}: saved state lacks ['b']; rebuild the store "
                "(ragrec index --force) or refit the retriever"
            )
        n = len(context.catalog)
        if state["b"].shape != (n, n):
            raise ConfigError(
                f"channel {self.name!r}: saved matrix is {state['b'].shape}, the catalog has "
                f"{n} items; rebuild the store (ragrec index --force)"
            )
        self._b = state["b"]
        self._n_items = n
        return self


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
        out = [ChannelCandidates(self.name, np.empty(0, np.int64), np.empty(0)) for _ in queries]
        if not rows:
            return out
        catalog = self._emb.catalog
        exclude = [catalog.item_ids[blocked[i]].tolist() for i in rows]
        found_vectors = [v for v in vectors if v is not None]
        result = self._emb.index.search(np.stack(found_vectors), k, exclude=exclude)
        for j, row in enumerate(rows):
            n = int(result.found[j])
            pos = catalog.positions(result.ids[j, :n])
            keep = pos >= 0
            out[row] = ChannelCandidates(
                self.name, pos[keep], result.scores[j, :n][keep].astype(np.float64)
            )
        return out


CHANNELS: dict[str, type[Channel]] = {}


def register_channel(cls: type[Channel]) -> type[Channel]:
    """Make a channel class available by its ``kind`` in retriever configs."""
    CHANNELS[cls.kind] = cls
    return cls


for _cls in (PopularityChannel, TransitionChannel, EaseChannel, SemanticChannel):
    register_channel(_cls)


def channel_kinds() -> str:
    """Names of the registered channel kinds (for messages)."""
    return ", ".join(sorted(CHANNELS))
