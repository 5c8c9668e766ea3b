"""Collaborative channels: recency-weighted item-kNN, and ALS / BPR item factors searched
through the vector index."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ragrec._settings import Settings
from ragrec.errors import ConfigError
from ragrec.retrieval._channels import (
    ChannelConfig,
    ChannelContext,
    DenseChannel,
    register_channel,
)
from ragrec.retrieval._types import RetrievalQuery
from ragrec.retrieval._vector import VectorChannel, latest_weights

if TYPE_CHECKING:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

logger = logging.getLogger(__name__)

__all__ = [
    "ALSChannel",
    "ALSChannelConfig",
    "ALSParams",
    "BPRChannel",
    "BPRChannelConfig",
    "BPRParams",
    "ItemKNNChannel",
    "ItemKNNChannelConfig",
    "ItemKNNParams",
    "item_similarities",
    "one_blas_thread",
    "user_item_matrix",
]


def user_item_matrix(context: ChannelContext) -> sp.csr_matrix:
    """Binary ``(users, items)`` matrix of the training rows (a repeat counts once)."""
    seqs = list(context.sequences.values())
    n = len(context.catalog)
    if not seqs:
        return sp.csr_matrix((0, n), dtype=np.float32)
    rows = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, np.concatenate(seqs))),
        shape=(len(seqs), n),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _recency_field(default: float) -> Any:
    return Field(
        default=default,
        gt=0,
        le=1,
        description="History weight decay: the item n steps before the newest weighs "
        "recency**n (1: the whole history alike). Chosen on the llamarec validation split.",
    )


def _threads_field() -> Any:
    return Field(
        default=1,
        ge=0,
        description="implicit's threads (fitting; the ALS fold-in of the als ranker); 0 uses "
        "every core. Only 1 is reproducible run to run.",
    )


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS held to one thread (implicit's advice for its own thread pool; it warns
    otherwise); the caller's settings are restored on exit."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        yield


def _implicit_model(what: str, params: ALSParams | BPRParams, **specific: float) -> Any:
    """An unfitted ``implicit`` CPU model of ``params`` (ALS or BPR) with its
    algorithm-specific ``specific`` settings; ``what`` (``"channel 'als'"``) names the
    user in the error when implicit is missing."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError as exc:  # pragma: no cover - implicit is a core dependency
        raise ConfigError(f"{what} needs implicit: pip install 'implicit>=0.7.3'") from exc
    model: Any = BayesianPersonalizedRanking
    if isinstance(params, ALSParams):
        model = AlternatingLeastSquares
    return model(
        factors=params.factors,
        regularization=params.regularization,
        iterations=params.iterations,
        num_threads=params.threads,
        random_state=params.seed,
        **specific,
    )


# ------------------------------------------------------------------------------------ itemknn


class ItemKNNParams(Settings):
    """Item-kNN settings: of the ``itemknn`` channel and the ``itemknn`` evaluation ranker."""

    neighbors: int = Field(
        default=20, ge=1, description="Most similar items kept per item (its neighbourhood)."
    )
    shrink: float = Field(
        default=0.0, ge=0, description="Added to the cosine denominator: damps rare pairs."
    )
    recency: float = _recency_field(0.7)


def item_similarities(matrix: sp.csr_matrix, neighbors: int, shrink: float) -> sp.csr_matrix:
    """Item-item cosine similarities of a binary ``(users, items)`` matrix, float64.

    ``sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)``; row ``i`` keeps the
    ``neighbors`` most similar items ``N(i)`` (ties: lower position first).
    """
    x = matrix.T.tocsr().astype(np.float64)
    n = x.shape[0]
    co = (x @ x.T).tocoo()
    off = co.row != co.col
    row, col = co.row[off], co.col[off]
    norms = np.sqrt(np.asarray(x.sum(axis=1)).ravel())
    values = co.data[off] / (norms[row] * norms[col] + shrink)
    return _keep_top(sp.csr_matrix((values, (row, col)), shape=(n, n)), neighbors)


class ItemKNNChannelConfig(ChannelConfig, ItemKNNParams):
    """Configuration of :class:`ItemKNNChannel`."""


class ItemKNNChannel(DenseChannel):
    """Item-item cosine kNN on who-saw-what, scored from a recency-weighted history.

    ``sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)``; each item ``i``
    keeps its ``neighbors`` most similar items ``N(i)``. A user's score for ``i`` is the
    sum of ``w_j sim(i, j)`` over history items ``j`` in ``N(i)``
    (``w_j = recency**steps``), as the ``itemknn`` evaluation baseline scores. Items with
    no history item in their neighbourhood score ``-inf`` (not proposed).
    """

    kind = "itemknn"
    config_class = ItemKNNChannelConfig
    config: ItemKNNChannelConfig

    def fit(self, context: ChannelContext) -> ItemKNNChannel:
        cfg = self.config
        sim = item_similarities(user_item_matrix(context), cfg.neighbors, cfg.shrink)
        # row i of sim holds N(i); transposed, row j lists the items whose N holds j
        self._sim = sim.T.tocsr().astype(np.float32)
        self._n_items = len(context.catalog)
        return self

    def _weights(self, queries: Sequence[RetrievalQuery]) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for r, q in enumerate(queries):
            pos, w = latest_weights(q.history, self.config.recency)
            rows.append(np.full(len(pos), r))
            cols.append(pos)
            vals.append(w)
        if not rows:
            return sp.csr_matrix((0, self._n_items))
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(queries), self._n_items),
        )

    def score(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        scores = np.asarray((self._weights(queries) @ self._sim).todense(), dtype=np.float64)
        scores[scores <= 0] = -np.inf  # no neighbour in the history: no evidence
        return scores

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        weights = self._weights(queries)
        out = []
        for r, pos in enumerate(positions):
            pos = np.asarray(pos, dtype=np.int64)
            s = np.asarray((weights[r] @ self._sim[:, pos]).todense(), dtype=np.float64).ravel()
            out.append(np.where(s > 0, s, -np.inf))
        return out

    def contributions(self, query: RetrievalQuery, positions: np.ndarray) -> np.ndarray:
        """Exact terms: history item ``j`` adds ``w_j sim(j, item)`` (once, at its newest
        occurrence)."""
        hist = np.asarray(query.history, dtype=np.int64)
        out = np.zeros((len(positions), len(hist)))
        if not len(hist) or not len(positions):
            return out
        pos, w = latest_weights(hist, self.config.recency)
        newest = {int(p): len(hist) - 1 - int(np.flatnonzero(hist[::-1] == p)[0]) for p in pos}
        sims = self._sim[pos][:, np.asarray(positions, dtype=np.int64)].toarray()
        for k, p in enumerate(pos.tolist()):
            out[:, newest[p]] = w[k] * sims[k]
        return out

    def state(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {"data": self._sim.data, "indices": self._sim.indices, "indptr": self._sim.indptr}

    def load_state(
        self, context: ChannelContext, state: Mapping[str, np.ndarray]
    ) -> ItemKNNChannel:
        _require(self.name, state, "data", "indices", "indptr")
        n = len(context.catalog)
        indptr = np.asarray(state["indptr"])
        if len(indptr) != n + 1:
            raise ConfigError(
                f"channel {self.name!r}: saved similarities cover {len(indptr) - 1} items, "
                f"the catalog has {n}; rebuild the store (ragrec index --force)"
            )
        self._sim = sp.csr_matrix(
            (np.asarray(state["data"]), np.asarray(state["indices"]), indptr), shape=(n, n)
        )
        self._n_items = n
        return self


def _keep_top(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (ties: lower column first)."""
    sim = sim.tocsr()
    counts = np.diff(sim.indptr)
    if counts.max(initial=0) <= k:
        return sim
    keep = np.zeros(sim.nnz, dtype=bool)
    for row in np.flatnonzero(counts):
        lo, hi = sim.indptr[row], sim.indptr[row + 1]
        if hi - lo <= k:
            keep[lo:hi] = True
            continue
        order = np.lexsort((sim.indices[lo:hi], -sim.data[lo:hi]))
        keep[lo + order[:k]] = True
    rows = np.repeat(np.arange(sim.shape[0]), counts)
    return sp.csr_matrix((sim.data[keep], (rows[keep], sim.indices[keep])), shape=sim.shape)


def _require(name: str, state: Mapping[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConfigError(
            f"channel {name!r}: saved state lacks {missing}; rebuild the store "
            "(ragrec index --force) or refit the retriever"
        )


# ---------------------------------------------------------------------------------------- als


class ALSParams(Settings):
    """Implicit-feedback ALS settings: of the ``als`` channel and the ``als`` evaluation
    ranker."""

    factors: int = Field(default=128, ge=1, description="Latent factors per user and item.")
    iterations: int = Field(default=15, ge=1, description="ALS sweeps over users and items.")
    regularization: float = Field(default=10.0, ge=0, description="L2 weight on the factors.")
    alpha: float = Field(
        default=5.0,
        gt=0,
        description="Confidence of an observed interaction (implicit's alpha; the "
        "unobserved ones have confidence 1).",
    )
    recency: float = _recency_field(0.5)
    seed: int = Field(default=0, description="Seed of the initial factors.")
    threads: int = _threads_field()

    def implicit_model(self, what: str) -> AlternatingLeastSquares:
        """An unfitted ``implicit`` ALS model with these settings (``what``, say
        ``"channel 'als'"``, names the user in the error when implicit is missing)."""
        model: AlternatingLeastSquares = _implicit_model(what, self, alpha=self.alpha)
        return model


def _fit_item_factors(
    channel: ALSChannel | BPRChannel, context: ChannelContext, *, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The item factors (``width`` columns; 0 for items without training rows) an
    ``implicit`` model of ``channel``'s settings learns from the training rows, and the
    mask of the items with training rows."""
    matrix = user_item_matrix(context)
    known = np.asarray(matrix.sum(axis=0)).ravel() > 0
    if matrix.shape[0] == 0:
        return np.zeros((len(context.catalog), width), np.float32), known
    with one_blas_thread():
        model = channel.config.implicit_model(f"channel {channel.kind!r}")
        model.fit(matrix, show_progress=False)
    vectors = np.asarray(model.item_factors, dtype=np.float32)
    vectors[~known] = 0.0
    return vectors, known


class ALSChannelConfig(ChannelConfig, ALSParams):
    """Configuration of :class:`ALSChannel`."""


class ALSChannel(VectorChannel):
    """Implicit-feedback ALS (Hu, Koren and Volinsky 2008; fit with ``implicit``): its item
    factors go into the vector index; a user is folded in from their history.

    The fold-in is the exact least-squares solution given the item factors ``Y``:
    ``x = (Y'Y + Y'(C - I)Y + reg I)^-1 Y'C p`` with confidence ``c_j = alpha w_j``
    (``w_j`` the recency weight of history item ``j``), as implicit's
    ``recalculate_user``, so any history (not only a training user's) gets a vector.
    """

    kind = "als"
    config_class = ALSChannelConfig
    config: ALSChannelConfig

    def _fit_vectors(self, context: ChannelContext) -> tuple[np.ndarray, np.ndarray]:
        return _fit_item_factors(self, context, width=self.config.factors)

    def _gram(self) -> tuple[np.ndarray, np.ndarray]:
        """The item factors in float64 and ``Y'Y + reg I``, computed once per fit."""
        vectors = self._vectors
        cached = getattr(self, "_gram_cache", None)
        if cached is None or cached[0] is not vectors:
            y = vectors.astype(np.float64)
            gram = y.T @ y + self.config.regularization * np.eye(y.shape[1])
            cached = (vectors, y, gram)
            self._gram_cache = cached
        return cached[1], cached[2]

    def user_vectors(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        y, gram = self._gram()
        cfg = self.config
        out = np.zeros((len(queries), y.shape[1]), dtype=np.float32)
        rows, systems, targets = [], [], []
        for r, q in enumerate(queries):
            pos, w = latest_weights(q.history, cfg.recency)
            pos, w = pos[self._known[pos]], w[self._known[pos]]
            if not len(pos):
                continue
            yh = y[pos]
            conf = cfg.alpha * w
            rows.append(r)
            systems.append(gram + (yh.T * (conf - 1.0)) @ yh)
            targets.append(yh.T @ conf)
        if not rows:
            return out
        a, b = np.stack(systems), np.stack(targets)
        try:
            out[rows] = np.linalg.solve(a, b[..., None])[..., 0]
        except np.linalg.LinAlgError:
            for r, ai, bi in zip(rows, a, b, strict=True):
                out[r] = np.linalg.lstsq(ai, bi, rcond=None)[0]
        return out


# ---------------------------------------------------------------------------------------- bpr


class BPRParams(Settings):
    """Bayesian personalised ranking settings: of the ``bpr`` channel and the ``bpr``
    evaluation ranker."""

    factors: int = Field(default=64, ge=1, description="Latent factors per user and item.")
    iterations: int = Field(default=100, ge=1, description="SGD epochs over the training rows.")
    learning_rate: float = Field(default=0.01, gt=0, description="SGD step size.")
    regularization: float = Field(default=0.01, ge=0, description="L2 weight on the factors.")
    recency: float = _recency_field(0.5)
    seed: int = Field(default=0, description="Seed of the initial factors and the sampling.")
    threads: int = _threads_field()

    def implicit_model(self, what: str) -> BayesianPersonalizedRanking:
        """An unfitted ``implicit`` BPR model with these settings (``what`` names the user
        in the error when implicit is missing)."""
        model: BayesianPersonalizedRanking = _implicit_model(
            what, self, learning_rate=self.learning_rate
        )
        return model


class BPRChannelConfig(ChannelConfig, BPRParams):
    """Configuration of :class:`BPRChannel`."""


class BPRChannel(VectorChannel):
    """Bayesian personalised ranking (Rendle et al. 2009; fit with ``implicit``): its item
    factors (with the learnt item bias as the last component) go into the vector index; a
    user is the recency-weighted mean of their history items' factors, with a constant 1
    against the bias."""

    kind = "bpr"
    config_class = BPRChannelConfig
    config: BPRChannelConfig

    def _fit_vectors(self, context: ChannelContext) -> tuple[np.ndarray, np.ndarray]:
        # implicit keeps the item bias in the last factor and a 1 in every user's
        return _fit_item_factors(self, context, width=self.config.factors + 1)

    def user_vectors(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        y = self._vectors.astype(np.float64)
        out = np.zeros((len(queries), y.shape[1]), dtype=np.float32)
        for r, q in enumerate(queries):
            pos, w = latest_weights(q.history, self.config.recency)
            pos, w = pos[self._known[pos]], w[self._known[pos]]
            if len(pos):
                out[r] = (w @ y[pos]) / w.sum()
            out[r, -1] = 1.0
        return out


for _cls in (ItemKNNChannel, ALSChannel, BPRChannel):
    register_channel(_cls)
