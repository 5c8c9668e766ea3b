"""Tests for ragrec.eval._runs, _stats and _report: loading run folders, comparisons,
tables and plots."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from ragrec.errors import ConfigError
from ragrec.eval import Run, compare_runs, load_run, write_run_report
from ragrec.eval._report import (
    plot_bars,
    plot_latency,
    plot_metric_vs_k,
    render_markdown,
    write_markdown,
)
from ragrec.eval._runs import per_user_metric
from ragrec.eval._stats import bootstrap_ci
from ragrec.eval.metrics import UNRANKED, parse_metric

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_BOOT = 2000


def write_run(
    folder: Path,
    ranks: Sequence[int | None],
    *,
    users: Sequence[Any] | None = None,
    targets: Sequence[Any] | None = None,
    seconds: Sequence[float] | None = None,
    **summary: Any,
) -> Path:
    """A run folder as the runner writes it, with the given per-user ranks."""
    users = list(range(len(ranks))) if users is None else list(users)
    targets = [100 + int(u) for u in users] if targets is None else list(targets)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (u, t, r) in enumerate(zip(users, targets, ranks, strict=True)):
        line: dict[str, Any] = {"user": u, "target": t, "rank": r}
        if seconds is not None:
            line["seconds"] = seconds[i]
        lines.append(json.dumps(line))
    (folder / "users.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ranks_arr = np.array([UNRANKED if r is None else r for r in ranks], dtype=np.int64)
    full = {
        "protocol": "loo",
        "dataset": "ml-100k",
        "ranker": folder.name,
        "split": "test",
        "users": len(users),
        "metrics": {
            name: float(parse_metric(name).from_ranks(ranks_arr).mean())
            for name in ("recall@10", "ndcg@10")
        },
        "environment": {"device": "cpu", "seed": 0},
        "config": {},
        "seconds": 1.5,
        "seconds_by_stage": {"fit": 0.5, "score": 1.0, "total": 1.5},
    }
    full.update(summary)
    (folder / "summary.json").write_text(json.dumps(full), encoding="utf-8")
    return folder


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


# --- load_run ------------------------------------------------------------------------


def test_load_run_reads_ranks_and_extras(tmp_path: Path) -> None:
    folder = write_run(
        tmp_path / "pop",
        [1, None, 12],
        users=[7, "u8", 9],
        targets=[107, "i8", 109],
        seconds=[0.1, 0.2, 0.3],
    )
    run = load_run(folder)
    assert run.name == "pop"
    assert run.protocol == "loo"
    assert run.split == "test"
    assert run.dataset == "ml-100k"
    assert run.user_ids.tolist() == [7, "u8", 9]
    assert run.target_ids.tolist() == [107, "i8", 109]
    assert run.ranks.tolist() == [1, UNRANKED, 12]
    assert run.seconds is not None
    np.testing.assert_allclose(run.seconds, [0.1, 0.2, 0.3])
    assert run.latency is None
    assert len(run) == 3
    assert not run.ranks.flags.writeable
    assert load_run(folder / "summary.json").ranks.tolist() == run.ranks.tolist()


def test_system_name_and_latency(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "r", [1, 2], system="RAG (ours)", latency={"p50": 0.2})
    run = load_run(folder)
    assert run.name == "RAG (ours)"
    assert run.latency == {"p50": 0.2}
    assert run.seconds is None


def test_per_user_metric_treats_null_as_miss(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", [1, 3, None, 11]))
    np.testing.assert_allclose(per_user_metric(run, "ndcg@10"), [1, 0.5, 0, 0])
    np.testing.assert_allclose(per_user_metric(run, "mrr"), [1, 1 / 3, 0, 1 / 11])
    np.testing.assert_allclose(per_user_metric(run, parse_metric("hit@3")), [1, 1, 0, 0])
    with pytest.raises(ConfigError, match="ndgc"):
        per_user_metric(run, "ndgc@10")


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    folder = write_run(tmp_path / "r", [1])
    (folder / "users.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"users\.jsonl is missing"):
        load_run(folder)
    (folder / "summary.json").unlink()
    with pytest.raises(ConfigError, match=r"summary\.json is missing"):
        load_run(folder)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"protocol": "loo"}', "lacks 'split'"),
    ],
)
def test_bad_summary(tmp_path: Path, text: str, match: str) -> None:
    folder = write_run(tmp_path / "r", [1])
    (folder / "summary.json").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match) as info:
        load_run(folder)
    assert "summary.json" in str(info.value)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{oops", "line 2: not valid JSON"),
        ("[1]", "line 2: must be a JSON object"),
        ('{"user": 5, "rank": 1}', "line 2: lacks 'target'"),
        ('{"user": 0, "target": 1, "rank": 2}', "line 2: user 0 repeats line 1"),
        ('{"user": 5, "target": 1, "rank": 0}', "line 2: rank must be"),
        ('{"user": 5, "target": 1, "rank": 2.5}', "line 2: rank must be"),
        ('{"user": 5, "target": 1, "rank": true}', "line 2: rank must be"),
        ('{"user": [5], "target": 1, "rank": 1}', "line 2: user must be"),
        ('{"user": 5, "target": 1, "rank": 1, "seconds": "x"}', "line 2: seconds"),
    ],
)
def test_bad_users_line(tmp_path: Path, line: str, match: str) -> None:
    folder = write_run(tmp_path / "r", [1])
    with (folder / "users.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    with pytest.raises(ConfigError, match=match) as info:
        load_run(folder)
    assert "users.jsonl" in str(info.value)


def test_user_count_must_match_summary(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "r", [1, 2], users=[1, 2])
    summary = json.loads((folder / "summary.json").read_text())
    summary["users"] = 5
    (folder / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"has 2 users but summary\.json says users=5"):
        load_run(folder)


# --- bootstrap_ci --------------------------------------------------------------------


def test_bootstrap_ci(rng: np.random.Generator) -> None:
    values = rng.random(400)
    low, high = bootstrap_ci(values, N_BOOT, seed=0)
    assert low < values.mean() < high
    se = values.std(ddof=1) / math.sqrt(len(values))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_ci(values, N_BOOT, seed=0) == (low, high)  # seeded
    assert bootstrap_ci([0.3], 50, seed=1) == (0.3, 0.3)
    with pytest.raises(ConfigError, match="non-empty"):
        bootstrap_ci([], 10)
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_ci([1.0], 0)


# --- compare_runs --------------------------------------------------------------------


def test_identical_runs(tmp_path: Path, rng: np.random.Generator) -> None:
    ranks = rng.integers(1, 30, size=50).tolist()
    a = load_run(write_run(tmp_path / "a", ranks))
    b = load_run(write_run(tmp_path / "b", ranks))
    comp = compare_runs(a, b, ("ndcg@10", "recall@10", "mrr"), n_boot=N_BOOT)
    assert [m.metric for m in comp.metrics] == ["ndcg@10", "recall@10", "mrr"]
    for m in comp.metrics:
        assert m.delta == 0.0
        assert m.relative_delta == 0.0
        assert m.ci == (0.0, 0.0)
        assert m.p_bootstrap == 1.0
        assert m.p_ttest == 1.0
    assert comp.n_paired == 50
    assert (comp.only_a, comp.only_b) == (0, 0)


def test_better_on_every_user(tmp_path: Path, rng: np.random.Generator) -> None:
    worse = rng.integers(2, 10, size=40)
    a = load_run(write_run(tmp_path / "a", worse.tolist()))
    b = load_run(write_run(tmp_path / "b", (worse - 1).tolist()))
    comp = compare_runs(a, b, n_boot=N_BOOT)
    ndcg = comp["ndcg@10"]
    assert ndcg.delta > 0
    assert ndcg.ci.low > 0
    assert ndcg.p_bootstrap < 0.05
    assert ndcg.p_ttest < 0.05
    recall = comp["recall@10"]  # both hit every target: no difference
    assert (recall.delta, recall.p_bootstrap, recall.p_ttest) == (0.0, 1.0, 1.0)


def test_constant_nonzero_difference_has_t_p_zero(tmp_path: Path) -> None:
    a = load_run(write_run(tmp_path / "a", [None] * 5))
    b = load_run(write_run(tmp_path / "b", [1] * 5))
    m = compare_runs(a, b, ["hit@1"], n_boot=200)["hit@1"]
    assert (m.mean_a, m.mean_b, m.delta) == (0.0, 1.0, 1.0)
    assert math.isnan(m.relative_delta)
    assert m.p_ttest == 0.0
    assert m.p_bootstrap == pytest.approx(1 / 201)  # no resample reaches it: add-one floor
    assert m.to_dict()["relative_delta"] is None


def test_matches_direct_computation(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 80
    ranks_a = rng.integers(1, 25, size=n)
    ranks_b = np.maximum(ranks_a + rng.integers(-6, 5, size=n), 1)
    a = load_run(write_run(tmp_path / "a", ranks_a.tolist()))
    b = load_run(write_run(tmp_path / "b", ranks_b.tolist()))
    comp = compare_runs(a, b, ["ndcg@10", "mrr@5"], n_boot=N_BOOT, seed=3)
    for name in ("ndcg@10", "mrr@5"):
        metric = parse_metric(name)
        va, vb = metric.from_ranks(ranks_a), metric.from_ranks(ranks_b)
        m = comp[name]
        assert m.mean_a == pytest.approx(va.mean())
        assert m.mean_b == pytest.approx(vb.mean())
        assert m.delta == pytest.approx(vb.mean() - va.mean())
        assert m.relative_delta == pytest.approx((vb.mean() - va.mean()) / va.mean())
        assert m.p_ttest == pytest.approx(stats.ttest_rel(vb, va).pvalue)
        assert m.ci.low <= m.delta <= m.ci.high
        # the bootstrap p-value agrees roughly with the t-test on this many users
        assert m.p_bootstrap == pytest.approx(m.p_ttest, abs=0.08)
    again = compare_runs(a, b, ["ndcg@10", "mrr@5"], n_boot=N_BOOT, seed=3)
    assert again == comp  # seeded
    # swapping the runs flips the delta and the interval, keeps the p-values
    swapped = compare_runs(b, a, ["ndcg@10"], n_boot=N_BOOT, seed=3)["ndcg@10"]
    assert swapped.delta == pytest.approx(-comp["ndcg@10"].delta)
    assert swapped.p_ttest == pytest.approx(comp["ndcg@10"].p_ttest)


def test_pairs_by_user_id_and_reports_unpaired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = load_run(write_run(tmp_path / "a", [1, 2, 3, 4], users=[1, 2, 3, 4]))
    b = load_run(write_run(tmp_path / "b", [None, 1, 2, 1, 1], users=[9, 4, 3, 2, 8]))
    with caplog.at_level(logging.WARNING, logger="ragrec.eval._stats"):
        comp = compare_runs(a, b, ["mrr"], n_boot=500)
    assert (comp.n_paired, comp.only_a, comp.only_b) == (3, 1, 2)
    assert "left out 1 only in 'a' and 2 only in 'b'" in caplog.text
    m = comp["mrr"]
    assert m.mean_a == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)  # users 2, 3, 4
    assert m.mean_b == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert "1 only in A, 2 only in B" in comp.to_markdown()


def test_mismatched_protocol_split_and_targets(tmp_path: Path) -> None:
    a = load_run(write_run(tmp_path / "a", [1, 2, 3]))
    other = load_run(write_run(tmp_path / "b", [1, 2, 3], protocol="llamarec"))
    with pytest.raises(ConfigError, match=r"different protocols.*'loo'.*'llamarec'"):
        compare_runs(a, other)
    val = load_run(write_run(tmp_path / "c", [1, 2, 3], split="validation"))
    with pytest.raises(ConfigError, match="different splits"):
        compare_runs(a, val)
    moved = load_run(write_run(tmp_path / "d", [1, 2, 3], targets=[100, 101, 555]))
    with pytest.raises(ConfigError, match=r"user 2 has target 102 .* but 555"):
        compare_runs(a, moved)
    few = load_run(write_run(tmp_path / "e", [1, 2], users=[2, 50]))
    with pytest.raises(ConfigError, match=r"share 1 users.*at least 2"):
        compare_runs(a, few)


def test_comparison_outputs(tmp_path: Path) -> None:
    a = load_run(write_run(tmp_path / "a", [1, 5, 20, None]))
    b = load_run(write_run(tmp_path / "b", [1, 2, 3, 4]))
    comp = compare_runs(a, b, n_boot=300)
    data = comp.to_dict()
    json.dumps(data)  # JSON-ready
    assert data["a"] == "a"
    assert data["b"] == "b"
    assert data["n_paired"] == 4
    assert [m["metric"] for m in data["metrics"]] == ["ndcg@10", "recall@10"]
    assert set(data["metrics"][0]) >= {"delta", "ci_low", "ci_high", "p_bootstrap", "p_ttest"}
    md = comp.to_markdown()
    assert "**b** (B) vs **a** (A)" in md
    assert "| ndcg@10 |" in md
    assert "95% CI" in md
    with pytest.raises(KeyError, match="mrr"):
        comp["mrr"]


# --- markdown ------------------------------------------------------------------------


def test_markdown_table(tmp_path: Path) -> None:
    runs = [
        load_run(write_run(tmp_path / "pop", [1, 2, None, 40])),
        load_run(write_run(tmp_path / "rag", [1, 1, 3, 2], system="RAG|LLM")),
    ]
    baselines = [
        {"name": "LlamaRec", "metrics": {"NDCG@10": 0.5123456}, "source": "Yue et al. 2023"},
        {"name": "SASRec", "metrics": {"recall@10": 0.6}},
    ]
    text = render_markdown(runs, baselines=baselines)
    lines = text.splitlines()
    assert lines[0] == "| system | recall@10 | ndcg@10 | users | seconds |"
    assert lines[2] == "| pop | 0.5000 | 0.4077 | 4 | 1.5 |"  # (1 + 1/log2(3)) / 4
    assert lines[3].startswith("| RAG\\|LLM | 1.0000 |")
    assert lines[4] == "| LlamaRec (published)[^1] | — | 0.5123 | — | — |"
    assert lines[5] == "| SASRec (published) | 0.6000 | — | — | — |"
    assert "not run here" in text
    assert "[^1]: Yue et al. 2023" in text
    with_ci = render_markdown(runs, ["mrr"], ci=True, n_boot=200)
    assert "| system | mrr | users | seconds |" in with_ci
    assert "[" in with_ci.splitlines()[2]
    path = write_markdown(runs, tmp_path / "out" / "table.md", ["ndcg@10"])
    assert path.read_text(encoding="utf-8").startswith("| system | ndcg@10 |")


def test_markdown_latency_columns(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", [1], latency={"p50": 0.25, "p90": 1, "p99": 2.5}))
    plain = load_run(write_run(tmp_path / "s", [2]))
    lines = render_markdown([run, plain], ["hit@1"]).splitlines()
    assert lines[0] == "| system | hit@1 | users | seconds | p50 s | p99 s |"
    assert lines[2] == "| r | 1.0000 | 1 | 1.5 | 0.250 | 2.500 |"
    assert lines[3] == "| s | 0.0000 | 1 | 1.5 | — | — |"


def test_markdown_beyond_columns(tmp_path: Path) -> None:
    run = load_run(
        write_run(tmp_path / "r", [1], beyond={"coverage@10": 0.123456, "novelty@10": None})
    )
    plain = load_run(write_run(tmp_path / "s", [2]))
    text = render_markdown([run, plain], ["hit@1"], [{"name": "P", "metrics": {"hit@1": 0.5}}])
    lines = text.splitlines()
    assert lines[0] == "| system | hit@1 | coverage@10 | novelty@10 | users | seconds |"
    assert lines[2] == "| r | 1.0000 | 0.1235 | — | 1 | 1.5 |"
    assert lines[3] == "| s | 0.0000 | — | — | 1 | 1.5 |"
    assert lines[4] == "| P (published) | 0.5000 | — | — | — | — |"


@pytest.mark.parametrize(
    ("baseline", "match"),
    [
        ({"name": "x", "metrics": {}, "url": "y"}, "unknown key"),
        ({"metrics": {}}, "needs 'name'"),
        ({"name": "x", "metrics": {"ndgc@10": 0.1}}, "ndgc"),
        ({"name": "x", "metrics": {"ndcg@10": "high"}}, "must be a number"),
    ],
)
def test_bad_baselines(tmp_path: Path, baseline: Mapping[str, Any], match: str) -> None:
    run = load_run(write_run(tmp_path / "r", [1]))
    with pytest.raises(ConfigError, match=match):
        render_markdown([run], baselines=[baseline])


# --- plots ---------------------------------------------------------------------------


def _runs(tmp_path: Path, rng: np.random.Generator, n: int = 2) -> list[Run]:
    return [
        load_run(
            write_run(
                tmp_path / f"sys{i}",
                [*rng.integers(1, 30, size=20).tolist(), None],
                seconds=rng.random(21).tolist() if i == 0 else None,
            )
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("n_runs", [1, 3])
def test_plots(tmp_path: Path, rng: np.random.Generator, n_runs: int) -> None:
    runs = _runs(tmp_path, rng, n_runs)
    out = tmp_path / "plots"
    assert is_png(plot_metric_vs_k(runs, out / "k.png", metric="recall", ks=(1, 5, 10)))
    assert is_png(plot_bars(runs, out / "bars.png", metric="mrr@10", n_boot=200))
    latency = plot_latency(runs, out / "lat.png")
    assert latency is not None
    assert is_png(latency)


def test_plot_latency_without_seconds(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", [1, 2]))
    assert plot_latency([run], tmp_path / "lat.png") is None
    assert not (tmp_path / "lat.png").exists()


def test_plot_metric_vs_k_rejects_cutoff(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", [1, 2]))
    with pytest.raises(ConfigError, match="metric='ndcg'"):
        plot_metric_vs_k([run], tmp_path / "k.png", metric="ndcg@10")


# --- full report ---------------------------------------------------------------------


def test_write_run_report(tmp_path: Path, rng: np.random.Generator) -> None:
    runs = _runs(tmp_path, rng, 2)
    other = load_run(write_run(tmp_path / "val", [1, 2, 3], split="validation"))
    files = write_run_report(
        [*runs, other],
        tmp_path / "report",
        baselines=[{"name": "Paper", "metrics": {"ndcg@10": 0.3}, "source": "ref"}],
        n_boot=300,
    )
    text = files.markdown.read_text(encoding="utf-8")
    assert files.markdown.name == "report.md"
    assert "| system | recall@10 | ndcg@10 | users | seconds |" in text
    assert "Paper (published)" in text
    assert "## Compared with sys0" in text
    assert "**sys1** (B) vs **sys0** (A)" in text
    assert "val: not compared: cannot compare runs with different splits" in text
    assert len(files.comparisons) == 1
    for png in (files.metric_vs_k, files.bars, files.latency):
        assert png is not None
        assert is_png(png)
        assert f"]({png.name})" in text


def test_write_run_report_single_run_without_seconds(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "only", [1, 3, None]))
    files = write_run_report([run], tmp_path / "rep", reference=None, n_boot=100)
    assert files.latency is None
    assert files.comparisons == ()
    assert is_png(files.bars)
    assert is_png(files.metric_vs_k)
    assert "Compared with" not in files.markdown.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="names no run"):
        write_run_report([run], tmp_path / "rep2", reference="nope")
    with pytest.raises(ConfigError, match="runs is empty"):
        write_run_report([], tmp_path / "rep3")
