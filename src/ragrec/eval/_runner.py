"""Scoring rankers on protocol cases, computing metrics, and writing reports."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from ragrec._version import __version__
from ragrec.errors import ConfigError
from ragrec.eval._protocol import EvalCases, ProtocolData, Split
from ragrec.eval._rankers import Ranker, UserBatch
from ragrec.eval.metrics import UNRANKED, Metric, parse_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_METRICS",
    "EvalResult",
    "collect_environment",
    "evaluate",
    "target_ranks",
    "write_report",
]

DEFAULT_METRICS = (
    "recall@5",
    "recall@10",
    "recall@20",
    "mrr@5",
    "mrr@10",
    "ndcg@5",
    "ndcg@10",
)

_PACKAGES = (
    "numpy",
    "pandas",
    "pyarrow",
    "torch",
    "transformers",
    "sentence-transformers",
    "faiss-cpu",
    "faiss-gpu-cu12",
    "vllm",
)


def collect_environment(*, seed: int | None, device: str) -> dict[str, Any]:
    """Package versions, platform, device and seed, for reports."""
    versions: dict[str, str] = {"ragrec": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "versions": versions,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "device": device,
        "seed": seed,
    }


def target_ranks(
    scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray
) -> np.ndarray:
    """1-based rank of each target among all items, history excluded.

    Ties rank by catalog position (as a stable sort would). History items are never
    ranked; a target that is itself in the history (or scored ``-inf``) gets
    :data:`~ragrec.eval.metrics.UNRANKED` (a miss at every cutoff).

    Args:
        scores: ``(n_users, n_items)`` scores; copied, not modified.
        histories: Per user, catalog positions to exclude.
        targets: Per user, the target's catalog position.

    Returns:
        int64 ranks.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    n_users, n_items = scores.shape
    if np.isnan(scores).any():
        raise ConfigError("ranker returned NaN scores; scores must be numbers or -inf")
    for row, hist in enumerate(histories):
        scores[row, hist] = -np.inf
    rows = np.arange(n_users)
    target_scores = scores[rows, targets]
    higher = (scores > target_scores[:, None]).sum(axis=1)
    tied_before = (
        (scores == target_scores[:, None]) & (np.arange(n_items) < targets[:, None])
    ).sum(axis=1)
    ranks = 1 + higher + tied_before
    ranks[np.isneginf(target_scores)] = UNRANKED
    return ranks.astype(np.int64)


@dataclass(frozen=True)
class EvalResult:
    """The outcome of one evaluation run.

    Attributes:
        protocol: Protocol name.
        dataset: Dataset name or path.
        ranker: Ranker name.
        split: Split evaluated.
        user_ids: Evaluated users.
        target_ids: Each user's target item id.
        ranks: Each target's 1-based rank (``UNRANKED`` when not ranked).
        metrics: Mean metric values by name (``"ndcg@10"``).
        seconds: Wall time by stage (``"fit"``, ``"score"``, ``"total"``).
        environment: Versions, device, seed.
        config: The ranker configuration used.
        extras: Per user (aligned with ``user_ids``), what the ranker recorded about them
            (:meth:`Ranker.user_extras`: explanations, ...); empty when it recorded nothing.
    """

    protocol: str
    dataset: str
    ranker: str
    split: Split
    user_ids: np.ndarray
    target_ids: np.ndarray
    ranks: np.ndarray
    metrics: Mapping[str, float]
    seconds: Mapping[str, float]
    environment: Mapping[str, Any]
    config: Mapping[str, Any] = field(default_factory=dict)
    extras: tuple[Mapping[str, Any], ...] = ()

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary written to ``summary.json``."""
        return {
            "protocol": self.protocol,
            "dataset": self.dataset,
            "ranker": self.ranker,
            "split": self.split,
            "users": len(self.user_ids),
            "metrics": dict(self.metrics),
            "environment": dict(self.environment),
            "config": dict(self.config),
            "seconds": self.seconds.get("total", 0.0),
            "seconds_by_stage": dict(self.seconds),
        }


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
) -> EvalResult:
    """Fit ``ranker`` on the protocol's training rows and rank every split target.

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

    Returns:
        Ranks and metric means.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if limit_users is not None and limit_users < 1:
        raise ConfigError(f"limit_users={limit_users} must be >= 1, or None for all users")
    metric_objs = parse_metrics([m if isinstance(m, str) else m.name for m in metrics])
    cases: EvalCases = data.cases(split)
    if limit_users is not None:
        cases = cases.head(limit_users)
    start = time.perf_counter()
    if fit:
        ranker.fit(data.catalog, data.fit_rows(split))
        if split == "test":  # fit on validation, never on the split being scored
            ranker.tune(data)
    fitted = time.perf_counter()
    ranks = np.empty(len(cases), dtype=np.int64)
    extras: list[Mapping[str, Any]] = []
    for lo in range(0, len(cases), batch_size):
        hi = min(lo + batch_size, len(cases))
        batch = UserBatch(cases.user_ids[lo:hi], cases.histories[lo:hi], cases.ratings[lo:hi])
        scores = np.asarray(ranker.score(batch), dtype=np.float64)
        expected = (hi - lo, len(data.catalog))
        if scores.shape != expected:
            raise ConfigError(
                f"ranker {ranker.name!r} returned scores of shape {scores.shape}, "
                f"expected {expected} (users, catalog items)"
            )
        extras += _checked_extras(ranker, batch)
        ranks[lo:hi] = target_ranks(scores, cases.histories[lo:hi], cases.targets[lo:hi])
        if progress is not None:
            progress(hi, len(cases))
    done = time.perf_counter()
    values = {
        m.name: float(np.mean(m.from_ranks(ranks))) if len(ranks) else 0.0 for m in metric_objs
    }
    config = getattr(ranker, "config", None)
    config_dump = config.model_dump() if isinstance(config, BaseModel) else {}
    return EvalResult(
        protocol=data.name,
        dataset=dataset,
        ranker=ranker.name,
        split=split,
        user_ids=cases.user_ids,
        target_ids=data.catalog.item_ids[cases.targets],
        ranks=ranks,
        metrics=values,
        seconds={"fit": fitted - start, "score": done - fitted, "total": done - start},
        environment=collect_environment(seed=seed, device=ranker.device),
        config={**config_dump, **ranker.report()},
        extras=tuple(extras) if any(extras) else (),
    )


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


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in user extras, as JSON values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} in user extras is not JSON serialisable")


def write_report(result: EvalResult, out: str | Path) -> Path:
    """Write ``summary.json`` and ``users.jsonl`` (per-user target rank, plus whatever the
    ranker recorded about that user: ``EvalResult.extras``) into ``out``.

    Files are written to temporary names, then renamed, so a report is never half there.

    Returns:
        The folder.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    summary = folder / "summary.json"
    users = folder / "users.jsonl"
    tmp_users = users.with_suffix(".jsonl.tmp")
    extras = result.extras or tuple({} for _ in result.user_ids)
    if len(extras) != len(result.user_ids):
        raise ConfigError(
            f"EvalResult has {len(extras)} user extras for {len(result.user_ids)} users; "
            "extras must be empty or one per user"
        )
    with tmp_users.open("w", encoding="utf-8") as fh:
        for uid, tid, rank, extra in zip(
            result.user_ids, result.target_ids, result.ranks, extras, strict=True
        ):
            line = {
                "user": _jsonable(uid),
                "target": _jsonable(tid),
                "rank": int(rank) if rank < UNRANKED else None,
            }
            line.update({k: v for k, v in extra.items() if k not in line})
            fh.write(json.dumps(line, default=_json_default) + "\n")
    tmp_summary = summary.with_suffix(".json.tmp")
    tmp_summary.write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
    tmp_users.replace(users)
    tmp_summary.replace(summary)
    return folder
