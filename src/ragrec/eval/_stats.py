"""Statistics over evaluation runs: bootstrap confidence intervals of a mean, and paired
comparisons of two runs (per-metric deltas with a paired bootstrap interval and p-value,
and a paired t-test)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from ragrec.errors import ConfigError
from ragrec.eval._runs import FloatArray, Run
from ragrec.eval.metrics import parse_metric

logger = logging.getLogger(__name__)

__all__ = [
    "Comparison",
    "ConfidenceInterval",
    "MetricComparison",
    "bootstrap_ci",
    "compare_runs",
]

# Bootstrap resamples are drawn in blocks of about this many user indices, to bound memory.
_BOOT_BLOCK: Final[int] = 2_000_000


class ConfidenceInterval(NamedTuple):
    """A two-sided confidence interval."""

    low: float
    high: float


def bootstrap_ci(
    values: npt.ArrayLike,
    n_boot: int = 10_000,
    seed: int | np.random.Generator | None = 0,
    *,
    level: float = 0.95,
) -> ConfidenceInterval:
    """Percentile bootstrap confidence interval of a mean.

    Args:
        values: Per-user values (1-D).
        n_boot: Bootstrap resamples.
        seed: Seed or generator for the resampling.
        level: Confidence level in ``(0, 1)``.

    Returns:
        The interval; ``(v, v)`` for a single value.

    Raises:
        ConfigError: If ``values`` is empty or not 1-D, or ``n_boot`` / ``level`` is out
            of range.
    """
    arr = _values("values", values)
    boot = _boot_means(arr[None, :], _n_boot(n_boot), np.random.default_rng(seed))[0]
    return _percentile_interval(boot, _level(level))


@dataclass(frozen=True)
class MetricComparison:
    """One metric compared between two runs on their common users.

    Attributes:
        metric: Metric name (``"ndcg@10"``).
        mean_a: Mean of run A (the reference).
        mean_b: Mean of run B.
        delta: ``mean_b - mean_a``.
        relative_delta: ``delta / mean_a``; ``nan`` when ``mean_a`` is 0.
        ci: 95% (or ``level``) paired percentile bootstrap interval of ``delta``.
        p_bootstrap: Two-sided paired bootstrap p-value of ``delta`` (the per-user
            differences are centred on 0, resampled, and compared with the observed
            mean difference; add-one smoothed, so never 0).
        p_ttest: Two-sided paired t-test p-value (``scipy.stats.ttest_rel``); when every
            per-user difference is the same it is 1.0 if that difference is 0 and 0.0
            otherwise, where the t statistic is undefined.
    """

    metric: str
    mean_a: float
    mean_b: float
    delta: float
    relative_delta: float
    ci: ConfidenceInterval
    p_bootstrap: float
    p_ttest: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (``nan`` becomes ``None``)."""
        return {
            "metric": self.metric,
            "mean_a": self.mean_a,
            "mean_b": self.mean_b,
            "delta": self.delta,
            "relative_delta": _json_float(self.relative_delta),
            "ci_low": self.ci.low,
            "ci_high": self.ci.high,
            "p_bootstrap": self.p_bootstrap,
            "p_ttest": self.p_ttest,
        }


@dataclass(frozen=True)
class Comparison:
    """Run B against run A (the reference) on the users both evaluated.

    Attributes:
        name_a: Display name of run A.
        name_b: Display name of run B.
        protocol: The shared protocol.
        split: The shared split.
        n_paired: Users in both runs.
        only_a: Users only in run A (left out).
        only_b: Users only in run B (left out).
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed (``None`` when a generator or no seed was given).
        level: Confidence level of the intervals.
        metrics: One entry per metric, in the order asked.
    """

    name_a: str
    name_b: str
    protocol: str
    split: str
    n_paired: int
    only_a: int
    only_b: int
    n_boot: int
    seed: int | None
    level: float
    metrics: tuple[MetricComparison, ...]

    def __getitem__(self, metric: str) -> MetricComparison:
        """The comparison of one metric, by name (``"ndcg@10"``)."""
        name = parse_metric(metric).name
        for row in self.metrics:
            if row.metric == name:
                return row
        raise KeyError(
            f"metric {metric!r} was not compared; compared: {[r.metric for r in self.metrics]}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "a": self.name_a,
            "b": self.name_b,
            "protocol": self.protocol,
            "split": self.split,
            "n_paired": self.n_paired,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "level": self.level,
            "metrics": [m.to_dict() for m in self.metrics],
        }

    def to_markdown(self) -> str:
        """A heading line and a Markdown table, one row per metric."""
        pct = f"{self.level * 100:g}%"
        unpaired = ""
        if self.only_a or self.only_b:
            unpaired = f"; left out: {self.only_a} only in A, {self.only_b} only in B"
        lines = [
            f"**{_md(self.name_b)}** (B) vs **{_md(self.name_a)}** (A): "
            f"{self.protocol}, {self.split}, {self.n_paired} paired users{unpaired}; "
            f"{self.n_boot} bootstrap resamples, seed {self.seed}.",
            "",
            f"| metric | A | B | Δ (B-A) | Δ % | {pct} CI of Δ | p (bootstrap) | p (t-test) |",
            "|---|---:|---:|---:|---:|---|---:|---:|",
        ]
        for m in self.metrics:
            rel = "—" if math.isnan(m.relative_delta) else f"{m.relative_delta * 100:+.1f}%"
            lines.append(
                f"| {m.metric} | {m.mean_a:.4f} | {m.mean_b:.4f} | {m.delta:+.4f} | {rel} "
                f"| [{m.ci.low:+.4f}, {m.ci.high:+.4f}] | {_p(m.p_bootstrap)} "
                f"| {_p(m.p_ttest)} |"
            )
        return "\n".join(lines) + "\n"


def compare_runs(
    run_a: Run,
    run_b: Run,
    metrics: Sequence[str] = ("ndcg@10", "recall@10"),
    *,
    n_boot: int = 10_000,
    seed: int | np.random.Generator | None = 0,
    level: float = 0.95,
) -> Comparison:
    """Compare run B with run A (the reference), paired by user.

    Users present in only one run are left out, with a warning, and counted in the
    result. The same bootstrap resamples of users are used for every metric.

    Args:
        run_a: The reference run.
        run_b: The run compared with it.
        metrics: Metric names.
        n_boot: Bootstrap resamples.
        seed: Seed or generator for the bootstrap.
        level: Confidence level of the intervals, in ``(0, 1)``.

    Returns:
        Means, deltas, bootstrap intervals and p-values per metric.

    Raises:
        ConfigError: If the runs differ in protocol or split, a common user has
            different targets in the two runs, fewer than 2 users are common, or an
            argument is out of range.
    """
    from scipy import stats

    for attr in ("protocol", "split"):
        a, b = getattr(run_a, attr), getattr(run_b, attr)
        if a != b:
            raise ConfigError(
                f"cannot compare runs with different {attr}s: {run_a.name!r} "
                f"({run_a.path}) has {attr}={a!r}, {run_b.name!r} ({run_b.path}) has "
                f"{attr}={b!r}; compare runs of the same {attr}"
            )
    if run_a.dataset != run_b.dataset:
        logger.warning(
            "comparing runs on datasets %r and %r; check they are the same data",
            run_a.dataset,
            run_b.dataset,
        )
    metric_objs = [parse_metric(m) for m in _metric_names(metrics)]
    boots = _n_boot(n_boot)
    lvl = _level(level)
    idx_a, idx_b, only_a, only_b = _pair(run_a, run_b)
    if only_a or only_b:
        logger.warning(
            "comparing %r with %r on %d common users; left out %d only in %r and %d only in %r",
            run_b.name,
            run_a.name,
            len(idx_a),
            only_a,
            run_a.name,
            only_b,
            run_b.name,
        )
    vals_a = np.stack([m.from_ranks(run_a.ranks[idx_a]) for m in metric_objs])
    vals_b = np.stack([m.from_ranks(run_b.ranks[idx_b]) for m in metric_objs])
    diffs = vals_b - vals_a
    rng = np.random.default_rng(seed)
    observed = diffs.mean(axis=1)
    boot = _boot_means(diffs, boots, rng)
    # Under the null of no difference: the same resamples, shifted to mean 0.
    null = boot - observed[:, None]
    rows = []
    for j, m in enumerate(metric_objs):
        mean_a = float(vals_a[j].mean())
        mean_b = float(vals_b[j].mean())
        delta = float(observed[j])
        extreme = np.abs(null[j]) >= abs(delta) - 1e-12
        p_boot = float((extreme.sum() + 1) / (boots + 1))
        d = diffs[j]
        if np.ptp(d) == 0:
            p_t = 1.0 if d[0] == 0 else 0.0
        else:
            p_t = float(stats.ttest_rel(vals_b[j], vals_a[j]).pvalue)
        rows.append(
            MetricComparison(
                metric=m.name,
                mean_a=mean_a,
                mean_b=mean_b,
                delta=delta,
                relative_delta=delta / mean_a if mean_a != 0 else math.nan,
                ci=_percentile_interval(boot[j], lvl),
                p_bootstrap=p_boot,
                p_ttest=p_t,
            )
        )
    return Comparison(
        name_a=run_a.name,
        name_b=run_b.name,
        protocol=run_a.protocol,
        split=run_a.split,
        n_paired=len(idx_a),
        only_a=only_a,
        only_b=only_b,
        n_boot=boots,
        seed=int(seed) if isinstance(seed, int | np.integer) else None,
        level=lvl,
        metrics=tuple(rows),
    )


# --- helpers -------------------------------------------------------------------------


def _pair(run_a: Run, run_b: Run) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Row indices of the common users in each run (run A's order), and unpaired counts."""
    pos_b = {u: i for i, u in enumerate(run_b.user_ids.tolist())}
    idx_a: list[int] = []
    idx_b: list[int] = []
    for i, u in enumerate(run_a.user_ids.tolist()):
        j = pos_b.get(u)
        if j is None:
            continue
        if run_a.target_ids[i] != run_b.target_ids[j]:
            raise ConfigError(
                f"user {u!r} has target {run_a.target_ids[i]!r} in {run_a.name!r} "
                f"({run_a.path}) but {run_b.target_ids[j]!r} in {run_b.name!r} "
                f"({run_b.path}); the runs were not scored on the same cases"
            )
        idx_a.append(i)
        idx_b.append(j)
    if len(idx_a) < 2:
        raise ConfigError(
            f"runs {run_a.name!r} ({len(run_a)} users) and {run_b.name!r} "
            f"({len(run_b)} users) share {len(idx_a)} users; a paired comparison needs "
            "at least 2"
        )
    return (
        np.asarray(idx_a, dtype=np.int64),
        np.asarray(idx_b, dtype=np.int64),
        len(run_a) - len(idx_a),
        len(run_b) - len(idx_b),
    )


def _boot_means(values: FloatArray, n_boot: int, rng: np.random.Generator) -> FloatArray:
    """``(n_rows, n_boot)`` means of the rows of ``values`` over resampled columns."""
    n_rows, n = values.shape
    out = np.empty((n_rows, n_boot), dtype=np.float64)
    block = max(1, _BOOT_BLOCK // max(n, 1))
    for lo in range(0, n_boot, block):
        hi = min(lo + block, n_boot)
        idx = rng.integers(0, n, size=(hi - lo, n))
        out[:, lo:hi] = values[:, idx].mean(axis=2)
    return out


def _percentile_interval(boot: FloatArray, level: float) -> ConfidenceInterval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return ConfidenceInterval(float(low), float(high))


def _values(name: str, values: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    return arr


def _n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ConfigError(f"n_boot must be a positive integer, got {n_boot!r}; e.g. 10000")
    return int(n_boot)


def _level(level: float) -> float:
    if not 0 < float(level) < 1:
        raise ConfigError(f"level must be in (0, 1), got {level!r}; e.g. 0.95")
    return float(level)


def _metric_names(metrics: Iterable[str]) -> list[str]:
    if isinstance(metrics, str):
        raise ConfigError(f"metrics must be a list of names, got {metrics!r}; write [{metrics!r}]")
    names = list(metrics)
    if not names:
        raise ConfigError("metrics is empty; name at least one, e.g. ['ndcg@10']")
    return names


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value
