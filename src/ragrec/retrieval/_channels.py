"""Retrieval channels: each proposes scored candidates for a batch of queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ragrec.errors import ConfigError

# The interface is re-exported: it was defined here before the split.
from ragrec.retrieval._channel_base import (
    CHANNELS,
    Channel,
    ChannelConfig,
    ChannelContext,
    DenseChannel,
    _require_state,
    register_channel,
)
from ragrec.retrieval._semantic import SemanticChannel, SemanticConfig
from ragrec.retrieval._types import RetrievalQuery

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

_NEGLIGIBLE = 1e-6
"""Ease history terms below this share of the newest item's weight are dropped."""


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
        _require_state(self, state, "b")
        n = len(context.catalog)
        if state["b"].shape != (n, n):
            raise ConfigError(
                f"channel {self.name!r}: saved matrix is {state['b'].shape}, the catalog has "
                f"{n} items; rebuild the store (ragrec index --force)"
            )
        self._b = state["b"]
        self._n_items = n
        return self


for _cls in (PopularityChannel, TransitionChannel, EaseChannel, SemanticChannel):
    register_channel(_cls)
