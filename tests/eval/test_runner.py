"""Tests for ragrec.eval._runner and _results: target ranks, evaluate and the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ragrec._version import __version__
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval import (
    DEFAULT_METRICS,
    EvalResult,
    PopularityRanker,
    ProtocolData,
    Ranker,
    UserBatch,
    evaluate,
    make_ranker,
    target_ranks,
    write_report,
)
from ragrec.eval.metrics import UNRANKED

I64 = np.int64


def _h(*positions: int) -> np.ndarray:
    return np.array(positions, dtype=I64)


class TestTargetRanks:
    SCORES = np.array([[0.5, 0.9, 0.1, 0.9, 0.3]])

    @pytest.mark.parametrize(
        ("history", "target", "rank"),
        [
            ((), 1, 1),  # best score; ties with item 3, which comes later
            ((), 3, 2),  # tie with item 1, which comes first in the catalog
            ((1,), 3, 1),  # the tying item is history, so not ranked
            ((), 4, 4),  # 0.9, 0.9, 0.5 above it
            ((1, 3), 4, 2),  # only 0.5 above it
            ((0, 1, 3, 4), 2, 1),  # everything else is history
            ((), 2, 5),  # last
            ((2,), 2, UNRANKED),  # target in history: a miss at every cutoff
        ],
    )
    def test_hand_computed(self, history: tuple[int, ...], target: int, rank: int) -> None:
        ranks = target_ranks(self.SCORES, [_h(*history)], np.array([target]))
        assert ranks.dtype == np.int64
        assert ranks.tolist() == [rank]

    def test_several_users(self) -> None:
        scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
        histories = [_h(0), _h(), _h(0, 1)]
        ranks = target_ranks(scores, histories, np.array([2, 0, 2]))
        assert ranks.tolist() == [2, 3, 1]

    def test_inputs_are_not_modified(self) -> None:
        scores = np.array([[0.5, 0.9, 0.1], [0.2, 0.4, 0.6]])
        histories = [_h(1), _h(0, 2)]
        targets = np.array([0, 1])
        copies = scores.copy(), [h.copy() for h in histories], targets.copy()
        scores.flags.writeable = False  # a read-only input must work too
        target_ranks(scores, histories, targets)
        np.testing.assert_array_equal(scores, copies[0])
        for h, c in zip(histories, copies[1], strict=True):
            np.testing.assert_array_equal(h, c)
        np.testing.assert_array_equal(targets, copies[2])

    def test_nan_scores(self) -> None:
        scores = np.array([[0.5, np.nan, 0.1]])
        with pytest.raises(ConfigError, match="NaN"):
            target_ranks(scores, [_h()], np.array([0]))

    @settings(max_examples=200, deadline=None)
    @given(data=st.data())
    def test_matches_a_stable_descending_argsort(self, data: st.DataObject) -> None:
        n_users = data.draw(st.integers(1, 4))
        n_items = data.draw(st.integers(1, 12))
        # few distinct values, so ties are common
        values = st.sampled_from([-2.5, -1.0, 0.0, 0.25, 1.0, 3.0]) | st.floats(
            -1e6, 1e6, allow_nan=False
        )
        scores = data.draw(hnp.arrays(np.float64, (n_users, n_items), elements=values))
        targets = np.array([data.draw(st.integers(0, n_items - 1)) for _ in range(n_users)])
        histories = [
            np.array(
                data.draw(
                    st.lists(st.integers(0, n_items - 1).filter(lambda i, t=t: i != t), max_size=6)
                ),
                dtype=I64,
            )
            for t in targets
        ]
        ranks = target_ranks(scores, histories, targets)
        for row in range(n_users):
            kept = np.setdiff1d(np.arange(n_items), histories[row])
            order = kept[np.argsort(-scores[row, kept], kind="stable")]
            assert ranks[row] == 1 + int(np.flatnonzero(order == targets[row])[0])


class _WrongShape(Ranker):
    name = "wrong"

    def fit(self, catalog: Catalog, interactions: Interactions) -> _WrongShape:
        self.n = len(catalog)
        return self

    def score(self, batch: UserBatch) -> np.ndarray:
        return np.zeros((len(batch), self.n - 1))


@pytest.fixture(scope="module")
def popular(llamarec_data: ProtocolData) -> EvalResult:
    return evaluate(
        llamarec_data, make_ranker("popularity"), split="test", dataset="ml-latest-small", seed=3
    )


def _ndcg10(rank: int) -> float:
    return 1.0 / math.log2(rank + 1) if rank <= 10 else 0.0


class TestEvaluate:
    def test_metrics(self, popular: EvalResult) -> None:
        assert list(popular.metrics) == list(DEFAULT_METRICS)
        assert all(0.0 <= v <= 1.0 for v in popular.metrics.values())
        m = popular.metrics
        assert m["recall@5"] <= m["recall@10"] <= m["recall@20"]
        assert m["mrr@5"] <= m["mrr@10"] <= m["recall@10"]
        assert m["ndcg@5"] <= m["ndcg@10"]
        assert m["ndcg@10"] > 0.0

    def test_ndcg_from_the_ranks_by_hand(self, popular: EvalResult) -> None:
        by_hand = sum(_ndcg10(int(r)) for r in popular.ranks) / len(popular.ranks)
        assert popular.metrics["ndcg@10"] == pytest.approx(by_hand, rel=1e-12)
        recall = sum(int(r) <= 20 for r in popular.ranks) / len(popular.ranks)
        assert popular.metrics["recall@20"] == pytest.approx(recall, rel=1e-12)

    def test_result(self, popular: EvalResult, llamarec_data: ProtocolData) -> None:
        cases = llamarec_data.cases("test")
        assert (popular.protocol, popular.ranker, popular.split) == (
            "llamarec",
            "popularity",
            "test",
        )
        np.testing.assert_array_equal(popular.user_ids, cases.user_ids)
        np.testing.assert_array_equal(
            popular.target_ids, llamarec_data.catalog.item_ids[cases.targets]
        )
        assert ((popular.ranks >= 1) & (popular.ranks <= len(llamarec_data.catalog))).all()
        assert popular.environment["seed"] == 3
        assert popular.environment["device"] == "cpu"
        assert set(popular.seconds) == {"fit", "tune", "score", "total"}

    def test_ranks_match_target_ranks(self, llamarec_data: ProtocolData) -> None:
        cases = llamarec_data.cases("validation").head(50)
        ranker = PopularityRanker().fit(llamarec_data.catalog, llamarec_data.train)
        scores = ranker.score(UserBatch(cases.user_ids, cases.histories))
        expected = target_ranks(scores, cases.histories, cases.targets)
        result = evaluate(
            llamarec_data, PopularityRanker(), split="validation", limit_users=50, batch_size=7
        )
        np.testing.assert_array_equal(result.ranks, expected)

    def test_limit_users(self, llamarec_data: ProtocolData, popular: EvalResult) -> None:
        result = evaluate(llamarec_data, make_ranker("popularity"), split="test", limit_users=25)
        assert len(result.ranks) == len(result.user_ids) == 25
        np.testing.assert_array_equal(result.user_ids, popular.user_ids[:25])
        np.testing.assert_array_equal(result.ranks, popular.ranks[:25])

    def test_metric_choice_and_progress(self, llamarec_data: ProtocolData) -> None:
        calls: list[tuple[int, int]] = []
        result = evaluate(
            llamarec_data,
            make_ranker("popularity"),
            metrics=["ndcg@10", "recall@20"],
            limit_users=30,
            batch_size=16,
            progress=lambda done, total: calls.append((done, total)),
        )
        assert list(result.metrics) == ["ndcg@10", "recall@20"]
        assert calls == [(16, 30), (30, 30)]

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [({"batch_size": 0}, "batch_size"), ({"limit_users": 0}, "limit_users")],
    )
    def test_bad_arguments(self, llamarec_data: ProtocolData, kwargs: dict, field: str) -> None:
        with pytest.raises(ConfigError, match=field):
            evaluate(llamarec_data, make_ranker("popularity"), **kwargs)

    def test_wrong_shape(self, llamarec_data: ProtocolData) -> None:
        with pytest.raises(ConfigError, match=r"'wrong'.*shape.*\(users, catalog items\)"):
            evaluate(llamarec_data, _WrongShape(), limit_users=3)


class TestWriteReport:
    def test_files(self, popular: EvalResult, tmp_path: Path) -> None:
        folder = write_report(popular, tmp_path / "run" / "one")
        assert folder == tmp_path / "run" / "one"
        assert sorted(p.name for p in folder.iterdir()) == ["summary.json", "users.jsonl"]

        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        for key in ("protocol", "dataset", "ranker", "split", "users", "metrics"):
            assert key in summary
        assert summary["protocol"] == "llamarec"
        assert summary["dataset"] == "ml-latest-small"
        assert summary["ranker"] == "popularity"
        assert summary["split"] == "test"
        assert summary["users"] == 610
        assert set(summary["metrics"]) >= {
            "ndcg@5",
            "ndcg@10",
            "recall@5",
            "recall@10",
            "recall@20",
            "mrr@5",
            "mrr@10",
        }
        assert summary["metrics"] == pytest.approx(dict(popular.metrics))
        env = summary["environment"]
        assert env["versions"]["ragrec"] == __version__
        assert "numpy" in env["versions"]
        assert env["device"] == "cpu"
        assert env["seed"] == 3
        assert isinstance(summary["seconds"], float)
        assert summary["seconds"] >= 0.0
        assert summary["config"] == {"window_days": None}

        lines = (folder / "users.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 610
        rows = [json.loads(line) for line in lines]
        assert all(set(r) == {"user", "target", "rank", "top", "seconds"} for r in rows)
        assert all(len(r["top"]) == 20 for r in rows)
        # the top list agrees with the rank: a target ranked r <= 20 sits at top[r - 1]
        assert all(r["top"][r["rank"] - 1] == r["target"] for r in rows if r["rank"] <= 20)
        assert all(r["target"] not in r["top"] for r in rows if r["rank"] > 20)
        assert [r["user"] for r in rows] == popular.user_ids.tolist()
        assert [r["target"] for r in rows] == popular.target_ids.tolist()
        assert [r["rank"] for r in rows] == popular.ranks.tolist()

    def test_overwrites_an_earlier_report(self, popular: EvalResult, tmp_path: Path) -> None:
        (tmp_path / "summary.json").write_text("old", encoding="utf-8")
        write_report(popular, tmp_path)
        assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["users"] == 610
        assert not list(tmp_path.glob("*.tmp"))
