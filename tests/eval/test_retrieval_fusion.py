"""The retrieval ranker's fusion fit on the validation split, candidate recall in every
report, and the new channels as rankers, on real MovieLens data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragrec.eval import (
    CANDIDATE_CUTOFFS,
    ProtocolData,
    RetrievalRanker,
    RetrievalRankerConfig,
    evaluate,
    load_run,
    make_ranker,
    write_run_report,
)
from ragrec.retrieval import ChannelSpec, FusionFitConfig, RetrieverConfig

FAST = RetrieverConfig(
    channels=[
        ChannelSpec(kind="transition"),
        ChannelSpec(kind="itemknn"),
        ChannelSpec(kind="popularity", weight=0.5),
    ]
)


def test_every_report_has_candidate_recall(llamarec_data: ProtocolData, tmp_path: Path) -> None:
    result = evaluate(
        llamarec_data,
        make_ranker("transition"),
        split="validation",
        metrics=["ndcg@10"],
        limit_users=120,
        out=tmp_path / "run",
    )
    expected = {f"recall@{k}": float(np.mean(result.ranks <= k)) for k in CANDIDATE_CUTOFFS}
    assert result.candidate_recall == expected
    assert expected["recall@20"] <= expected["recall@50"] <= expected["recall@100"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["candidate_recall"] == expected
    files = write_run_report([load_run(tmp_path / "run")], tmp_path / "report")
    text = Path(files.markdown).read_text()
    assert "candidate recall@20" in text
    assert "candidate recall@100" in text


def test_the_fusion_is_fit_on_validation_before_test(llamarec_data: ProtocolData) -> None:
    config = RetrievalRankerConfig(retriever=FAST, fusion_fit=FusionFitConfig(bootstrap=3))
    ranker = RetrievalRanker(config)
    result = evaluate(llamarec_data, ranker, split="test", metrics=["ndcg@10"], limit_users=50)
    fit = ranker.fusion
    assert fit is not None
    assert fit.users == len(llamarec_data.cases("validation"))  # all validation users
    assert ranker.retriever.weights.for_user(None) == dict(fit.weights)
    assert ranker.retriever.config.fusion.method == fit.method
    assert result.config["fusion_fit"]["weights"] == dict(fit.weights)
    # a copy on another process takes the tuned state instead of fitting again
    copy = RetrievalRanker(config)
    copy.fit(llamarec_data.catalog, llamarec_data.fit_rows("test"))
    copy.load_tuned_state(json.loads(json.dumps(ranker.tuned_state())))
    assert copy.retriever.weights.for_user(None) == dict(fit.weights)
    assert copy.retriever.config.fusion.method == fit.method


def test_validation_and_off_keep_the_configured_weights(llamarec_data: ProtocolData) -> None:
    ranker = RetrievalRanker(RetrievalRankerConfig(retriever=FAST, fit_fusion=False))
    evaluate(llamarec_data, ranker, split="test", metrics=["ndcg@10"], limit_users=20)
    assert ranker.fusion is None
    assert ranker.retriever.weights.for_user(None)["popularity"] == 0.5
    ranker = RetrievalRanker(RetrievalRankerConfig(retriever=FAST))
    evaluate(llamarec_data, ranker, split="validation", metrics=["ndcg@10"], limit_users=20)
    assert ranker.fusion is None  # never fit on the split it is scored on


@pytest.mark.parametrize(
    ("name", "kind"),
    [("als-channel", "als"), ("itemknn-channel", "itemknn"), ("sasrec", "sasrec")],
)
def test_new_channels_are_rankers(name: str, kind: str) -> None:
    ranker = make_ranker(name)
    assert isinstance(ranker, RetrievalRanker)
    assert ranker.name == name
    assert [c.kind for c in ranker.retriever.channels] == [kind]
