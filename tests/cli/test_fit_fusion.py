"""``ragrec fit-fusion`` and ``ragrec index --fit-fusion`` on a store built from a slice of
ml-latest-small: the fitted weights become the store's global prior and survive a reload."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ragrec import Recommender

from .test_cli import _assert_one_line_error, _invoke, _plain

CONFIG = """[recommender]
explain_top = 0

[[recommender.retriever.channels]]
kind = "transition"

[[recommender.retriever.channels]]
kind = "itemknn"
weight = 0.5

[[recommender.retriever.channels]]
kind = "popularity"
weight = 0.01
"""


@pytest.fixture(scope="module")
def subset(ml_small_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MovieLens folder with the first 200 movies and every rating on them."""
    folder = tmp_path_factory.mktemp("ml-subset")
    movies = pd.read_csv(ml_small_path / "movies.csv", dtype=str, keep_default_na=False)
    movies = movies.head(200)
    ratings = pd.read_csv(ml_small_path / "ratings.csv", dtype=str, keep_default_na=False)
    ratings = ratings[ratings["movieId"].isin(movies["movieId"])]
    movies.to_csv(folder / "movies.csv", index=False)
    ratings.to_csv(folder / "ratings.csv", index=False)
    (folder / "ragrec.toml").write_text(CONFIG, encoding="utf-8")
    return folder


def test_fit_fusion_sets_the_stores_prior(subset: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["--data", str(subset), "--config", str(subset / "ragrec.toml"), "--json"]
    built = _invoke("index", str(store), *args, "--no-progress")
    assert built.exit_code == 0, built.output
    assert json.loads(_plain(built.stdout))["weights"]["itemknn"] == 0.5
    result = _invoke("fit-fusion", str(store), "--bootstrap", "2", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    fit = json.loads(_plain(result.stdout))
    assert set(fit["weights"]) == {"transition", "itemknn", "popularity"}
    assert max(fit["weights"].values()) == 1.0
    assert fit["users"] > 100
    assert json.loads((store / "fusion.json").read_text())["weights"] == fit["weights"]
    rec = Recommender.load(store)
    assert rec.weights(None) == fit["weights"]
    assert rec.config.retriever.fusion.method == fit["method"]
    table = _invoke("fit-fusion", str(store), "--bootstrap", "0", "--no-progress")
    assert table.exit_code == 0, table.output
    assert "fusion fit" in _plain(table.stdout)
    assert "fusion.json" in _plain(table.stdout)


def test_index_can_fit_the_fusion(subset: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = _invoke(
        "index",
        str(store),
        "--data",
        str(subset),
        "--config",
        str(subset / "ragrec.toml"),
        "--fit-fusion",
        "--json",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    fit = json.loads((store / "fusion.json").read_text())
    assert json.loads(_plain(result.stdout))["weights"] == fit["weights"]


def test_fit_fusion_errors(subset: Path, tmp_path: Path) -> None:
    result = _invoke("fit-fusion", str(tmp_path / "nowhere"), "--no-progress")
    _assert_one_line_error(result, "not a ragrec store")
    store = tmp_path / "store"
    args = ["--data", str(subset), "--config", str(subset / "ragrec.toml"), "--no-progress"]
    assert _invoke("index", str(store), *args).exit_code == 0
    bad = _invoke("fit-fusion", str(store), "--metric", "hit@3", "--no-progress")
    _assert_one_line_error(bad, "'hit@3' is not ndcg@K, recall@K or mrr@K")
