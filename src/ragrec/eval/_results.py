"""What an evaluation run leaves: :class:`EvalResult`, the environment it records, and
its folder: ``summary.json`` and ``users.jsonl`` (:func:`write_report`), with the per-user
results of a run in progress appended as batches finish, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragrec._version import __version__
from ragrec.errors import ConfigError
from ragrec.eval._cases import EvalCases, Split
from ragrec.eval.metrics import UNRANKED

if TYPE_CHECKING:
    from ragrec.data import Catalog

logger = logging.getLogger(__name__)

__all__ = ["EvalResult", "collect_environment", "git_commit", "write_report"]


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


def git_commit() -> str | None:
    """The commit of the ragrec source tree this runs from (``+dirty`` when it has
    uncommitted changes); ``None`` outside a git checkout (an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


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
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "device": device,
        "seed": seed,
    }


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
        seconds: Wall time by stage (``"fit"``, ``"tune"`` (on validation), ``"score"``,
            ``"total"``).
        environment: Versions, device, seed.
        config: The ranker configuration used.
        extras: Per user (aligned with ``user_ids``), what the ranker recorded about them
            (:meth:`Ranker.user_extras`: explanations, ...); empty when it recorded nothing.
        top_ids: Per user, the ``top_k`` best item ids in rank order (``None`` pads).
        user_seconds: Per user, scoring seconds (its batch's time over the batch size).
        beyond: Beyond-accuracy metrics of the top lists (``"coverage@10"``, ...).
        rates: Shares of users that were cold start, degraded or had invalid output.
        latency: Percentiles of ``user_seconds`` (``"p50"``, ...).
        system: Display name (a grid entry's name); defaults to the ranker's.
        resumed: Users whose results were read back from an interrupted run.
        candidate_recall: Recall at :data:`CANDIDATE_CUTOFFS` (``"recall@20"``, ...),
            whatever metrics were asked for: the ceiling of a re-ranker of that many
            candidates.
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
    top_ids: tuple[list[Any], ...] = ()
    user_seconds: np.ndarray = field(default_factory=lambda: np.empty(0))
    beyond: Mapping[str, float] = field(default_factory=dict)
    rates: Mapping[str, float] = field(default_factory=dict)
    latency: Mapping[str, float] = field(default_factory=dict)
    system: str = ""
    resumed: int = 0
    candidate_recall: Mapping[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary written to ``summary.json``."""
        return {
            "system": self.system or self.ranker,
            "protocol": self.protocol,
            "dataset": self.dataset,
            "ranker": self.ranker,
            "split": self.split,
            "users": len(self.user_ids),
            "metrics": dict(self.metrics),
            "beyond": dict(self.beyond),
            "candidate_recall": dict(self.candidate_recall),
            "rates": dict(self.rates),
            "latency": dict(self.latency),
            "environment": dict(self.environment),
            "config": dict(self.config),
            "seconds": self.seconds.get("total", 0.0),
            "seconds_by_stage": dict(self.seconds),
            "resumed_users": self.resumed,
        }


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
    tops: Sequence[list[Any] | None] = result.top_ids or [None] * len(result.user_ids)
    seconds = result.user_seconds if len(result.user_seconds) else [None] * len(result.user_ids)
    with tmp_users.open("w", encoding="utf-8") as fh:
        for uid, tid, rank, extra, top, secs in zip(
            result.user_ids, result.target_ids, result.ranks, extras, tops, seconds, strict=True
        ):
            line = _user_line(uid, tid, rank, extra)
            if top is not None:
                line["top"] = top
            if secs is not None:
                line["seconds"] = float(secs)
            fh.write(json.dumps(line, default=_json_default) + "\n")
    tmp_summary = summary.with_suffix(".json.tmp")
    tmp_summary.write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
    tmp_users.replace(users)
    tmp_summary.replace(summary)
    return folder


@dataclass
class _UserResult:
    rank: int
    top: np.ndarray
    seconds: float
    extras: Mapping[str, Any]


class _Checkpoint:
    """Per-user results of a run in progress, appended as batches finish."""

    def __init__(self, folder: Path, fingerprint: dict[str, Any], *, resume: bool) -> None:
        self.folder = folder
        self.fingerprint = json.loads(json.dumps(fingerprint, default=_json_default))
        self.partial = folder / "users.partial.jsonl"
        run = folder / "run.json"
        folder.mkdir(parents=True, exist_ok=True)
        old = _read_json(run) if run.exists() else None
        other = old is not None and old != self.fingerprint
        if resume and isinstance(old, dict) and other and self.partial.exists():
            changed = sorted(k for k in self.fingerprint if old.get(k) != self.fingerprint[k])
            raise ConfigError(
                f"{folder} holds an unfinished run with other settings ({', '.join(changed)} "
                "differ); pass another --out, or --no-resume to start that folder over"
            )
        if not resume or old is None or other:  # a finished run of other settings: replaced
            for name in ("users.partial.jsonl", "users.jsonl", "summary.json"):
                (folder / name).unlink(missing_ok=True)
            tmp = run.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.fingerprint, indent=2) + "\n", encoding="utf-8")
            tmp.replace(run)

    def load(self, cases: EvalCases, catalog: Catalog) -> dict[int, _UserResult]:
        """Results already written for these cases (complete report or partial file)."""
        index = {_user_key(u): i for i, u in enumerate(cases.user_ids)}
        results: dict[int, _UserResult] = {}
        for source in (self.folder / "users.jsonl", self.partial):
            if not source.exists():
                continue
            for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
                try:
                    record = json.loads(line)
                    row = index.get(_user_key(record["user"]))
                    if row is None:
                        continue
                    top_ids = [t for t in record.get("top", []) if t is not None]
                    top = catalog.positions(np.array(top_ids, dtype=catalog.item_ids.dtype))
                    rank = record["rank"]
                    extras = {
                        k: v
                        for k, v in record.items()
                        if k not in ("user", "target", "rank", "top", "seconds")
                    }
                    results[row] = _UserResult(
                        UNRANKED if rank is None else int(rank),
                        top,
                        float(record.get("seconds", 0.0)),
                        extras,
                    )
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    # a line cut short by the interruption: that user is scored again
                    logger.warning("%s:%d is incomplete; scoring that user again", source, number)
        return results

    def append(self, cases: EvalCases, catalog: Catalog, fresh: Mapping[int, _UserResult]) -> None:
        with self.partial.open("a", encoding="utf-8") as fh:
            for row, res in fresh.items():
                record = _user_line(
                    cases.user_ids[row], catalog.item_ids[cases.targets[row]], res.rank, res.extras
                )
                record["top"] = _ids(catalog, res.top)
                record["seconds"] = res.seconds
                fh.write(json.dumps(record, default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def finished_summary(self, users: int) -> dict[str, Any] | None:
        """The summary of this folder's finished run of the same settings and ``users``
        users, or None."""
        summary = _read_json(self.folder / "summary.json")
        if (
            not isinstance(summary, dict)
            or self.partial.exists()
            or summary.get("users") != users
            or not all(k in summary for k in ("seconds_by_stage", "environment", "config"))
        ):
            return None
        return summary

    def finish(self) -> None:
        self.partial.unlink(missing_ok=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _ids(catalog: Catalog, top: np.ndarray) -> list[Any]:
    return [_jsonable(catalog.item_ids[p]) if p >= 0 else None for p in top]


def _user_key(user: Any) -> str:
    return json.dumps(_jsonable(user))


def _user_line(uid: Any, tid: Any, rank: int, extra: Mapping[str, Any]) -> dict[str, Any]:
    line: dict[str, Any] = {
        "user": _jsonable(uid),
        "target": _jsonable(tid),
        "rank": int(rank) if rank < UNRANKED else None,
    }
    line.update({k: v for k, v in extra.items() if k not in line})
    return line


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in user extras, as JSON values."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} in user extras is not JSON serialisable")
