"""Tests for the evaluation runner's candidate sets, top lists, beyond-accuracy figures,
resuming and the Ray engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval import (
    PopularityRanker,
    ProtocolData,
    Ranker,
    UserBatch,
    evaluate,
    make_ranker,
    target_ranks,
    top_positions,
)
from ragrec.eval.metrics import UNRANKED

I64 = np.int64


def _h(*positions: int) -> np.ndarray:
    return np.array(positions, dtype=I64)


class TestCandidates:
    SCORES = np.array([[0.5, 0.9, 0.1, 0.9, 0.3]])

    def test_rank_among_candidates_only(self) -> None:
        # item 1 (0.9) is not a candidate, so target 0 (0.5) is first among {0, 2, 4}
        ranks = target_ranks(self.SCORES, [_h()], np.array([0]), [_h(0, 2, 4)])
        assert ranks.tolist() == [1]
        ranks = target_ranks(self.SCORES, [_h()], np.array([2]), [_h(0, 2, 4)])
        assert ranks.tolist() == [3]

    def test_target_outside_candidates_is_unranked(self) -> None:
        ranks = target_ranks(self.SCORES, [_h()], np.array([1]), [_h(0, 2)])
        assert ranks.tolist() == [UNRANKED]

    def test_top_positions(self) -> None:
        top = top_positions(self.SCORES, [_h(3)], 4)
        assert top.tolist() == [[1, 0, 4, 2]]
        top = top_positions(self.SCORES, [_h()], 4, [_h(4, 2)])
        assert top.tolist() == [[4, 2, -1, -1]]  # padded: only two rankable items

    def test_top_ties_follow_catalog_order(self) -> None:
        top = top_positions(np.array([[1.0, 2.0, 2.0, 1.0]]), [_h()], 4)
        assert top.tolist() == [[1, 2, 0, 3]]


class _Seen(Ranker):
    """Popularity that records the batches it was asked for."""

    name = "seen"

    def __init__(self) -> None:
        self.inner = PopularityRanker()
        self.batches: list[UserBatch] = []

    def fit(self, catalog: Catalog, interactions: Interactions) -> _Seen:
        self.inner.fit(catalog, interactions)
        return self

    def score(self, batch: UserBatch) -> np.ndarray:
        self.batches.append(batch)
        return self.inner.score(batch)


class _InterruptedError(Exception):
    pass


class _Crashing(_Seen):
    name = "seen"

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def score(self, batch: UserBatch) -> np.ndarray:
        if len(self.batches) >= self.after:
            raise _InterruptedError
        return super().score(batch)


class TestSummary:
    def test_beyond_rates_latency(self, llamarec_data: ProtocolData) -> None:
        result = evaluate(llamarec_data, make_ranker("popularity"), limit_users=40)
        summary = result.summary()
        beyond = summary["beyond"]
        assert set(beyond) == {"coverage@10", "novelty@10", "long_tail@10", "diversity@10"}
        # popularity recommends the same few popular items to everyone (minus history)
        assert beyond["coverage@10"] < 100 / len(llamarec_data.catalog)
        assert beyond["long_tail@10"] == 0.0
        assert summary["rates"] == {"cold_start": 0.0}
        assert set(summary["latency"]) >= {"p50", "p90", "p99"}
        assert summary["latency"]["p50"] >= 0.0
        assert summary["system"] == "popularity"
        random = evaluate(llamarec_data, make_ranker("random"), limit_users=40).beyond
        assert random["coverage@10"] > 5 * beyond["coverage@10"]
        assert random["novelty@10"] > beyond["novelty@10"]

    def test_system_name(self, llamarec_data: ProtocolData) -> None:
        result = evaluate(llamarec_data, make_ranker("popularity"), limit_users=3, system="pop")
        assert result.summary()["system"] == "pop"


class TestResume:
    def test_interrupted_run_resumes(self, llamarec_data: ProtocolData, tmp_path: Path) -> None:
        full = evaluate(llamarec_data, make_ranker("popularity"), limit_users=50, batch_size=10)
        crashing = _Crashing(after=2)
        with pytest.raises(_InterruptedError):
            evaluate(llamarec_data, crashing, limit_users=50, batch_size=10, out=tmp_path)
        partial = (tmp_path / "users.partial.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(partial) == 20
        assert not (tmp_path / "summary.json").exists()

        again = _Seen()
        calls: list[tuple[int, int]] = []
        result = evaluate(
            llamarec_data,
            again,
            limit_users=50,
            batch_size=10,
            out=tmp_path,
            progress=lambda d, t: calls.append((d, t)),
        )
        assert sum(len(b) for b in again.batches) == 30  # only the missing users
        assert calls[0] == (20, 50)
        assert result.resumed == 20
        np.testing.assert_array_equal(result.ranks, full.ranks)
        assert result.metrics == pytest.approx(dict(full.metrics))
        assert result.top_ids == full.top_ids
        assert not (tmp_path / "users.partial.jsonl").exists()
        summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
        assert summary["users"] == 50
        assert summary["resumed_users"] == 20

    def test_more_users_extend_a_finished_run(
        self, llamarec_data: ProtocolData, tmp_path: Path
    ) -> None:
        evaluate(llamarec_data, _Seen(), limit_users=10, out=tmp_path)
        seen = _Seen()
        result = evaluate(llamarec_data, seen, limit_users=25, out=tmp_path)
        assert sum(len(b) for b in seen.batches) == 15
        assert len(result.ranks) == 25

    def test_finished_run_is_not_refit(self, llamarec_data: ProtocolData, tmp_path: Path) -> None:
        first = evaluate(llamarec_data, _Seen(), limit_users=10, out=tmp_path)
        again = _Seen()
        fits: list[int] = []
        again.fit = lambda *a: fits.append(1) or again  # type: ignore[method-assign]
        result = evaluate(llamarec_data, again, limit_users=10, out=tmp_path)
        assert fits == []
        assert again.batches == []
        assert result.seconds == pytest.approx(dict(first.seconds))  # the run's own timings
        np.testing.assert_array_equal(result.ranks, first.ranks)

    def test_cut_line_is_scored_again(self, llamarec_data: ProtocolData, tmp_path: Path) -> None:
        with pytest.raises(_InterruptedError):
            evaluate(llamarec_data, _Crashing(after=1), limit_users=20, batch_size=5, out=tmp_path)
        partial = tmp_path / "users.partial.jsonl"
        text = partial.read_text(encoding="utf-8")
        partial.write_text(text[: len(text) - 15], encoding="utf-8")  # the last line cut
        seen = _Seen()
        evaluate(llamarec_data, seen, limit_users=20, batch_size=5, out=tmp_path)
        assert sum(len(b) for b in seen.batches) == 16

    def test_other_settings_refused(self, llamarec_data: ProtocolData, tmp_path: Path) -> None:
        with pytest.raises(_InterruptedError):
            evaluate(llamarec_data, _Crashing(after=1), limit_users=20, batch_size=5, out=tmp_path)
        with pytest.raises(ConfigError, match=r"unfinished run with other settings.*no-resume"):
            evaluate(llamarec_data, make_ranker("random", {"seed": 2}), limit_users=5, out=tmp_path)
        result = evaluate(
            llamarec_data,
            make_ranker("random", {"seed": 2}),
            limit_users=5,
            out=tmp_path,
            resume=False,
        )
        assert result.resumed == 0
        assert json.loads((tmp_path / "run.json").read_text())["config"] == {"seed": 2}

    def test_finished_run_of_other_settings_is_replaced(
        self, llamarec_data: ProtocolData, tmp_path: Path
    ) -> None:
        evaluate(llamarec_data, make_ranker("random", {"seed": 1}), limit_users=5, out=tmp_path)
        result = evaluate(
            llamarec_data, make_ranker("random", {"seed": 2}), limit_users=5, out=tmp_path
        )
        assert result.resumed == 0
        assert json.loads((tmp_path / "summary.json").read_text())["config"] == {"seed": 2}


class TestSpec:
    def test_make_ranker_records_its_spec(self) -> None:
        ranker = make_ranker("random", {"seed": 4})
        assert ranker.spec == ("random", {"seed": 4})
        assert make_ranker("popularity").spec == ("popularity", {"window_days": None})

    def test_ray_needs_a_spec(self, llamarec_data: ProtocolData) -> None:
        with pytest.raises(ConfigError, match="make_ranker"):
            evaluate(llamarec_data, PopularityRanker(), limit_users=3, engine="ray")

    @pytest.mark.parametrize(
        ("options", "message"),
        [({"nodes": 2}, r"\['nodes'\].*allowed: address"), ({"workers": "x"}, "workers='x'")],
    )
    def test_bad_ray_options(
        self, llamarec_data: ProtocolData, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigError, match=message):
            evaluate(
                llamarec_data,
                make_ranker("popularity"),
                limit_users=3,
                engine="ray",
                engine_options=options,
            )

    def test_unknown_engine(self, llamarec_data: ProtocolData) -> None:
        with pytest.raises(ConfigError, match="engine='spark'"):
            evaluate(llamarec_data, make_ranker("popularity"), engine="spark")  # type: ignore[arg-type]


class TestRay:
    """The same evaluation on a local Ray instance (two workers) gives the same results."""

    def test_same_results_as_local(self, llamarec_data: ProtocolData, tmp_path: Path) -> None:
        local = evaluate(llamarec_data, make_ranker("random", {"seed": 5}), batch_size=64)
        on_ray = evaluate(
            llamarec_data,
            make_ranker("random", {"seed": 5}),
            batch_size=64,
            engine="ray",
            engine_options={"workers": 2},
            out=tmp_path,
        )
        np.testing.assert_array_equal(on_ray.ranks, local.ranks)
        assert on_ray.metrics == pytest.approx(dict(local.metrics))
        assert on_ray.top_ids == local.top_ids
        assert on_ray.environment["engine"] == "ray"
        lines = (tmp_path / "users.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(x)["user"] for x in lines] == local.user_ids.tolist()
