"""``ragrec index`` and ``ragrec recommend`` on a real store built from a slice of
ml-latest-small (300 movies and their ratings), once per module."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from .test_cli import _assert_one_line_error, _invoke, _plain

N_MOVIES = 300
CONFIG = "[recommender]\nexplain_top = 1\n\n[recommender.generator]\nthreads = 1\n"


@pytest.fixture(scope="module")
def subset(ml_small_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MovieLens folder with the first 300 movies and every rating on them."""
    folder = tmp_path_factory.mktemp("ml-subset")
    movies = pd.read_csv(ml_small_path / "movies.csv", dtype=str, keep_default_na=False)
    movies = movies.head(N_MOVIES)
    ratings = pd.read_csv(ml_small_path / "ratings.csv", dtype=str, keep_default_na=False)
    ratings = ratings[ratings["movieId"].isin(movies["movieId"])]
    movies.to_csv(folder / "movies.csv", index=False)
    ratings.to_csv(folder / "ratings.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "ragrec.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(
    subset: Path, config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The store, built once by ``ragrec index``, and its JSON summary."""
    store = tmp_path_factory.mktemp("stores") / "store"
    result = _invoke(
        "index", str(store), "--data", str(subset), "--config", str(config_file), "--json"
    )
    assert result.exit_code == 0, result.output
    return store, json.loads(_plain(result.stdout))


def test_index_builds_a_store(subset: Path, built: tuple[Path, dict[str, Any]]) -> None:
    store, summary = built
    ratings = pd.read_csv(subset / "ratings.csv")
    assert summary["items"] == N_MOVIES
    assert summary["interactions"] == len(ratings)
    assert summary["users"] == ratings["userId"].nunique()
    assert Path(summary["store"]) == store
    assert summary["seconds"] > 0
    assert (store / "manifest.json").is_file()
    saved = json.loads((store / "config.json").read_text(encoding="utf-8"))
    assert saved["explain_top"] == 1
    assert saved["generator"]["threads"] == 1


def test_index_from_item_and_interaction_files(ml_small_path: Path, tmp_path: Path) -> None:
    movies = pd.read_csv(ml_small_path / "movies.csv").head(40)
    ratings = pd.read_csv(ml_small_path / "ratings.csv")
    ratings = ratings[ratings["movieId"].isin(movies["movieId"])]
    movies.rename(columns={"title": "name"}).to_parquet(tmp_path / "items.parquet")
    ratings.to_csv(tmp_path / "events.csv", index=False)
    store = tmp_path / "store"
    result = _invoke(
        "index",
        str(store),
        "--items",
        str(tmp_path / "items.parquet"),
        "--interactions",
        str(tmp_path / "events.csv"),
        "--item-columns",
        "item=movieId,title=name",
        "--interaction-columns",
        "user=userId,item=movieId",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    text = " ".join(_plain(result.stdout).split())
    assert "items │ 40" in text
    assert f"interactions │ {len(ratings):,}" in text
    assert "built" in text
    assert (store / "manifest.json").is_file()
    # genres and the rating column were picked up by their conventional names
    catalog = pd.read_parquet(store / "catalog.parquet")
    assert catalog["categories"].map(len).sum() > 0
    events = pd.read_parquet(store / "interactions.parquet")
    assert sorted(events["value"].unique()) != [1.0]


def test_index_refuses_an_existing_store(built: tuple[Path, dict[str, Any]], subset: Path) -> None:
    store, _ = built
    result = _invoke("index", str(store), "--data", str(subset))
    _assert_one_line_error(result, "already holds a ragrec store")


def test_index_force_rebuilds_and_keeps_the_embedding_cache(
    ml_small_path: Path, tmp_path: Path
) -> None:
    movies = pd.read_csv(ml_small_path / "movies.csv").head(30)
    ratings = pd.read_csv(ml_small_path / "ratings.csv")
    ratings = ratings[ratings["movieId"].isin(movies["movieId"])]
    movies.to_csv(tmp_path / "items.csv", index=False)
    ratings.to_csv(tmp_path / "events.csv", index=False)
    store = tmp_path / "store"
    args = ("index", str(store), "--items", str(tmp_path / "items.csv"), "--interactions",
            str(tmp_path / "events.csv"), "--item-columns", "item=movieId",
            "--interaction-columns", "user=userId,item=movieId", "--no-progress")  # fmt: skip
    assert _invoke(*args).exit_code == 0
    (store / "stray.txt").write_text("old")
    cache = store / "embeddings.sqlite"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    result = _invoke(*args, "--force")
    assert result.exit_code == 0, result.output
    assert (store / "manifest.json").is_file()
    assert not (store / "stray.txt").exists()  # the old store's files are gone
    assert cache.is_file()
    assert cache.stat().st_mtime_ns >= stamp


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[recommender]\nexplain_tp = 1\n", "'explain_tp'"),
        ("[recomender]\nexplain_top = 1\n", "recomender"),
        ("[recommender.generator]\nthreads = 0\n", "threads"),
        ("[data]\npth = 'x'\n", "'data.pth'"),
    ],
)
def test_index_config_errors(tmp_path: Path, subset: Path, toml: str, needle: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml, encoding="utf-8")
    result = _invoke("index", str(tmp_path / "s"), "--data", str(subset), "--config", str(config))
    _assert_one_line_error(result, "bad.toml", needle)
    assert not (tmp_path / "s").exists()


def test_index_option_errors(tmp_path: Path, subset: Path) -> None:
    items = _invoke("index", str(tmp_path / "s"), "--items", str(subset / "movies.csv"))
    _assert_one_line_error(items, "--items and --interactions")
    missing = _invoke("index", str(tmp_path / "s"), "--data", str(tmp_path / "nowhere"))
    _assert_one_line_error(missing, "nowhere", "not a folder")
    columns = _invoke(
        "index",
        str(tmp_path / "s"),
        "--items",
        str(subset / "movies.csv"),
        "--interactions",
        str(subset / "ratings.csv"),
        "--item-columns",
        "movieId",
    )
    _assert_one_line_error(columns, "--item-columns", "FIELD=COLUMN")
    assert not (tmp_path / "s").exists()


def test_recommend_json(built: tuple[Path, dict[str, Any]]) -> None:
    store, _ = built
    result = _invoke(
        "recommend", str(store), "1", "--k", "4", "--query", "space", "--no-explain", "--json"
    )
    assert result.exit_code == 0, result.output
    rec = json.loads(_plain(result.stdout))
    assert rec["user_id"] == 1
    assert rec["query"] == "space"
    assert rec["cold_start"] is False
    assert len(rec["items"]) == 4
    assert [i["rank"] for i in rec["items"]] == [1, 2, 3, 4]
    scores = [i["score"] for i in rec["items"]]
    assert scores == sorted(scores, reverse=True)
    assert len({i["item_id"] for i in rec["items"]}) == 4
    assert all(i["explanation"] is None for i in rec["items"])
    assert all(i["channels"] for i in rec["items"])


def test_recommend_table_for_an_unknown_user(built: tuple[Path, dict[str, Any]]) -> None:
    store, _ = built
    result = _invoke("recommend", str(store), "999999", "--k", "5", "--no-explain")
    assert result.exit_code == 0, result.output
    text = _plain(result.stdout)
    assert "cold start" in " ".join(text.split())
    ranks = [int(m) for m in re.findall(r"^│\s+(\d+) │", text, flags=re.MULTILINE)]
    assert ranks == [1, 2, 3, 4, 5]
    assert "explanation" not in text  # no column when nothing was explained


def test_recommend_errors(built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    store, _ = built
    missing = _invoke("recommend", str(tmp_path / "nostore"), "1")
    _assert_one_line_error(missing, "nostore", "not a ragrec store")
    bad_user = _invoke("recommend", str(store), "alice")
    _assert_one_line_error(bad_user, "'alice'", "integers")
    bad_k = _invoke("recommend", str(store), "1", "--k", "0")
    _assert_one_line_error(bad_k, "--k 0")


@pytest.mark.slow
def test_recommend_with_an_explanation(built: tuple[Path, dict[str, Any]]) -> None:
    """Every item is explained; the real LLM rewrites the top item's evidence sentence
    (used when it passes the checks); the table shows no dropped explanation and says
    once that the LLM ranking is off."""
    store, _ = built
    result = _invoke("recommend", str(store), "1", "--k", "3", "--json")
    assert result.exit_code == 0, result.output
    rec = json.loads(_plain(result.stdout))
    top, *rest = rec["items"]
    exp = top["explanation"]
    assert exp is not None
    assert exp["item_id"] == top["item_id"]
    assert exp["text"]
    assert exp["llm_text"] is not None
    if exp["source"] == "llm":
        assert exp["rejected"] is None
    else:
        assert exp["text"] == exp["template"]
        assert exp["rejected"].startswith("rejected: ")
    for item in rest:  # explain_top = 1
        assert item["explanation"]["source"] == "template"
        assert item["explanation"]["rejected"] == "beyond explain_top"
    assert rec["timings"]["llm_rank"] == 0.0
    assert rec["llm_note"].startswith("LLM ranking off")
    table = _invoke("recommend", str(store), "1", "--k", "3")
    assert table.exit_code == 0, table.output
    text = _plain(table.stdout)
    assert "dropped" not in text
    assert " ".join(text.split()).count("LLM ranking off") == 1
    assert "explanation" in text
