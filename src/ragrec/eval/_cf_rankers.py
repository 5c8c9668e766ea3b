"""Collaborative-filtering baselines: item-item kNN, ALS and BPR (the latter two via implicit).

All three learn from the binary user x item matrix of the training rows and score a user
from the history in the batch, not from a stored user row: at test time a user's history
also holds the validation item, which is not in the training rows.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval._rankers import Ranker, UserBatch
from ragrec.retrieval import (
    ALSParams,
    BPRParams,
    ItemKNNParams,
    item_similarities,
    one_blas_thread,
)

if TYPE_CHECKING:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

__all__ = [
    "ALSConfig",
    "ALSRanker",
    "BPRConfig",
    "BPRRanker",
    "ItemKNNConfig",
    "ItemKNNRanker",
]

logger = logging.getLogger(__name__)


def _train_matrix(catalog: Catalog, interactions: Interactions) -> tuple[sp.csr_matrix, pd.Index]:
    """Binary ``(users, catalog items)`` matrix of the training rows, and its user ids.

    Rows on items outside the catalog are dropped; repeated (user, item) rows count once.
    """
    pos = catalog.positions(interactions.item_ids)
    keep = pos >= 0
    codes, users = pd.factorize(interactions.user_ids[keep], sort=True)
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (codes, pos[keep])),
        shape=(len(users), len(catalog)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix, pd.Index(users)


def _history_matrix(
    name: str, batch: UserBatch, n_items: int, weights: list[np.ndarray] | None = None
) -> sp.csr_matrix:
    """``(len(batch), n_items)`` matrix of the batch histories (1, or ``weights``).

    A position seen twice keeps its largest weight.
    """
    lengths = np.fromiter((len(h) for h in batch.histories), dtype=np.int64, count=len(batch))
    cols = (
        np.concatenate([np.asarray(h, dtype=np.int64) for h in batch.histories])
        if len(batch)
        else np.empty(0, dtype=np.int64)
    )
    if cols.size and (cols.min() < 0 or cols.max() >= n_items):
        bad = cols[(cols < 0) | (cols >= n_items)][0]
        raise ConfigError(
            f"ranker {name!r}: history position {bad} is outside the catalog "
            f"(0..{n_items - 1}); histories must hold catalog positions of the fitted catalog"
        )
    values = (
        np.concatenate(weights).astype(np.float32)
        if weights is not None and cols.size
        else np.ones(cols.size, dtype=np.float32)
    )
    rows = np.repeat(np.arange(len(batch)), lengths)
    # a repeated position keeps its largest weight (its latest, under recency decay)
    order = np.lexsort((values, cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    last = np.ones(rows.size, dtype=bool)
    last[:-1] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    matrix = sp.csr_matrix(
        (values[last], (rows[last], cols[last])), shape=(len(batch), n_items), dtype=np.float32
    )
    matrix.eliminate_zeros()  # weights that underflow: the item is treated as unseen
    return matrix


def _rank_cold_last(scores: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """Give items without training rows each row's lowest score (ties: catalog order)."""
    if cold.any() and scores.size:
        scores[:, cold] = scores.min(axis=1, keepdims=True)
    return scores


def _recency_weights(batch: UserBatch, recency: float) -> list[np.ndarray] | None:
    """Per history, ``recency**n`` for the item ``n`` steps before the latest; None at 1."""
    if recency >= 1.0:
        return None
    return [recency ** np.arange(len(h) - 1, -1, -1, dtype=np.float64) for h in batch.histories]


def _not_fitted(name: str) -> ConfigError:
    return ConfigError(
        f"ranker {name!r} scored before fit(); call fit(catalog, interactions) first"
    )


# ------------------------------------------------------------------------------------ itemknn


def _fit_implicit(
    name: str, make_model: Any, catalog: Catalog, interactions: Interactions
) -> tuple[Any, pd.Index, np.ndarray, dict[str, Any]]:
    """Fit an implicit model (``make_model()`` builds it) on the binary training matrix,
    BLAS held to one thread. Returns the model, the training user ids, the mask of
    catalog items without training rows, and the fit facts for ``report()``."""
    start = time.perf_counter()
    matrix, users = _train_matrix(catalog, interactions)
    with one_blas_thread():
        model = make_model()
        model.fit(matrix, show_progress=False)
    cold = np.asarray(matrix.sum(axis=0)).ravel() == 0
    seconds = time.perf_counter() - start
    report = {
        "backend": "implicit.cpu",
        "fit_seconds": round(seconds, 3),
        "train_users": len(users),
        "train_items": int((~cold).sum()),
    }
    logger.info("%s fit on %d users x %d items in %.2fs", name, len(users), len(catalog), seconds)
    return model, users, cold, report


class ItemKNNConfig(ItemKNNParams):
    """Configuration of :class:`ItemKNNRanker`."""


class ItemKNNRanker(Ranker):
    """Item-item cosine kNN on the binary training matrix.

    ``sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)`` over the sets of
    training users of each item; each item keeps its ``neighbors`` most similar items. A
    user's score for item ``i`` is the (recency-weighted) sum of ``sim(i, j)`` over the
    history items ``j`` among ``i``'s neighbours. A user with an empty history scores 0
    everywhere (ties: catalog order); history items without training rows add nothing.
    """

    name = "itemknn"

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        self.config = config or ItemKNNConfig()
        self._sim: sp.csr_matrix | None = None
        self._report: dict[str, Any] = {}

    def fit(self, catalog: Catalog, interactions: Interactions) -> ItemKNNRanker:
        start = time.perf_counter()
        matrix, users = _train_matrix(catalog, interactions)
        sim = item_similarities(matrix, self.config.neighbors, self.config.shrink)
        # row i holds i's neighbours j; scores = history @ sim.T sums sim(i, j) over j in H
        self._sim = sim.T.tocsr()
        seconds = time.perf_counter() - start
        self._report = {
            "backend": "scipy",
            "fit_seconds": round(seconds, 3),
            "train_users": len(users),
            "train_items": int((np.asarray(matrix.sum(axis=0)).ravel() > 0).sum()),
            "similarities": int(self._sim.nnz),
        }
        logger.info(
            "itemknn fit on %d users x %d items in %.2fs", len(users), len(catalog), seconds
        )
        return self

    def score(self, batch: UserBatch) -> np.ndarray:
        if self._sim is None:
            raise _not_fitted(self.name)
        weights = _recency_weights(batch, self.config.recency)
        history = _history_matrix(self.name, batch, self._sim.shape[0], weights)
        return np.asarray((history.astype(np.float64) @ self._sim).todense())

    def report(self) -> dict[str, Any]:
        return {**self._report, "config": self.config.model_dump()}


# ---------------------------------------------------------------------------------------- als


class ALSConfig(ALSParams):
    """Configuration of :class:`ALSRanker`."""


class ALSRanker(Ranker):
    """Implicit-feedback ALS (Hu, Koren and Volinsky 2008) fit with ``implicit`` on the CPU.

    Users are folded in from the batch history: each user's factors are the exact
    least-squares solution given the fitted item factors (``recalculate_user``), so a
    history item that is not in the training rows (the validation item at test time)
    counts. An empty history gives zero factors, hence 0 everywhere. Items without
    training rows get each user's lowest score.
    """

    name = "als"

    def __init__(self, config: ALSConfig | None = None) -> None:
        self.config = config or ALSConfig()
        self._model: AlternatingLeastSquares | None = None
        self._cold = np.zeros(0, dtype=bool)
        self._report: dict[str, Any] = {}

    def fit(self, catalog: Catalog, interactions: Interactions) -> ALSRanker:
        model, _, self._cold, self._report = _fit_implicit(
            "als", lambda: self.config.implicit_model("ranker 'als'"), catalog, interactions
        )
        model.item_factors[self._cold] = 0.0
        self._model = model
        return self

    def score(self, batch: UserBatch) -> np.ndarray:
        if self._model is None:
            raise _not_fitted(self.name)
        weights = _recency_weights(batch, self.config.recency)
        history = _history_matrix(self.name, batch, len(self._cold), weights)
        with one_blas_thread():
            factors = self._model.recalculate_user(np.arange(len(batch)), history)
        scores = np.asarray(factors, dtype=np.float64) @ self._model.item_factors.T.astype(
            np.float64
        )
        return _rank_cold_last(scores, self._cold)

    def report(self) -> dict[str, Any]:
        return {**self._report, "config": self.config.model_dump()}


# ---------------------------------------------------------------------------------------- bpr


class BPRConfig(BPRParams):
    """Configuration of :class:`BPRRanker`."""

    user_vector: Literal["trained", "history_mean"] = Field(
        default="history_mean",
        description="'trained': a user seen in the training rows keeps the factors BPR "
        "learnt for them (an unseen user falls back to the history mean); "
        "'history_mean': every user is the (recency-weighted) mean of their history "
        "items' factors.",
    )


class BPRRanker(Ranker):
    """Bayesian personalised ranking (Rendle et al. 2009) fit with ``implicit`` on the CPU.

    implicit has no fold-in for BPR, so a user is represented by ``user_vector``: by
    default the (``recency``-weighted) mean of the factors of their history items, which
    sees the whole batch history (the validation item too, at test time) and scored best
    on the llamarec validation split; or, with ``"trained"``, the factors learnt for a user
    in the training rows (an unseen user falls back to the history mean). Scores include
    implicit's learnt item bias, so an empty history ranks by that bias alone. Items
    without training rows get each user's lowest score.
    """

    name = "bpr"

    def __init__(self, config: BPRConfig | None = None) -> None:
        self.config = config or BPRConfig()
        self._model: BayesianPersonalizedRanking | None = None
        self._users = pd.Index([])
        self._cold = np.zeros(0, dtype=bool)
        self._report: dict[str, Any] = {}

    def fit(self, catalog: Catalog, interactions: Interactions) -> BPRRanker:
        self._model, self._users, self._cold, self._report = _fit_implicit(
            "bpr", lambda: self.config.implicit_model("ranker 'bpr'"), catalog, interactions
        )
        return self

    def score(self, batch: UserBatch) -> np.ndarray:
        if self._model is None:
            raise _not_fitted(self.name)
        items = np.asarray(self._model.item_factors, dtype=np.float64)
        weights = _recency_weights(batch, self.config.recency)
        history = _history_matrix(self.name, batch, len(self._cold), weights)
        # items without training rows have no learnt factors: left out of the mean
        counts = history @ (~self._cold).astype(np.float64)
        # implicit stores the item bias as the last factor and a constant 1 for every user
        counts[counts == 0] = 1.0
        vectors = np.asarray(history.astype(np.float64) @ items) / counts[:, None]
        vectors[:, -1] = 1.0
        if self.config.user_vector == "trained":
            rows = self._users.get_indexer(pd.Index(batch.user_ids))
            known = rows >= 0
            vectors[known] = self._model.user_factors[rows[known]]
        return _rank_cold_last(vectors @ items.T, self._cold)

    def report(self) -> dict[str, Any]:
        return {**self._report, "config": self.config.model_dump()}
