"""Fusion fit on held-out targets: channel weights and normalisation chosen by coordinate
ascent on a ranking metric, averaged over bootstrap resamples of the users."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.retrieval._fusion import Filters, FusionConfig, blocked_positions
from ragrec.retrieval._types import ChannelCandidates, RetrievalQuery

logger = logging.getLogger(__name__)

__all__ = ["FusionFit", "FusionFitConfig", "apply_fusion", "fit_fusion", "holdout_last"]

_METRIC = re.compile(r"^(ndcg|recall|mrr)@([1-9][0-9]*)$")


class FusionFitConfig(Settings):
    """How :func:`fit_fusion` searches channel weights."""

    metric: str = Field(
        default="ndcg@10",
        description="What the search maximises on the held-out targets: ndcg@K, recall@K or mrr@K.",
    )
    methods: tuple[Literal["score", "rrf"], ...] = Field(
        default=("score", "rrf"),
        min_length=1,
        description="Normalisations tried (FusionConfig.method); the best one is kept.",
    )
    grid: tuple[float, ...] = Field(
        default=(0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
        min_length=2,
        description="Weights tried for each channel in turn (coordinate ascent).",
    )
    rounds: int = Field(
        default=4, ge=1, description="Most passes over the channels (stops when none moves)."
    )
    bootstrap: int = Field(
        default=10,
        ge=0,
        description="Coordinate ascents on resamples of the users whose weights are "
        "averaged (bagging: steadier weights on a few hundred targets); 0 fits once on all.",
    )
    max_users: int | None = Field(
        default=2000,
        ge=1,
        description="Held-out users used at most (a seeded sample; the search's time grows "
        "with them); None uses all.",
    )
    seed: int = Field(default=0, description="Seed of the user sample and the resamples.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if not _METRIC.match(value):
            raise ValueError(f"metric {value!r} is not ndcg@K, recall@K or mrr@K (e.g. ndcg@10)")
        return value

    @field_validator("grid")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not np.isfinite(v) or v < 0 for v in value) or max(value) <= 0:
            raise ValueError(f"grid {value} must hold finite weights >= 0, one of them > 0")
        return value


@dataclass(frozen=True)
class FusionFit:
    """The outcome of :func:`fit_fusion`.

    Attributes:
        method: The normalisation kept (``FusionConfig.method``).
        weights: Fitted weight per channel (the largest is 1).
        metric: The metric maximised.
        value: Its value on the held-out targets with the fitted weights.
        prior_value: Its value with the weights the search started from (the prior).
        alone: Its value per channel alone (weight 1, others 0), same method.
        by_method: Best value reached per normalisation tried.
        users: Held-out users the fit used.
        seconds: Wall time.
    """

    method: str
    weights: Mapping[str, float]
    metric: str
    value: float
    prior_value: float
    alone: Mapping[str, float] = field(default_factory=dict)
    by_method: Mapping[str, float] = field(default_factory=dict)
    users: int = 0
    seconds: float = 0.0

    def fusion_config(self, base: FusionConfig | None = None) -> FusionConfig:
        """``base`` (default: the defaults) with the fitted method."""
        return (base or FusionConfig()).model_copy(update={"method": self.method})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (written next to a store's weights)."""
        return {
            "method": self.method,
            "weights": dict(self.weights),
            "metric": self.metric,
            "value": self.value,
            "prior_value": self.prior_value,
            "alone": dict(self.alone),
            "by_method": dict(self.by_method),
            "users": self.users,
            "seconds": self.seconds,
        }


def holdout_last(interactions: Interactions, *, min_history: int = 2) -> tuple[Interactions, Any]:
    """Split off each user's newest row (by timestamp, then item id) as a held-out target,
    for users with at least ``min_history`` rows before it.

    Returns:
        The remaining rows, and the held-out rows (one per such user).
    """
    import pandas as pd

    frame = pd.DataFrame(
        {"u": interactions.user_ids, "t": interactions.timestamps, "i": interactions.item_ids}
    )
    order = frame.sort_values(["u", "t", "i"], kind="stable")
    counts = order.groupby("u", sort=False)["u"].transform("size").to_numpy()
    last = ~order.duplicated("u", keep="last").to_numpy()
    held = order.index.to_numpy()[last & (counts > min_history)]
    mask = np.zeros(len(interactions), dtype=bool)
    mask[held] = True
    return interactions.select(~mask), interactions.select(mask)


@dataclass
class _Pool:
    """Every held-out user's candidate union, flattened: features per (user, item)."""

    segment: np.ndarray  # user row of each candidate
    features: np.ndarray  # (candidates, channels) normalised contribution at weight 1
    best_rank: np.ndarray
    position: np.ndarray
    target: np.ndarray  # per user, index into the flat arrays, -1: not proposed
    users: int


def _pool(
    lists: Sequence[Sequence[ChannelCandidates]],
    names: Sequence[str],
    targets: np.ndarray,
    method: str,
    fusion: FusionConfig,
) -> _Pool:
    seg, feats, ranks, positions, target = [], [], [], [], []
    offset = 0
    for u, per_channel in enumerate(lists):
        cand: dict[int, int] = {}
        rows_f: list[np.ndarray] = []
        rows_r: list[int] = []
        for c, lst in enumerate(per_channel):
            if not len(lst):
                continue
            scores = lst.scores
            if method == "score":
                lo, hi = float(scores.min()), float(scores.max())
                norm = (scores - lo) / (hi - lo) if hi > lo else np.full(len(scores), float(hi > 0))
            else:
                norm = 1.0 / (fusion.rrf_k + np.arange(1, len(scores) + 1))
            for rank, (p, v) in enumerate(
                zip(lst.positions.tolist(), norm.tolist(), strict=True), start=1
            ):
                i = cand.get(p)
                if i is None:
                    i = cand[p] = len(rows_f)
                    rows_f.append(np.zeros(len(names)))
                    rows_r.append(rank)
                rows_f[i][c] += v
                rows_r[i] = min(rows_r[i], rank)
        n = len(rows_f)
        seg.append(np.full(n, u))
        feats.append(np.array(rows_f).reshape(n, len(names)))
        ranks.append(np.array(rows_r, dtype=np.int64))
        positions.append(np.fromiter(cand, dtype=np.int64, count=n))
        t = cand.get(int(targets[u]))
        target.append(-1 if t is None else offset + t)
        offset += n
    return _Pool(
        np.concatenate(seg) if seg else np.empty(0, np.int64),
        np.vstack(feats) if feats else np.empty((0, len(names))),
        np.concatenate(ranks) if ranks else np.empty(0, np.int64),
        np.concatenate(positions) if positions else np.empty(0, np.int64),
        np.array(target, dtype=np.int64),
        len(lists),
    )


def _ranks(pool: _Pool, w: np.ndarray) -> np.ndarray:
    """Each user's target rank under ``fuse``'s order (score, best rank, position)."""
    s = pool.features @ w
    ok = pool.target >= 0
    t = np.where(ok, pool.target, 0)
    ts, tr, tp = s[t][pool.segment], pool.best_rank[t][pool.segment], pool.position[t][pool.segment]
    before = (s > ts) | (
        (s == ts) & ((pool.best_rank < tr) | ((pool.best_rank == tr) & (pool.position < tp)))
    )
    ranks = 1 + np.bincount(pool.segment, weights=before, minlength=pool.users)
    return np.where(ok, ranks, np.inf)


def _metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    m = _METRIC.match(metric)
    assert m is not None  # validated by FusionFitConfig
    name, k = m.group(1), int(m.group(2))
    hit = ranks <= k
    if name == "recall":
        return hit.astype(np.float64)
    if name == "mrr":
        return np.where(hit, 1.0 / ranks, 0.0)
    return np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)


def _ascent(pool: _Pool, start: np.ndarray, users: np.ndarray, cfg: FusionFitConfig) -> np.ndarray:
    w = start.copy()
    best = _metric(_ranks(pool, w), cfg.metric)[users].mean()
    for _ in range(cfg.rounds):
        moved = False
        for c in range(len(w)):
            for g in cfg.grid:
                if g == w[c]:
                    continue
                trial = w.copy()
                trial[c] = g
                if trial.sum() <= 0:
                    continue
                value = _metric(_ranks(pool, trial), cfg.metric)[users].mean()
                if value > best + 1e-12:
                    best, w, moved = value, trial, True
        if not moved:
            break
    return w / w.max()


def fit_fusion(
    retriever: Any,
    queries: Sequence[RetrievalQuery],
    targets: Sequence[Any] | np.ndarray,
    *,
    config: FusionFitConfig | None = None,
) -> FusionFit:
    """Learn channel weights and the normalisation from held-out targets.

    Each channel proposes its ``fusion.depth`` candidates once per query (history
    excluded); the weights are then searched by coordinate ascent on ``config.metric``
    over ``config.grid``, starting from the retriever's global weights, for each
    normalisation in ``config.methods``; with ``bootstrap`` the ascent runs on resampled
    users and the weights are averaged. The retriever is not changed: apply the result
    with ``retriever.weights = retriever.weights.with_global(fit.weights)`` and the
    method through ``FusionConfig``.

    Args:
        retriever: A fit :class:`~ragrec.retrieval.Retriever`, fit on rows that do not
            hold the targets.
        queries: One per held-out user (their history before the target).
        targets: Each query's target catalog position.
        config: Search settings.

    Raises:
        ConfigError: Mismatched lengths, or no query with a history.
    """
    cfg = config or FusionFitConfig()
    start = time.perf_counter()
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) != len(queries):
        raise ConfigError(f"{len(targets)} targets for {len(queries)} queries; pass one each")
    rng = np.random.default_rng(cfg.seed)
    rows = np.flatnonzero([not q.cold for q in queries])
    if not len(rows):
        raise ConfigError("fit_fusion needs held-out users with a history; none was given")
    if cfg.max_users is not None and len(rows) > cfg.max_users:
        rows = np.sort(rng.choice(rows, cfg.max_users, replace=False))
    queries = [queries[int(i)] for i in rows]
    targets = targets[rows]
    catalog: Catalog = retriever._require_fit()
    depth = retriever.config.fusion.depth
    blocked = [blocked_positions(catalog, Filters(), q.history) for q in queries]
    names = [c.name for c in retriever.channels]
    per_channel = []
    for channel in retriever.channels:
        active = [i for i, q in enumerate(queries) if not (channel.needs_history and q.cold)]
        got = channel.propose(
            [queries[i] for i in active], depth, blocked=[blocked[i] for i in active]
        )
        lists = [ChannelCandidates(channel.name, np.empty(0, np.int64), np.empty(0))] * len(queries)
        for i, lst in zip(active, got, strict=True):
            lists[i] = lst
        per_channel.append(lists)
    by_user = [[per_channel[c][u] for c in range(len(names))] for u in range(len(queries))]
    prior = retriever.weights.for_user(None)
    start_w = np.array([float(prior.get(n, 0.0)) for n in names])
    if start_w.sum() <= 0:
        start_w = np.ones(len(names))
    everyone = np.arange(len(queries))
    best: tuple[float, Literal["score", "rrf"], np.ndarray] | None = None
    by_method: dict[str, float] = {}
    alone: dict[str, dict[str, float]] = {}
    prior_value: dict[str, float] = {}
    for method in cfg.methods:
        pool = _pool(by_user, names, targets, method, retriever.config.fusion)
        if cfg.bootstrap:
            fits = [
                _ascent(pool, start_w, rng.integers(0, len(queries), len(queries)), cfg)
                for _ in range(cfg.bootstrap)
            ]
            w = np.mean(fits, axis=0)
            w = w / w.max()
        else:
            w = _ascent(pool, start_w, everyone, cfg)
        value = float(_metric(_ranks(pool, w), cfg.metric).mean())
        by_method[method] = value
        prior_value[method] = float(_metric(_ranks(pool, start_w), cfg.metric).mean())
        alone[method] = {
            n: float(_metric(_ranks(pool, np.eye(len(names))[c]), cfg.metric).mean())
            for c, n in enumerate(names)
        }
        logger.info("fusion fit (%s): %s %.4f, weights %s", method, cfg.metric, value, w.round(3))
        if best is None or value > best[0]:
            best = (value, method, w)
    assert best is not None
    value, method, w = best
    current = retriever.config.fusion.method
    return FusionFit(
        method=method,
        weights={n: round(float(x), 4) for n, x in zip(names, w, strict=True)},
        metric=cfg.metric,
        value=value,
        prior_value=prior_value.get(current, prior_value[method]),
        alone=alone[method],
        by_method=by_method,
        users=len(queries),
        seconds=time.perf_counter() - start,
    )


def apply_fusion(retriever: Any, fit: FusionFit) -> None:
    """Make ``fit``'s weights the retriever's global prior (per-user weights are kept) and
    its method the fusion method."""
    retriever.weights = retriever.weights.with_global(dict(fit.weights))
    retriever.config = retriever.config.model_copy(
        update={"fusion": fit.fusion_config(retriever.config.fusion)}
    )
