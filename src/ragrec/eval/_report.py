"""Writing reports of evaluation runs: a Markdown table of runs (and published
baselines), plots, and the full report of a run folder with its comparisons.

Plots are drawn on :class:`matplotlib.figure.Figure` objects, which render through the
Agg canvas without touching pyplot or the process-wide backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ragrec.errors import ConfigError
from ragrec.eval._runs import Run
from ragrec.eval._stats import Comparison, _md, _metric_names, bootstrap_ci, compare_runs
from ragrec.eval.metrics import parse_metric

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ReportFiles",
    "plot_bars",
    "plot_latency",
    "plot_metric_vs_k",
    "render_markdown",
    "write_markdown",
    "write_run_report",
]

_BASELINE_KEYS: Final[frozenset[str]] = frozenset({"name", "metrics", "source"})


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


def _fmt_seconds(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "—"


def _fmt_value(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "—"
    return f"{value:.4f}"
