"""Loaders for the MovieLens layouts: latest(-small), 100k and 1M."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from ragrec.data._io import read_table
from ragrec.data._models import Catalog, Interactions
from ragrec.data._validate import OnInvalid, check_on_invalid
from ragrec.errors import DataValidationError

logger = logging.getLogger(__name__)

__all__ = ["MovieLens", "MovieLensLayout", "detect_layout", "load_movielens"]

MovieLensLayout = Literal["latest", "100k", "1m"]

_YEAR = re.compile(r"\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True)
class MovieLens:
    """A loaded MovieLens dataset.

    Attributes:
        catalog: The movies (tags, when present, folded into ``text["tags"]``).
        interactions: The ratings, kind ``"rating"``.
        layout: Which layout the folder had.
        path: The folder it came from.
    """

    catalog: Catalog
    interactions: Interactions
    layout: MovieLensLayout
    path: Path


def detect_layout(path: str | Path) -> MovieLensLayout:
    """Tell the MovieLens layout of a folder by the files in it.

    Raises:
        DataValidationError: The folder does not exist or holds no known layout.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataValidationError(
            str(folder),
            "not a folder",
            fix="pass the MovieLens folder (holding ratings.csv, u.data or ratings.dat), or "
            "fetch it with: ragrec data download movielens-small",
        )
    if (folder / "ratings.csv").is_file() and (folder / "movies.csv").is_file():
        return "latest"
    if (folder / "u.data").is_file() and (folder / "u.item").is_file():
        return "100k"
    if (folder / "ratings.dat").is_file() and (folder / "movies.dat").is_file():
        return "1m"
    raise DataValidationError(
        str(folder),
        f"no MovieLens layout found (files: {sorted(p.name for p in folder.iterdir())[:8]})",
        fix="expected movies.csv + ratings.csv (ml-latest), u.item + u.data (ml-100k) or "
        "movies.dat + ratings.dat (ml-1m)",
    )


def load_movielens(path: str | Path, *, on_invalid: OnInvalid = "error") -> MovieLens:
    """Load a MovieLens folder, detecting its layout.

    Every rating counts as an interaction (kind ``"rating"``, value the stars). Years are
    read from the "(1995)" suffix of titles; titles keep it.

    Args:
        path: Folder of ml-latest-small / ml-latest, ml-100k or ml-1m.
        on_invalid: ``"error"`` stops at invalid rows (naming file, row, column, value);
            ``"drop"`` skips them, counted and logged.

    Returns:
        The catalog and interactions.
    """
    check_on_invalid(on_invalid)
    folder = Path(path)
    layout = detect_layout(folder)
    if layout == "latest":
        catalog, frame_src = _latest_movies(folder, on_invalid), "ratings.csv"
        ratings = read_table(folder / frame_src)
        columns = {"user": "userId", "item": "movieId", "value": "rating", "timestamp": "timestamp"}
    elif layout == "100k":
        catalog, frame_src = _ml100k_movies(folder, on_invalid), "u.data"
        ratings = read_table(folder / frame_src, sep="\t", header=False).rename(
            columns=dict(enumerate(["user", "item", "value", "timestamp"]))
        )
        columns = {"user": "user", "item": "item", "value": "value", "timestamp": "timestamp"}
    else:
        catalog, frame_src = _ml1m_movies(folder, on_invalid), "ratings.dat"
        ratings = read_table(folder / frame_src, sep="::", header=False, encoding="latin-1")
        ratings = ratings.rename(columns=dict(enumerate(["user", "item", "value", "timestamp"])))
        columns = {"user": "user", "item": "item", "value": "value", "timestamp": "timestamp"}
    interactions = Interactions.from_frame(
        ratings,
        columns=columns,
        catalog=catalog,
        on_invalid=on_invalid,
        source=frame_src,
    )
    logger.info(
        "loaded MovieLens %s from %s: %d items, %d ratings by %d users",
        layout,
        folder,
        len(catalog),
        len(interactions),
        interactions.n_users,
    )
    return MovieLens(catalog=catalog, interactions=interactions, layout=layout, path=folder)


def _with_years(frame: pd.DataFrame, title_col: str) -> pd.DataFrame:
    titles = frame[title_col].astype("string").fillna("")
    years = titles.str.extract(_YEAR, expand=False)
    return frame.assign(_year=years.fillna(""))


def _movie_catalog(
    movies: pd.DataFrame,
    on_invalid: OnInvalid,
    source: str,
    *,
    item: str = "item",
    text_columns: Sequence[str] = (),
) -> Catalog:
    """The catalog of a movies table with ``title`` and ``genres`` columns and the item
    id in ``item``; the release year is read from the title."""
    return Catalog.from_frame(
        _with_years(movies, "title"),
        columns={"item": item, "title": "title", "genres": "genres", "year": "_year"},
        text_columns=text_columns,
        on_invalid=on_invalid,
        source=source,
    )


def _latest_movies(folder: Path, on_invalid: OnInvalid) -> Catalog:
    movies = read_table(folder / "movies.csv")
    tags_path = folder / "tags.csv"
    text_columns: list[str] = []
    if tags_path.is_file():
        tags = read_table(tags_path)
        if {"movieId", "tag"} <= set(tags.columns):
            movies = movies.assign(tags=_fold_tags(movies["movieId"], tags))
            text_columns.append("tags")
    return _movie_catalog(
        movies, on_invalid, "movies.csv", item="movieId", text_columns=text_columns
    )


def _fold_tags(movie_ids: pd.Series, tags: pd.DataFrame) -> pd.Series:
    """Per movie: its distinct tags (case-folded), most frequent first, comma-joined."""
    frame = pd.DataFrame(
        {"movieId": tags["movieId"].astype(str).str.strip(), "tag": tags["tag"].astype(str)}
    )
    frame["key"] = frame["tag"].str.strip().str.lower()
    frame = frame[frame["key"] != ""]
    counts = (
        frame.groupby(["movieId", "key"], sort=False)
        .agg(n=("tag", "size"), tag=("tag", "first"))
        .reset_index()
        .sort_values(["movieId", "n", "key"], ascending=[True, False, True])
    )
    joined = counts.groupby("movieId", sort=False)["tag"].agg(lambda s: ", ".join(s.str.strip()))
    return movie_ids.astype(str).str.strip().map(joined).fillna("")


def _ml100k_movies(folder: Path, on_invalid: OnInvalid) -> Catalog:
    items = read_table(folder / "u.item", sep="|", header=False, encoding="latin-1")
    if items.shape[1] < 5 + len(_ML100K_GENRES):
        raise DataValidationError(
            "u.item",
            f"expected {5 + len(_ML100K_GENRES)} '|'-separated columns, got {items.shape[1]}",
            fix="use the original ml-100k u.item file",
        )
    flags = items.iloc[:, 5 : 5 + len(_ML100K_GENRES)].to_numpy() == "1"
    genres = ["|".join(g for g, f in zip(_ML100K_GENRES, row, strict=True) if f) for row in flags]
    frame = pd.DataFrame({"item": items[0], "title": items[1], "genres": genres})
    return _movie_catalog(frame, on_invalid, "u.item")


def _ml1m_movies(folder: Path, on_invalid: OnInvalid) -> Catalog:
    movies = read_table(folder / "movies.dat", sep="::", header=False, encoding="latin-1")
    movies = movies.rename(columns=dict(enumerate(["item", "title", "genres"])))
    return _movie_catalog(movies, on_invalid, "movies.dat")
