"""Scoring rankers on protocol cases and computing metrics; the results and the run folder
they are written to are in :mod:`ragrec.eval._results` (whose public names are
importable from here too)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval._cases import EvalCases, ProtocolData, Split
from ragrec.eval._config import DEFAULT_METRICS
from ragrec.eval._rankers import Ranker, UserBatch
from ragrec.eval._results import (
    EvalResult,
    _Checkpoint,
    _ids,
    _UserResult,
    collect_environment,
    git_commit,
    write_report,
)
from ragrec.eval.beyond import (
    coverage,
    genre_features,
    intra_list_diversity,
    latency_percentiles,
    long_tail_share,
    novelty,
)
from ragrec.eval.metrics import UNRANKED, Metric, parse_metrics

__all__ = [
    "CANDIDATE_CUTOFFS",
    "EvalResult",
    "collect_environment",
    "evaluate",
    "git_commit",
    "score_batch",
    "target_ranks",
    "top_positions",
    "write_report",
]

CANDIDATE_CUTOFFS = (20, 50, 100)
"""Cutoffs of the candidate recall every report carries: the share of targets within the
top K, which bounds what a re-ranker of the top K can reach."""


def target_ranks(
    scores: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    candidates: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """1-based rank of each target among all items (or among its candidates), history
    excluded.

    Ties rank by catalog position (as a stable sort would). History items are never
    ranked; a target that is itself in the history (or scored ``-inf``) gets
    :data:`~ragrec.eval.metrics.UNRANKED` (a miss at every cutoff).

    Args:
        scores: ``(n_users, n_items)`` scores; copied, not modified.
        histories: Per user, catalog positions to exclude.
        targets: Per user, the target's catalog position.
        candidates: Per user, the only catalog positions ranked (candidate-set protocols);
            empty: all items.

    Returns:
        int64 ranks.
    """
    scores = _masked(scores, histories, candidates)
    n_users, n_items = scores.shape
    rows = np.arange(n_users)
    target_scores = scores[rows, targets]
    higher = (scores > target_scores[:, None]).sum(axis=1)
    tied_before = (
        (scores == target_scores[:, None]) & (np.arange(n_items) < targets[:, None])
    ).sum(axis=1)
    ranks = 1 + higher + tied_before
    ranks[np.isneginf(target_scores)] = UNRANKED
    return ranks.astype(np.int64)


def top_positions(
    scores: np.ndarray,
    histories: Sequence[np.ndarray],
    k: int,
    candidates: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Each user's ``k`` best catalog positions in rank order (ties by catalog position,
    as in :func:`target_ranks`), history excluded; ``-1`` pads lists shorter than ``k``
    (fewer rankable items)."""
    scores = _masked(scores, histories, candidates)
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = order.astype(np.int64)
    top[np.isneginf(np.take_along_axis(scores, order, axis=1))] = -1
    return top


def _masked(
    scores: np.ndarray, histories: Sequence[np.ndarray], candidates: Sequence[np.ndarray]
) -> np.ndarray:
    scores = np.array(scores, dtype=np.float64, copy=True)
    if np.isnan(scores).any():
        raise ConfigError("ranker returned NaN scores; scores must be numbers or -inf")
    if len(candidates):
        kept = np.full(scores.shape, -np.inf)
        for row, cand in enumerate(candidates):
            kept[row, cand] = scores[row, cand]
        scores = kept
    for row, hist in enumerate(histories):
        scores[row, hist] = -np.inf
    return scores


@dataclass(frozen=True)
class _BatchOutput:
    rows: np.ndarray
    ranks: np.ndarray
    top: np.ndarray
    seconds: float
    extras: list[Mapping[str, Any]]


def score_batch(
    ranker: Ranker,
    cases: EvalCases,
    rows: np.ndarray,
    n_items: int,
    top_k: int,
) -> _BatchOutput:
    """Score the cases at ``rows`` with a fitted ranker: target ranks, top lists, extras
    and the batch's wall time (used by every engine)."""
    part = cases.take(rows)
    batch = UserBatch(part.user_ids, part.histories, part.ratings, part.candidates)
    start = time.perf_counter()
    scores = np.asarray(ranker.score(batch), dtype=np.float64)
    seconds = time.perf_counter() - start
    expected = (len(rows), n_items)
    if scores.shape != expected:
        raise ConfigError(
            f"ranker {ranker.name!r} returned scores of shape {scores.shape}, "
            f"expected {expected} (users, catalog items)"
        )
    extras = _checked_extras(ranker, batch)
    ranks = target_ranks(scores, part.histories, part.targets, part.candidates)
    top = top_positions(scores, part.histories, top_k, part.candidates)
    return _BatchOutput(np.asarray(rows), ranks, top, seconds, extras)


Engine = Literal["local", "ray"]


def evaluate(
    data: ProtocolData,
    ranker: Ranker,
    *,
    split: Split = "test",
    metrics: Sequence[str | Metric] = DEFAULT_METRICS,
    dataset: str = "",
    batch_size: int = 256,
    limit_users: int | None = None,
    seed: int | None = None,
    fit: bool = True,
    progress: Callable[[int, int], None] | None = None,
    top_k: int = 20,
    beyond_k: int = 10,
    out: str | Path | None = None,
    resume: bool = True,
    engine: Engine = "local",
    engine_options: Mapping[str, Any] | None = None,
    system: str = "",
) -> EvalResult:
    """Fit ``ranker`` on the protocol's training rows and rank every split target.

    With ``out``, each batch's per-user results are appended (and synced) to
    ``out/users.partial.jsonl`` as they are scored, so an interrupted run started again
    with the same ``out`` and settings scores only the users still missing
    (``resume=True``); the finished run's report is written there
    (:func:`write_report`).

    Args:
        data: Data prepared by a protocol.
        ranker: The ranker; fit here unless ``fit=False``.
        split: ``"validation"`` or ``"test"``.
        metrics: Metric names (``"ndcg@10"``) or objects.
        dataset: Dataset name for the report.
        batch_size: Users scored per call.
        limit_users: Evaluate only the first N users (sorted by id).
        seed: Recorded in the environment.
        fit: Fit the ranker first.
        progress: Called with (users done, users total) after each batch.
        top_k: Length of the top lists kept per user (beyond-accuracy metrics, reports).
        beyond_k: Cutoff of coverage, novelty, long-tail share and diversity.
        out: Report folder; enables resuming.
        resume: Reuse per-user results in ``out`` from an interrupted run with the same
            settings; ``False`` starts over.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray actors, one ranker each;
            see :mod:`ragrec.eval._ray`).
        engine_options: Ray options: ``address``, ``workers``, ``cpus_per_worker``,
            ``gpus_per_worker``.
        system: Display name in reports (a grid entry); defaults to the ranker's name.

    Returns:
        Ranks, metric means and the report's other figures.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if limit_users is not None and limit_users < 1:
        raise ConfigError(f"limit_users={limit_users} must be >= 1, or None for all users")
    if top_k < 1 or beyond_k < 1:
        raise ConfigError(f"top_k={top_k} and beyond_k={beyond_k} must be >= 1")
    if engine not in ("local", "ray"):
        raise ConfigError(f"engine={engine!r} is not known; use 'local' or 'ray'")
    metric_objs = parse_metrics([m if isinstance(m, str) else m.name for m in metrics])
    cases: EvalCases = data.cases(split)
    if limit_users is not None:
        cases = cases.head(limit_users)
    config = getattr(ranker, "config", None)
    config_dump = config.model_dump(mode="json") if isinstance(config, BaseModel) else {}
    checkpoint = (
        _Checkpoint(
            Path(out),
            {
                "protocol": data.name,
                "dataset": dataset,
                "split": split,
                "ranker": ranker.name,
                "config": config_dump,
                "top_k": top_k,
                "catalog_items": len(data.catalog),
            },
            resume=resume,
        )
        if out is not None
        else None
    )
    catalog = data.catalog
    results: dict[int, _UserResult] = {}
    if checkpoint is not None:
        results = checkpoint.load(cases, catalog)
    resumed = len(results)
    # a finished run asked for again: its report stands (no refit, its timings kept)
    previous = checkpoint.finished_summary(len(cases)) if checkpoint is not None else None
    if previous is not None and resumed == len(cases):
        fit = False
    else:
        previous = None
    start = time.perf_counter()
    tuned = start
    if fit:
        ranker.fit(catalog, data.fit_rows(split))
        tuned = time.perf_counter()
        if split == "test":  # fit on validation, never on the split being scored
            ranker.tune(data)
    fitted = time.perf_counter()
    pending = np.array([i for i in range(len(cases)) if i not in results], dtype=np.int64)
    batches = [pending[lo : lo + batch_size] for lo in range(0, len(pending), batch_size)]
    if progress is not None and resumed:
        progress(resumed, len(cases))
    if engine == "ray":
        from ragrec.eval._ray import score_on_ray

        outputs = score_on_ray(
            ranker, data, split, cases, batches, top_k=top_k, options=engine_options or {}
        )
    else:
        outputs = (score_batch(ranker, cases, rows, len(catalog), top_k) for rows in batches)
    for output in outputs:
        per_user = output.seconds / max(len(output.rows), 1)
        fresh = {
            int(row): _UserResult(int(rank), top, per_user, extra)
            for row, rank, top, extra in zip(
                output.rows, output.ranks, output.top, output.extras, strict=True
            )
        }
        if checkpoint is not None:
            checkpoint.append(cases, catalog, fresh)
        results.update(fresh)
        if progress is not None:
            progress(len(results), len(cases))
    done = time.perf_counter()
    ordered = [results[i] for i in range(len(cases))]
    ranks = np.array([r.rank for r in ordered], dtype=np.int64)
    top = (
        np.stack([_pad(r.top, top_k) for r in ordered])
        if ordered
        else np.empty((0, top_k), dtype=np.int64)
    )
    user_seconds = np.array([r.seconds for r in ordered], dtype=np.float64)
    extras = [dict(r.extras) for r in ordered]
    values = {
        m.name: float(np.mean(m.from_ranks(ranks))) if len(ranks) else 0.0 for m in metric_objs
    }
    train = data.fit_rows(split)
    result = EvalResult(
        protocol=data.name,
        dataset=dataset,
        ranker=ranker.name,
        split=split,
        user_ids=cases.user_ids,
        target_ids=catalog.item_ids[cases.targets],
        ranks=ranks,
        metrics=values,
        seconds=previous["seconds_by_stage"]
        if previous is not None
        else {
            "fit": tuned - start,
            "tune": fitted - tuned,
            "score": done - fitted,
            "total": done - start,
        },
        environment=previous["environment"]
        if previous is not None
        else {**collect_environment(seed=seed, device=ranker.device), "engine": engine},
        config=previous["config"] if previous is not None else {**config_dump, **ranker.report()},
        extras=tuple(extras) if any(extras) else (),
        top_ids=tuple(_ids(catalog, row) for row in top),
        user_seconds=user_seconds,
        beyond=_beyond_metrics(top, catalog, train, beyond_k),
        rates=_rates(cases, extras),
        latency=latency_percentiles(user_seconds) if len(user_seconds) else {},
        system=system,
        resumed=resumed,
        candidate_recall={
            f"recall@{k}": float(np.mean(ranks <= k)) if len(ranks) else 0.0
            for k in CANDIDATE_CUTOFFS
        },
    )
    if checkpoint is not None:
        write_report(result, checkpoint.folder)
        checkpoint.finish()
    return result


def _pad(top: np.ndarray, k: int) -> np.ndarray:
    out = np.full(k, -1, dtype=np.int64)
    out[: min(k, len(top))] = top[:k]
    return out


def _beyond_metrics(
    top: np.ndarray, catalog: Catalog, train: Interactions, k: int
) -> dict[str, float]:
    if not len(top):
        return {}
    pos = catalog.positions(train.item_ids)
    keep = pos >= 0
    pairs = pd.DataFrame({"user": train.user_ids[keep], "item": pos[keep]}).drop_duplicates()
    counts = np.bincount(pairs["item"].to_numpy(), minlength=len(catalog)).astype(np.float64)
    n_users = max(int(pairs["user"].nunique()), 1)
    values = {
        f"coverage@{k}": coverage(top, len(catalog), k),
        f"novelty@{k}": novelty(top, counts, n_users, k),
        f"long_tail@{k}": long_tail_share(top, counts, k),
    }
    features = genre_features(catalog)
    if features.shape[1]:  # without genres, diversity would be a meaningless 1.0
        values[f"diversity@{k}"] = intra_list_diversity(top, features, k)
    # nan (no list long enough) is left out: it is not JSON
    return {name: float(v) for name, v in values.items() if np.isfinite(v)}


_RATE_KEYS = ("degraded", "invalid", "cold_start")


def _rates(cases: EvalCases, extras: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Share of users with an empty history (cold start) and, where the ranker reports
    them per user, degraded or invalid outputs."""
    n = max(len(cases), 1)
    rates = {"cold_start": sum(len(h) == 0 for h in cases.histories) / n}
    for key in _RATE_KEYS:
        flags = [bool(e[key]) for e in extras if key in e]
        if flags:
            rates[key] = max(rates.get(key, 0.0), sum(flags) / n)
    return rates


_RESERVED = frozenset({"user", "target", "rank"})


def _checked_extras(ranker: Ranker, batch: UserBatch) -> list[Mapping[str, Any]]:
    extras: list[Mapping[str, Any]] = list(ranker.user_extras(batch))
    if len(extras) != len(batch):
        raise ConfigError(
            f"ranker {ranker.name!r} returned {len(extras)} user extras for a batch of "
            f"{len(batch)} users; user_extras must return one dict per user"
        )
    for uid, extra in zip(batch.user_ids, extras, strict=True):
        if not isinstance(extra, Mapping):
            raise ConfigError(
                f"ranker {ranker.name!r} returned user extras of type {type(extra).__name__} "
                f"for user {uid!r}; each must be a dict"
            )
        clash = _RESERVED & set(extra)
        if clash:
            raise ConfigError(
                f"ranker {ranker.name!r} user extras use reserved key(s) {sorted(clash)} for "
                f"user {uid!r}; {sorted(_RESERVED)} are the runner's: rename them"
            )
    return extras
