"""Reading evaluation run folders back.

A run folder is what :func:`ragrec.eval.write_report` writes: ``summary.json`` (protocol,
dataset, ranker, split, metric means, ...) and ``users.jsonl`` (one JSON object per
user with ``user``, ``target``, ``rank`` -- 1-based, or ``null`` when the target was not
ranked -- and optional ``seconds`` and other keys).

Metrics are recomputed from the per-user ranks with
:meth:`~ragrec.eval.metrics.Metric.from_ranks`, so any metric can be reported, not just
those the run stored, and confidence intervals and paired tests use the same numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ragrec.errors import ConfigError
from ragrec.eval.metrics import UNRANKED, Metric, parse_metric

__all__ = ["Run", "load_run", "per_user_metric"]

FloatArray = npt.NDArray[np.float64]

SUMMARY: Final[str] = "summary.json"
USERS: Final[str] = "users.jsonl"
_REQUIRED_SUMMARY: Final[tuple[str, ...]] = ("protocol", "split")


@dataclass(frozen=True, eq=False)
class Run:
    """One evaluation run read back from its folder. Arrays are read-only and aligned.

    Attributes:
        path: The run folder.
        summary: ``summary.json`` as read (read-only at the top level).
        user_ids: User ids, in ``users.jsonl`` order (object array of JSON scalars).
        target_ids: Each user's target item id (object array).
        ranks: Each target's 1-based rank, :data:`~ragrec.eval.metrics.UNRANKED` where
            ``users.jsonl`` has ``null``.
        seconds: Per-user seconds from ``users.jsonl`` (``nan`` for users without one),
            or ``None`` when no user has them.
    """

    path: Path
    summary: Mapping[str, Any]
    user_ids: np.ndarray
    target_ids: np.ndarray
    ranks: npt.NDArray[np.int64]
    seconds: FloatArray | None = None

    @property
    def name(self) -> str:
        """Display name: the summary's ``system``, else its ``ranker``, else the folder."""
        for key in ("system", "ranker"):
            value = self.summary.get(key)
            if isinstance(value, str) and value:
                return value
        return self.path.name

    @property
    def protocol(self) -> str:
        """Protocol name from the summary."""
        return str(self.summary["protocol"])

    @property
    def split(self) -> str:
        """Split evaluated (``"validation"`` or ``"test"``)."""
        return str(self.summary["split"])

    @property
    def dataset(self) -> str:
        """Dataset name or path (``""`` when not recorded)."""
        return str(self.summary.get("dataset", ""))

    @property
    def latency(self) -> Mapping[str, float] | None:
        """The summary's latency percentiles (``{"p50": ...}``), when recorded."""
        value = self.summary.get("latency")
        return value if isinstance(value, Mapping) and value else None

    def __len__(self) -> int:
        return len(self.user_ids)


def load_run(path: str | Path) -> Run:
    """Read a run folder written by :func:`ragrec.eval.write_report`.

    Args:
        path: The folder holding ``summary.json`` and ``users.jsonl`` (or the path of
            its ``summary.json``).

    Returns:
        The run.

    Raises:
        ConfigError: If a file is missing, is not valid JSON, lacks a required key
            (``protocol``, ``split`` in the summary; ``user``, ``target``, ``rank`` on
            each user line), repeats a user, has a bad rank, or the user count differs
            from the summary's ``users``; the message names the file and line.
    """
    folder = Path(path)
    if folder.name == SUMMARY and folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(
            f"run folder {str(folder)!r} does not exist; pass the folder an evaluation "
            f"wrote (it holds {SUMMARY} and {USERS})"
        )
    summary = _read_summary(folder / SUMMARY)
    users, targets, ranks, seconds = _read_users(folder / USERS)
    expected = summary.get("users")
    if isinstance(expected, int) and not isinstance(expected, bool) and expected != len(users):
        raise ConfigError(
            f"{folder / USERS}: has {len(users)} users but {SUMMARY} says users={expected}; "
            "the run is incomplete or the files come from different runs: re-run it"
        )
    have_seconds = not all(math.isnan(s) for s in seconds)
    return Run(
        path=folder,
        summary=MappingProxyType(summary),
        user_ids=_readonly(_object_array(users)),
        target_ids=_readonly(_object_array(targets)),
        ranks=_readonly(np.asarray(ranks, dtype=np.int64)),
        seconds=_readonly(np.asarray(seconds, dtype=np.float64)) if have_seconds else None,
    )


def per_user_metric(run: Run, metric: str | Metric) -> FloatArray:
    """Each user's value of ``metric``, from the run's per-user target ranks.

    An unranked target (``"rank": null``) is a miss at every cutoff.

    Args:
        run: The run.
        metric: A metric name such as ``"ndcg@10"``, or a metric object.

    Returns:
        float64 values aligned with ``run.user_ids``.

    Raises:
        ConfigError: If the metric name is not valid.
    """
    m = parse_metric(metric) if isinstance(metric, str) else metric
    return m.from_ranks(run.ranks)


# --- helpers -------------------------------------------------------------------------


def _read_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing; a run folder needs the {SUMMARY} and {USERS} that "
            "ragrec eval --out writes"
        )
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}; re-run the evaluation") from exc
    if not isinstance(summary, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(summary).__name__}")
    missing = [k for k in _REQUIRED_SUMMARY if not isinstance(summary.get(k), str)]
    if missing:
        raise ConfigError(
            f"{path} lacks {', '.join(map(repr, missing))} (a string each); "
            f"it has keys {sorted(summary)}"
        )
    if not isinstance(summary.get("system", summary.get("ranker", "")), str):
        raise ConfigError(f"{path}: 'system' / 'ranker' must be a string")
    return summary


def _read_users(
    path: Path,
) -> tuple[list[Any], list[Any], list[int], list[float]]:
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing; a run folder needs the {SUMMARY} and {USERS} that "
            "ragrec eval --out writes"
        )
    users: list[Any] = []
    targets: list[Any] = []
    ranks: list[int] = []
    seconds: list[float] = []
    seen: dict[Any, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise ConfigError(f"{where}: must be a JSON object, got {type(record).__name__}")
            missing = [k for k in ("user", "target", "rank") if k not in record]
            if missing:
                raise ConfigError(f"{where}: lacks {', '.join(map(repr, missing))}")
            user = record["user"]
            if not isinstance(user, int | str) or isinstance(user, bool):
                raise ConfigError(f"{where}: user must be an integer or string, got {user!r}")
            first = seen.setdefault(user, lineno)
            if first != lineno:
                raise ConfigError(f"{where}: user {user!r} repeats line {first}")
            rank = record["rank"]
            if rank is None:
                rank = UNRANKED
            elif isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ConfigError(
                    f"{where}: rank must be a 1-based integer or null (not ranked), got {rank!r}"
                )
            sec = record.get("seconds")
            if sec is None:
                sec = math.nan
            elif isinstance(sec, bool) or not isinstance(sec, int | float) or sec < 0:
                raise ConfigError(f"{where}: seconds must be a number >= 0, got {sec!r}")
            users.append(user)
            targets.append(record["target"])
            ranks.append(min(int(rank), UNRANKED))
            seconds.append(float(sec))
    return users, targets, ranks, seconds


def _object_array(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr
