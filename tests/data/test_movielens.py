"""Tests for ragrec.data._movielens: the real ml-latest-small and tiny 100k / 1M folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragrec.data import MovieLens, detect_layout, load_movielens
from ragrec.errors import ConfigError, DataValidationError

# ml-100k genre flags, in u.item column order (fields 6..24).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


# ml-latest-small -------------------------------------------------------------------------


def test_latest_small_counts(ml_small: MovieLens, ml_small_path: Path) -> None:
    assert ml_small.layout == "latest"
    assert ml_small.path == ml_small_path
    assert len(ml_small.catalog) == 9_742
    inter = ml_small.interactions
    assert len(inter) == 100_836
    assert inter.n_users == 610
    assert inter.n_items == 9_724
    assert set(np.unique(inter.kinds)) == {"rating"}
    assert inter.values.min() == 0.5
    assert inter.values.max() == 5.0
    assert inter.user_ids.dtype == np.int64
    assert inter.item_ids.dtype == np.int64
    assert ml_small.catalog.item_ids.dtype == np.int64
    # every rated item is in the catalog
    assert (ml_small.catalog.positions(inter.item_ids) >= 0).all()


def test_latest_small_tags_are_folded_into_text(ml_small: MovieLens) -> None:
    catalog = ml_small.catalog
    tags = catalog.text["tags"]
    assert len(tags) == len(catalog)
    step_brothers = catalog.position(60756)
    assert catalog.titles[step_brothers] == "Step Brothers (2008)"
    folded = tags[step_brothers].split(", ")
    assert "funny" in folded
    assert "Highly quotable" in folded
    assert len({t.lower() for t in folded}) == len(folded)  # distinct, case-folded
    assert tags[catalog.position(2)] != ""  # Jumanji has tags
    assert (tags == "").sum() > 0  # most movies have none: empty text, not missing


def test_latest_small_years_and_genres(ml_small: MovieLens) -> None:
    catalog = ml_small.catalog
    toy_story = catalog.position(1)
    assert catalog.titles[toy_story] == "Toy Story (1995)"  # titles keep the year
    assert catalog.years[toy_story] == 1995
    assert catalog.categories[toy_story] == (
        "Adventure",
        "Animation",
        "Children",
        "Comedy",
        "Fantasy",
    )
    assert catalog.text["genres"][toy_story] == "Adventure, Animation, Children, Comedy, Fantasy"
    no_genres = catalog.position(114335)  # "(no genres listed)" in movies.csv
    assert catalog.categories[no_genres] == ()
    assert catalog.text["genres"][no_genres] == ""
    # a year range with an en dash ("(2006\u20132007)") gives its first year; no year gives nan
    death_note = int(np.flatnonzero(catalog.titles == "Death Note: Desu nôto (2006\u20132007)")[0])
    assert catalog.years[death_note] == 2006
    no_year = np.flatnonzero(catalog.titles == "Babylon 5")
    assert len(no_year) == 1
    assert np.isnan(catalog.years[no_year[0]])
    assert int(np.isnan(catalog.years).sum()) == 12


def test_detect_layout_latest(ml_small_path: Path) -> None:
    assert detect_layout(ml_small_path) == "latest"


# synthetic ml-100k / ml-1m ---------------------------------------------------------------


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in GENRES_100K)


def write_ml100k(folder: Path) -> Path:
    folder.mkdir()
    kids = "Children's"
    items = [
        "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
        + _flags("Animation", kids, "Comedy"),
        "2|Café (1995)|01-Jan-1995||http://us.imdb.com/Title?Caf%E9|" + _flags("Drama"),
        "3|Crème brûlée (1997)|01-Jan-1997||http://x|" + _flags("Comedy", "Romance"),
        "4|unknown||||" + _flags("unknown"),
    ]
    for line in items:
        assert line.count("|") == 23  # 24 fields, like the real u.item
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    ratings = [
        (196, 1, 3, 881250949),
        (186, 2, 3, 891717742),
        (196, 3, 1, 878887116),
        (22, 1, 2, 880606923),
        (244, 4, 2, 880606923),
    ]
    (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in ratings))
    return folder


def write_ml1m(folder: Path) -> Path:
    folder.mkdir()
    movies = [
        "1::Toy Story (1995)::Animation|Children's|Comedy",
        "2::Café Society (1995)::Drama",
        "3::Misérables, Les (1995)::Drama|Musical",
    ]
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    ratings = [
        "1::1::5::978300760",
        "1::2::3::978302109",
        "2::1::4::978301968",
        "2::3::2::978300275",
    ]
    (folder / "ratings.dat").write_bytes(("\n".join(ratings) + "\n").encode("latin-1"))
    return folder


def test_ml100k_layout(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path / "ml-100k")
    assert detect_layout(folder) == "100k"

    ml = load_movielens(folder)

    assert ml.layout == "100k"
    catalog, inter = ml.catalog, ml.interactions
    assert catalog.item_ids.tolist() == [1, 2, 3, 4]
    assert catalog.titles.tolist() == [
        "Toy Story (1995)",
        "Café (1995)",
        "Crème brûlée (1997)",
        "unknown",
    ]
    assert catalog.years[:3].tolist() == [1995, 1995, 1997]
    assert np.isnan(catalog.years[3])
    assert catalog.categories[0] == ("Animation", "Children's", "Comedy")
    assert catalog.categories[1] == ("Drama",)
    assert len(inter) == 5
    assert inter.n_users == 4
    assert inter.n_items == 4
    assert inter.user_ids.tolist() == [196, 186, 196, 22, 244]
    assert inter.values.tolist() == [3.0, 3.0, 1.0, 2.0, 2.0]
    assert inter.timestamps.tolist() == [881250949, 891717742, 878887116, 880606923, 880606923]


def test_ml100k_rating_on_unknown_item_names_u_data(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path / "ml-100k")
    with (folder / "u.data").open("a") as f:
        f.write("5\t99\t4\t880606923\n")
    with pytest.raises(DataValidationError) as excinfo:
        load_movielens(folder)
    message = str(excinfo.value)
    assert message.startswith("u.data: ")
    assert "row 6" in message
    assert "'99'" in message


def test_ml1m_layout(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    assert detect_layout(folder) == "1m"

    ml = load_movielens(folder)

    assert ml.layout == "1m"
    catalog, inter = ml.catalog, ml.interactions
    assert catalog.item_ids.tolist() == [1, 2, 3]
    assert catalog.titles.tolist() == [
        "Toy Story (1995)",
        "Café Society (1995)",
        "Misérables, Les (1995)",
    ]
    assert catalog.years.tolist() == [1995, 1995, 1995]
    assert catalog.categories == (
        ("Animation", "Children's", "Comedy"),
        ("Drama",),
        ("Drama", "Musical"),
    )
    assert len(inter) == 4
    assert inter.n_users == 2
    assert inter.n_items == 3
    assert inter.values.tolist() == [5.0, 3.0, 4.0, 2.0]
    assert inter.timestamps.tolist() == [978300760, 978302109, 978301968, 978300275]


def test_folder_without_layout_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")  # no movies.csv
    (folder / "u.data").write_text("")  # no u.item
    with pytest.raises(DataValidationError, match="no MovieLens layout") as excinfo:
        load_movielens(folder)
    message = str(excinfo.value)
    assert str(folder) in message
    assert "ratings.csv" in message  # lists what it found
    assert "u.item" in message  # and what it expected


def test_missing_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="not a folder"):
        detect_layout(tmp_path / "nowhere")


def test_bad_on_invalid_is_a_config_error(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    with pytest.raises(ConfigError, match="on_invalid"):
        load_movielens(folder, on_invalid="ignore")  # type: ignore[arg-type]
