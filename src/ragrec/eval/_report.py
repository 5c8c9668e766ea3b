"""Reading evaluation run folders back, comparing runs, and writing reports and plots.

A run folder is what :func:`ragrec.eval.write_report` writes: ``summary.json`` (protocol,
dataset, ranker, split, metric means, ...) and ``users.jsonl`` (one JSON object per
user with ``user``, ``target``, ``rank`` -- 1-based, or ``null`` when the target was not
ranked -- and optional ``seconds`` and other keys).

Metrics are recomputed from the per-user ranks with
:meth:`~ragrec.eval.metrics.Metric.from_ranks`, so any metric can be reported, not just
those the run stored, and confidence intervals and paired tests use the same numbers.

Plots are drawn on :class:`matplotlib.figure.Figure` objects, which render through the
Agg canvas without touching pyplot or the process-wide backend.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from ragrec.errors import ConfigError
from ragrec.eval.metrics import UNRANKED, Metric, parse_metric

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = [
    "Comparison",
    "ConfidenceInterval",
    "MetricComparison",
    "ReportFiles",
    "Run",
    "bootstrap_ci",
    "compare_runs",
    "load_run",
    "per_user_metric",
    "plot_bars",
    "plot_latency",
    "plot_metric_vs_k",
    "render_markdown",
    "write_markdown",
    "write_run_report",
]

FloatArray = npt.NDArray[np.float64]

SUMMARY: Final[str] = "summary.json"
USERS: Final[str] = "users.jsonl"
_REQUIRED_SUMMARY: Final[tuple[str, ...]] = ("protocol", "split")
_BASELINE_KEYS: Final[frozenset[str]] = frozenset({"name", "metrics", "source"})
# Bootstrap resamples are drawn in blocks of about this many user indices, to bound memory.
_BOOT_BLOCK: Final[int] = 2_000_000


# --- loading -------------------------------------------------------------------------


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


# --- bootstrap and comparison --------------------------------------------------------


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


# --- markdown ------------------------------------------------------------------------


def render_markdown(
    runs: Sequence[Run],
    metrics: Sequence[str] | None = None,
    baselines: Sequence[Mapping[str, Any]] | None = None,
    *,
    ci: bool = False,
    n_boot: int = 10_000,
    seed: int | None = 0,
) -> str:
    """A Markdown table, one row per run, then one per published baseline.

    Args:
        runs: The runs.
        metrics: Metric columns. Default: the metrics in the runs' summaries, in order
            of first appearance.
        baselines: Published results, not run here: dicts with ``name``, ``metrics``
            (``{"ndcg@10": 0.41}``) and optional ``source`` (a citation or URL). Their
            rows are marked "(published)" and list the sources below the table.
        ci: Add each run's 95% bootstrap interval to its metric cells.
        n_boot: Bootstrap resamples for ``ci``.

    Beyond-accuracy values a summary stores under ``beyond`` (``"coverage@10"``, ...)
    and latency percentiles under ``latency`` get columns of their own, after the
    metrics, when any run has them.
        seed: Bootstrap seed for ``ci``.

    Returns:
        The Markdown text.

    Raises:
        ConfigError: If a metric name or a baseline is malformed.
    """
    names = _table_metrics(runs, metrics)
    metric_objs = [parse_metric(n) for n in names]
    published = [_check_baseline(b, i) for i, b in enumerate(baselines or ())]
    has_latency = any(r.latency for r in runs)
    beyond = _beyond_names(runs)
    candidates = _candidate_names(runs)
    header = ["system", *names, *beyond, *[f"candidate {c}" for c in candidates]]
    header += ["users", "seconds"]
    if has_latency:
        header += ["p50 s", "p99 s"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" + "---:|" * (len(header) - 1),
    ]
    for run in runs:
        cells = [_md(run.name)]
        for m in metric_objs:
            values = m.from_ranks(run.ranks)
            if not len(values):
                cells.append("—")
                continue
            cell = f"{values.mean():.4f}"
            if ci:
                low, high = bootstrap_ci(values, n_boot, seed)
                cell += f" [{low:.4f}, {high:.4f}]"
            cells.append(cell)
        stored = run.summary.get("beyond")
        stored = stored if isinstance(stored, Mapping) else {}
        cells += [_fmt_value(stored.get(b)) for b in beyond]
        recall = run.summary.get("candidate_recall")
        recall = recall if isinstance(recall, Mapping) else {}
        cells += [_fmt_value(recall.get(c)) for c in candidates]
        seconds = run.summary.get("seconds")
        cells += [str(len(run)), f"{seconds:.1f}" if isinstance(seconds, int | float) else "—"]
        if has_latency:
            lat = run.latency or {}
            cells += [_fmt_seconds(lat.get("p50")), _fmt_seconds(lat.get("p99"))]
        lines.append("| " + " | ".join(cells) + " |")
    sources = []
    for i, base in enumerate(published, start=1):
        reported = {parse_metric(k).name: v for k, v in base["metrics"].items()}
        mark = f"[^{i}]" if base.get("source") else ""
        cells = [f"{_md(base['name'])} (published){mark}"]
        cells += [f"{reported[n]:.4f}" if n in reported else "—" for n in names]
        cells += ["—"] * (len(beyond) + len(candidates)) + ["—", "—"]
        cells += ["—", "—"] if has_latency else []
        lines.append("| " + " | ".join(cells) + " |")
        if base.get("source"):
            sources.append(f"[^{i}]: {base['source']}")
    text = "\n".join(lines) + "\n"
    if published:
        text += "\nRows marked (published) are reported results, not run here.\n"
    if sources:
        text += "\n" + "\n".join(sources) + "\n"
    return text


def write_markdown(
    runs: Sequence[Run],
    path: str | Path,
    metrics: Sequence[str] | None = None,
    baselines: Sequence[Mapping[str, Any]] | None = None,
    *,
    ci: bool = False,
    n_boot: int = 10_000,
    seed: int | None = 0,
) -> Path:
    """Write :func:`render_markdown`'s table to ``path``; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_markdown(runs, metrics, baselines, ci=ci, n_boot=n_boot, seed=seed)
    out.write_text(text, encoding="utf-8")
    return out


# --- plots ---------------------------------------------------------------------------


def plot_metric_vs_k(
    runs: Sequence[Run],
    path: str | Path,
    *,
    metric: str = "ndcg",
    ks: Sequence[int] = (1, 5, 10, 20),
) -> Path:
    """Line plot of a metric against its cutoff, one line per run.

    Args:
        runs: The runs.
        path: PNG to write.
        metric: Metric name without a cutoff (``"ndcg"``, ``"recall"``, ...).
        ks: Cutoffs, the x axis.

    Returns:
        The written path.

    Raises:
        ConfigError: If ``metric`` carries a cutoff or is unknown, or ``ks`` is empty.
    """
    if "@" in metric:
        raise ConfigError(
            f"metric {metric!r} must be a name without a cutoff (the cutoffs come from ks); "
            f"write metric={metric.partition('@')[0]!r}"
        )
    cutoffs = sorted({int(k) for k in ks})
    if not cutoffs:
        raise ConfigError("ks is empty; give cutoffs such as ks=(1, 5, 10, 20)")
    metric_objs = [parse_metric(f"{metric}@{k}") for k in cutoffs]
    fig = _figure()
    ax = fig.subplots()
    for run in runs:
        ys = [float(m.from_ranks(run.ranks).mean()) if len(run) else math.nan for m in metric_objs]
        ax.plot(cutoffs, ys, marker="o", label=run.name)
    ax.set_xlabel("k")
    ax.set_ylabel(f"{metric}@k")
    ax.set_xticks(cutoffs)
    ax.grid(alpha=0.3)
    if runs:
        ax.legend()
    return _save(fig, path)


def plot_bars(
    runs: Sequence[Run],
    path: str | Path,
    *,
    metric: str = "ndcg@10",
    n_boot: int = 10_000,
    seed: int | None = 0,
) -> Path:
    """Bar per run with its mean ``metric`` and a 95% bootstrap interval as error bar.

    Returns:
        The written path.
    """
    m = parse_metric(metric)
    means, lows, highs = [], [], []
    for run in runs:
        values = m.from_ranks(run.ranks)
        mean = float(values.mean()) if len(values) else math.nan
        low, high = bootstrap_ci(values, n_boot, seed) if len(values) else (math.nan, math.nan)
        means.append(mean)
        lows.append(max(mean - low, 0.0))
        highs.append(max(high - mean, 0.0))
    fig = _figure()
    ax = fig.subplots()
    x = np.arange(len(runs))
    ax.bar(x, means, yerr=[lows, highs], capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(x, [r.name for r in runs], rotation=20, ha="right")
    ax.set_ylabel(m.name)
    ax.set_title(f"{m.name} (95% bootstrap CI)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_latency(runs: Sequence[Run], path: str | Path, *, bins: int = 30) -> Path | None:
    """Histogram of per-user seconds, one per run that recorded them.

    Returns:
        The written path, or ``None`` (and nothing written) when no run has per-user
        seconds.
    """
    timed = [r for r in runs if r.seconds is not None]
    if not timed:
        return None
    series = [(r.name, r.seconds[~np.isnan(r.seconds)]) for r in timed if r.seconds is not None]
    fig = _figure()
    ax = fig.subplots()
    for name, seconds in series:
        ax.hist(seconds, bins=bins, alpha=0.5, label=f"{name} (n={len(seconds)})")
    ax.set_xlabel("seconds per user")
    ax.set_ylabel("users")
    ax.legend()
    return _save(fig, path)


# --- full report ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    """Files :func:`write_run_report` wrote.

    Attributes:
        markdown: ``report.md``.
        metric_vs_k: Metric-against-cutoff plot.
        bars: Bar plot with bootstrap intervals.
        latency: Latency histogram, ``None`` when no run has per-user seconds.
        comparisons: Each run compared with the reference run (empty without one).
    """

    markdown: Path
    metric_vs_k: Path
    bars: Path
    latency: Path | None
    comparisons: tuple[Comparison, ...] = ()


def write_run_report(
    runs: Sequence[Run],
    out_dir: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    baselines: Sequence[Mapping[str, Any]] | None = None,
    reference: int | str | None = 0,
    compare: Sequence[str] = ("ndcg@10", "recall@10"),
    plot_metric: str = "ndcg@10",
    ks: Sequence[int] = (1, 5, 10, 20),
    n_boot: int = 10_000,
    seed: int | None = 0,
) -> ReportFiles:
    """Write ``report.md`` and three PNGs (metric vs k, bars, latency) into ``out_dir``.

    Args:
        runs: The runs, at least one.
        out_dir: Output folder (created).
        metrics: Table columns (default: the runs' summary metrics).
        baselines: Published rows for the table (see :func:`render_markdown`).
        reference: The run the others are compared with, by index or name; ``None``
            for no comparisons. Runs that cannot be compared with it (another protocol
            or split) are noted in the report instead.
        compare: Metrics of the comparisons.
        plot_metric: Metric of the bar plot; its name (without cutoff) is the one
            plotted against ``ks``.
        ks: Cutoffs of the metric-vs-k plot.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.

    Returns:
        The paths written and the comparisons.

    Raises:
        ConfigError: If ``runs`` is empty or ``reference`` names no run.
    """
    if not runs:
        raise ConfigError("runs is empty; pass at least one run (load_run(folder))")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref = _reference(runs, reference)
    vs_k = plot_metric_vs_k(
        runs, out / "metric_vs_k.png", metric=parse_metric(plot_metric).key, ks=ks
    )
    bars = plot_bars(runs, out / "bars.png", metric=plot_metric, n_boot=n_boot, seed=seed)
    latency = plot_latency(runs, out / "latency.png")
    table = render_markdown(runs, metrics, baselines, n_boot=n_boot, seed=seed)
    parts = ["# Evaluation report", "", _describe(runs), "", table]
    comparisons: list[Comparison] = []
    if ref is not None and len(runs) > 1:
        parts += [f"## Compared with {_md(runs[ref].name)}", ""]
        for i, run in enumerate(runs):
            if i == ref:
                continue
            try:
                comp = compare_runs(runs[ref], run, compare, n_boot=n_boot, seed=seed)
            except ConfigError as exc:
                parts += [f"{_md(run.name)}: not compared: {exc}", ""]
                continue
            comparisons.append(comp)
            parts += [comp.to_markdown()]
    parts += ["## Plots", "", f"![{plot_metric} by k]({vs_k.name})", "", f"![bars]({bars.name})"]
    if latency is not None:
        parts += ["", f"![latency]({latency.name})"]
    markdown = out / "report.md"
    markdown.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return ReportFiles(
        markdown=markdown,
        metric_vs_k=vs_k,
        bars=bars,
        latency=latency,
        comparisons=tuple(comparisons),
    )


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


def _table_metrics(runs: Sequence[Run], metrics: Sequence[str] | None) -> list[str]:
    if metrics is not None:
        return [parse_metric(m).name for m in _metric_names(metrics)]
    names: dict[str, None] = {}
    for run in runs:
        stored = run.summary.get("metrics")
        if isinstance(stored, Mapping):
            names.update(dict.fromkeys(parse_metric(str(k)).name for k in stored))
    return list(names) or ["ndcg@10", "recall@10"]


def _candidate_names(runs: Sequence[Run]) -> list[str]:
    names: dict[str, None] = {}
    for run in runs:
        stored = run.summary.get("candidate_recall")
        if isinstance(stored, Mapping):
            names.update(dict.fromkeys(str(k) for k in stored))
    return list(names)


def _beyond_names(runs: Sequence[Run]) -> list[str]:
    names: dict[str, None] = {}
    for run in runs:
        stored = run.summary.get("beyond")
        if isinstance(stored, Mapping):
            names.update(dict.fromkeys(str(k) for k in stored))
    return list(names)


def _check_baseline(base: Mapping[str, Any], i: int) -> Mapping[str, Any]:
    if not isinstance(base, Mapping):
        raise ConfigError(f"baselines[{i}] must be a dict with name, metrics and source")
    extra = set(base) - _BASELINE_KEYS
    if extra:
        raise ConfigError(
            f"baselines[{i}] has unknown key(s) {sorted(extra)}; allowed: {sorted(_BASELINE_KEYS)}"
        )
    if not isinstance(base.get("name"), str) or not isinstance(base.get("metrics"), Mapping):
        raise ConfigError(
            f"baselines[{i}] needs 'name' (a string) and 'metrics' (a dict such as "
            "{'ndcg@10': 0.41}), got " + repr(dict(base))
        )
    for key, value in base["metrics"].items():
        parse_metric(str(key))
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"baselines[{i}] metric {key!r} must be a number, got {value!r}")
    return base


def _reference(runs: Sequence[Run], reference: int | str | None) -> int | None:
    if reference is None:
        return None
    if isinstance(reference, str):
        names = [r.name for r in runs]
        if reference not in names:
            raise ConfigError(f"reference {reference!r} names no run; runs: {names}")
        return names.index(reference)
    if not -len(runs) <= reference < len(runs):
        raise ConfigError(f"reference={reference} is out of range for {len(runs)} runs")
    return reference % len(runs)


def _describe(runs: Sequence[Run]) -> str:
    lines = []
    for run in runs:
        env = run.summary.get("environment")
        device = env.get("device") if isinstance(env, Mapping) else None
        bits = [run.protocol, run.split]
        if run.dataset:
            bits.insert(0, run.dataset)
        if device:
            bits.append(f"device {device}")
        lines.append(f"- **{_md(run.name)}**: {', '.join(bits)} ({run.path})")
    return "\n".join(lines)


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(6.4, 4.2), layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _fmt_seconds(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "—"


def _fmt_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "—"
    return f"{value:.4f}"


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value
