"""``ragrec tune`` (registered on a throwaway app) and ``Recommender.tune``'s checks
that come before any training."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from ragrec import Recommender
from ragrec.cli._tune import tune_cmd
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("tune")(tune_cmd)
    app.command("noop")(lambda: None)  # two commands: `tune` stays a subcommand
    return app


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(_app(), ["tune", *args])
    return result.exit_code, _ANSI.sub("", result.output)


def test_unknown_method(tmp_path: Path) -> None:
    code, output = _run(str(tmp_path), "--method", "qlora")
    assert code == 2
    assert "method='qlora'" in output
    assert "'lora' or 'full'" in output


def test_not_a_store(tmp_path: Path) -> None:
    code, output = _run(str(tmp_path / "missing"))
    assert code == 2
    assert "not a ragrec store" in output


def test_help_lists_options() -> None:
    result = CliRunner().invoke(_app(), ["tune", "--help"])
    text = _ANSI.sub("", result.output)
    for option in (
        "--max-minutes",
        "--max-examples",
        "--resume",
        "--from-latest",
        "--lora-r",
        "--candidate-order",
        "--train-layers",
        "--holdout-last",
        "--show-rank",
        "--item-text",
    ):
        assert option in text


def test_unknown_candidate_order(tmp_path: Path) -> None:
    code, output = _run(str(tmp_path), "--candidate-order", "popular")
    assert code == 2
    assert "candidate_order='popular'" in output


def test_unknown_item_text(tmp_path: Path) -> None:
    code, output = _run(str(tmp_path), "--item-text", "name")
    assert code == 2
    assert "item_text" in output
    assert "'name'" in output


# a 2-example run on the real model, on one thread
TINY_TUNE = {
    "max_examples": 2,
    "grad_accum": 1,
    "n_candidates": 8,
    "device": "cpu",
    "threads": 1,
    "max_minutes": 2,
}


@pytest.fixture
def store(tmp_path: Path, catalog: Catalog, logs: Interactions) -> Iterator[Recommender]:
    config = {
        "retriever": {"channels": [{"kind": "popularity"}]},
        "generator": {"device": "cpu", "threads": 1},
        "llm_candidates": 0,
        "exemplars": {"k": 0},
    }
    rec = Recommender.build(catalog, logs, config, path=tmp_path / "store")
    yield rec
    rec.close()


def test_recommender_tune_checks(store: Recommender, catalog: Catalog, logs: Interactions) -> None:
    with pytest.raises(ConfigError, match="resume=True needs run_id"):
        store.tune(resume=True)
    with pytest.raises(ConfigError, match=r"from_latest=True but .* holds no finished run"):
        store.tune(from_latest=True)
    with pytest.raises(ConfigError, match="method='qlora'"):
        store.tune({"method": "qlora"})
    with pytest.raises(ConfigError, match="min_history=50"):
        store.tune({"min_history": 50})
    memory = Recommender.build(catalog, logs, {"retriever": {"channels": [{"kind": "popularity"}]}})
    try:
        with pytest.raises(ConfigError, match="save\\(\\) the recommender"):
            memory.tune()
    finally:
        memory.close()


def test_recommender_tune_with_feedback_then_from_latest(store: Recommender) -> None:
    """A 2-example run on the store (a like first), then an incremental one from it."""
    import json

    store.feedback({"user_id": 1, "item_id": 103, "kind": "like"})
    cfg = TINY_TUNE
    first = store.tune(cfg, run_id="first")
    assert store.path is not None
    run = store.path / "tuned" / "first"
    assert first.path == str(run)
    assert first.examples == 2
    saved = json.loads((run / "examples.json").read_text())
    assert saved[0]["source"] == "feedback"
    assert saved[0]["candidates"][saved[0]["target"]] == 103
    second = store.tune(cfg, run_id="second", from_latest=True)
    info = json.loads((Path(second.path) / "tune.json").read_text())
    assert info["base_adapter"] == first.model_path

    # forgetting the user removes their examples from both runs' examples.json
    users = {e["user_id"] for e in saved}
    assert 1 in users
    counts = store.forget_user(1)
    assert counts["tuning_examples"] >= 1
    assert counts["tuned_runs"] >= 1
    for name in ("first", "second"):
        left = json.loads((store.path / "tuned" / name / "examples.json").read_text())
        assert all(e["user_id"] != 1 for e in left)


def test_recommender_tune_holds_out_the_targets_from_its_ranking(
    store: Recommender, logs: Interactions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """holdout_last: targets are each user's last items, and the retriever that orders
    the candidates is refit without them (the store's own retriever saw them)."""
    from ragrec import tuning

    built: dict[str, object] = {}

    def capture(self: object, examples: list, *args: object, **kwargs: object) -> None:  # type: ignore[type-arg]
        built["examples"] = examples

    monkeypatch.setattr(tuning.Tuner, "fit", capture)
    cfg = {
        "holdout_last": 1,
        "candidate_order": "retrieval",
        "random_negatives": 7,
        "n_candidates": 8,
        "max_examples": None,
        "feedback": False,
    }
    store.tune(cfg, run_id="held")
    examples = built["examples"]
    assert isinstance(examples, list)
    assert len(examples) == 6  # one per user: the last item
    catalog = store.catalog
    for ex in examples:
        rows = np.flatnonzero(logs.user_ids == ex.user_id)
        last = logs.item_ids[rows[np.argmax(logs.timestamps[rows])]]
        assert catalog.item_ids[ex.candidates[ex.target]] == last
        assert len(ex.history) == 7


def test_recommender_tune_shows_ranks(store: Recommender) -> None:
    """prompt.show_rank: the saved examples carry each candidate's retrieval rank, and the
    real model trains on prompts that show them."""
    import json

    from ragrec.tuning import TUNE_PROMPT

    cfg = {**TINY_TUNE, "prompt": {**TUNE_PROMPT.model_dump(), "show_rank": True}}
    result = store.tune(cfg, run_id="ranked")
    assert result.examples == 2
    run = Path(result.path)
    saved = json.loads((run / "examples.json").read_text())
    assert all(sorted(e["ranks"]) == list(range(1, 9)) for e in saved)
    info = json.loads((run / "tune.json").read_text())
    assert info["config"]["prompt"]["show_rank"] == "inline"
