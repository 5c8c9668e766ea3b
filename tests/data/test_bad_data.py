"""Bad input data: every path raises DataValidationError naming file, row, column, value."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ragrec.data import Catalog, Interactions, load_movielens, read_table
from ragrec.errors import ConfigError, DataValidationError

RATING_COLUMNS = {"user": "userId", "item": "movieId", "value": "rating", "timestamp": "ts"}


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def error_message(excinfo: pytest.ExceptionInfo[DataValidationError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message  # the CLI prints it on one line
    return message


@pytest.fixture
def catalog() -> Catalog:
    frame = pd.DataFrame({"item_id": [1, 2, 3], "title": ["A (1990)", "B (1991)", "C (1992)"]})
    return Catalog.from_frame(frame)


# one test per bad-data path ----------------------------------------------------------------


def test_duplicate_item_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\n1,A\n2,B\n1,A again\n")
    with pytest.raises(DataValidationError) as excinfo:
        Catalog.from_file(path)
    message = error_message(excinfo)
    assert message.startswith("items.csv: duplicate item ids (1 in all): ")
    assert "row 3, column 'item_id': '1'" in message
    assert "on_invalid='drop'" in message  # the fix
    assert excinfo.value.source == "items.csv"
    assert excinfo.value.count == 1


def test_missing_titles(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "movieId,name\n1,A\n2,\n3,   \n")
    with pytest.raises(DataValidationError) as excinfo:
        Catalog.from_file(path, columns={"item": "movieId", "title": "name"})
    message = error_message(excinfo)
    assert message.startswith("items.csv: missing titles (2 in all): ")
    assert "row 2, column 'name': ''" in message
    assert "row 3, column 'name': '   '" in message


def test_missing_item_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\n1,A\n,B\n")
    with pytest.raises(DataValidationError) as excinfo:
        Catalog.from_file(path)
    assert "items.csv: missing item ids (1 in all): row 2, column 'item_id': ''" in str(
        excinfo.value
    )


def test_non_numeric_years(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title,year\n1,A,1995\n2,B,\n3,C,soon\n")
    with pytest.raises(DataValidationError) as excinfo:
        Catalog.from_file(path, columns={"year": "year"})
    message = error_message(excinfo)
    assert "items.csv: non-numeric years (1 in all): row 3, column 'year': 'soon'" in message


def test_interactions_on_unknown_items(tmp_path: Path, catalog: Catalog) -> None:
    path = write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,ts\n1,1,4,100\n1,7,3,101\n2,2,5,102\n2,8,1,103\n",
    )
    with pytest.raises(DataValidationError) as excinfo:
        Interactions.from_file(path, columns=RATING_COLUMNS, catalog=catalog)
    message = error_message(excinfo)
    assert message.startswith("ratings.csv: interactions on items not in the catalog (2 in all): ")
    assert "row 2, column 'movieId': '7'" in message
    assert "row 4, column 'movieId': '8'" in message
    # without a catalog every item is fine
    assert len(Interactions.from_file(path, columns=RATING_COLUMNS)) == 4


def test_non_numeric_ratings(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,ts\n1,1,4.5,100\n1,2,good,101\n")
    with pytest.raises(DataValidationError) as excinfo:
        Interactions.from_file(path, columns=RATING_COLUMNS)
    message = error_message(excinfo)
    assert message.startswith("ratings.csv: non-numeric values (1 in all): ")
    assert "row 2, column 'rating': 'good'" in message


def test_missing_ratings_are_invalid(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,ts\n1,1,,100\n")
    with pytest.raises(DataValidationError, match=r"row 1, column 'rating': ''"):
        Interactions.from_file(path, columns=RATING_COLUMNS)


def test_unparseable_timestamps(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,ts\n1,1,4,964982703\n1,2,3,2018-09-24T10:00:00Z\n2,1,5,yesterday\n",
    )
    with pytest.raises(DataValidationError) as excinfo:
        Interactions.from_file(path, columns=RATING_COLUMNS)
    message = error_message(excinfo)
    assert message.startswith("ratings.csv: unparseable timestamps (1 in all): ")
    assert "row 3, column 'ts': 'yesterday'" in message
    assert "ISO-8601" in message


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\n1,Toy Story\n2,Café\n", "latin-1")
    with pytest.raises(DataValidationError) as excinfo:
        Catalog.from_file(path)
    message = error_message(excinfo)
    assert message.startswith("items.csv: not valid utf-8 text at line 3 ")
    assert r"b'\xe9'" in message  # the offending byte
    assert "encoding='latin-1'" in message
    # and the suggested fix works
    assert Catalog.from_file(path, encoding="latin-1").titles.tolist() == ["Toy Story", "Café"]


def test_missing_columns_names_missing_and_present(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", "userId,movieId,stars\n1,1,4\n")
    with pytest.raises(DataValidationError) as excinfo:
        Interactions.from_file(
            path, columns={"user": "userId", "item": "movieId", "value": "rating"}
        )
    message = error_message(excinfo)
    assert message.startswith("ratings.csv: missing column(s) 'rating' (for value)")
    assert "['userId', 'movieId', 'stars']" in message
    assert "columns=" in message  # the fix


def test_missing_default_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "id,name\n1,A\n")
    with pytest.raises(DataValidationError) as excinfo:
        Catalog.from_file(path)
    message = error_message(excinfo)
    assert "'item_id' (for item)" in message
    assert "'title' (for title)" in message
    assert "['id', 'name']" in message


def test_missing_text_column(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\n1,A\n")
    with pytest.raises(DataValidationError, match=r"items\.csv: missing column\(s\) 'plot'"):
        Catalog.from_file(path, text_columns=["plot"])


def test_unknown_column_field_is_a_config_error() -> None:
    frame = pd.DataFrame({"item_id": [1], "title": ["A"]})
    with pytest.raises(ConfigError, match=r"unknown field 'titel'.*allowed fields"):
        Catalog.from_frame(frame, columns={"titel": "title"})


def test_malformed_jsonl_line_names_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.jsonl",
        '{"item_id": 1, "title": "A"}\n{"item_id": 2, "title": "B"\n{"item_id": 3, "title": "C"}\n',
    )
    with pytest.raises(DataValidationError) as excinfo:
        Catalog.from_file(path)
    message = error_message(excinfo)
    assert message.startswith("items.jsonl: lines that are not JSON objects (1 in all): row 2: ")
    assert '{"item_id": 2' in message


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write(tmp_path / "items.jsonl", '{"item_id": 1, "title": "A"}\n[2, "B"]\n')
    with pytest.raises(DataValidationError, match=r"items\.jsonl: .*row 2: '\[2, \"B\"\]'"):
        Catalog.from_file(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "items.xlsx", "item_id,title\n1,A\n")
    with pytest.raises(DataValidationError) as excinfo:
        Catalog.from_file(path)
    message = error_message(excinfo)
    assert message.startswith("items.xlsx: unknown file type '.xlsx'")
    assert ".parquet" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file not found"):
        Interactions.from_file(tmp_path / "nope.csv")


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "items.parquet", "item_id,title\n1,A\n")
    with pytest.raises(DataValidationError, match=r"items\.parquet: not a readable Parquet"):
        Catalog.from_file(path)


def test_ragged_csv_row(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\n1,A\n2,B,extra,fields\n")
    with pytest.raises(DataValidationError, match=r"items\.csv: malformed delimited text"):
        read_table(path)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match=r"items\.csv: the file is empty"):
        read_table(write(tmp_path / "items.csv", ""))


def test_movielens_duplicate_movie_names_movies_csv(ml_small_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ml-copy"
    folder.mkdir()
    lines = (ml_small_path / "movies.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    n_movies = len(lines) - 1
    (folder / "movies.csv").write_text("".join([*lines, lines[2]]), encoding="utf-8")
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")

    with pytest.raises(DataValidationError) as excinfo:
        load_movielens(folder)

    message = error_message(excinfo)
    assert message.startswith("movies.csv: duplicate item ids (1 in all): ")
    assert f"row {n_movies + 1}, column 'movieId': '2'" in message
    # with on_invalid="drop" the first row is kept
    ml = load_movielens(folder, on_invalid="drop")
    assert len(ml.catalog) == n_movies
    assert ml.catalog.titles[ml.catalog.position(2)] == "Jumanji (1995)"


def test_movielens_rating_on_unknown_movie_names_ratings_csv(tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    folder.mkdir()
    write(folder / "movies.csv", "movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,5,3.0,2\n")
    with pytest.raises(DataValidationError) as excinfo:
        load_movielens(folder)
    assert str(excinfo.value).startswith(
        "ratings.csv: interactions on items not in the catalog (1 in all): "
        "row 2, column 'movieId': '5'"
    )


# message shape ---------------------------------------------------------------------------


def test_message_shows_three_examples_then_the_rest_count(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i},x{i},100\n" for i in range(1, 8))
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,ts\n" + rows)
    with pytest.raises(DataValidationError) as excinfo:
        Interactions.from_file(path, columns=RATING_COLUMNS)
    message = error_message(excinfo)
    assert "(7 in all)" in message
    assert message.count("row ") == 3
    assert "row 1, column 'rating': 'x1'; row 2, column 'rating': 'x2'; row 3" in message
    assert "'x4'" not in message
    assert "(and 4 more)" in message
    assert excinfo.value.count == 7


def test_message_with_exactly_three_problems_has_no_rest(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i},x{i},100\n" for i in range(1, 4))
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,ts\n" + rows)
    with pytest.raises(DataValidationError) as excinfo:
        Interactions.from_file(path, columns=RATING_COLUMNS)
    message = error_message(excinfo)
    assert message.count("row ") == 3
    assert "more)" not in message


def test_long_values_are_shortened(tmp_path: Path) -> None:
    long_value = "y" * 200
    path = write(tmp_path / "ratings.csv", f"userId,movieId,rating,ts\n1,1,{long_value},100\n")
    with pytest.raises(DataValidationError) as excinfo:
        Interactions.from_file(path, columns=RATING_COLUMNS)
    message = error_message(excinfo)
    assert long_value not in message
    assert "y" * 57 + "..." in message


# on_invalid ------------------------------------------------------------------------------


def test_drop_keeps_exactly_the_good_rows(
    tmp_path: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,ts\n"
        "1,1,4,100\n"  # good
        ",2,3,101\n"  # missing user
        "1,2,bad,102\n"  # non-numeric rating
        "2,3,5,later\n"  # bad timestamp
        "2,9,2,104\n"  # unknown item
        "3,2,1,2018-09-24T10:00:00Z\n"  # good
        "3,3,bad,never\n",  # two problems: dropped once
    )
    with caplog.at_level(logging.WARNING, logger="ragrec.data"):
        inter = Interactions.from_file(
            path, columns=RATING_COLUMNS, catalog=catalog, on_invalid="drop"
        )
    assert inter.user_ids.tolist() == [1, 3]
    assert inter.item_ids.tolist() == [1, 2]
    assert inter.values.tolist() == [4.0, 1.0]
    assert inter.timestamps.tolist() == [100, 1537783200]

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert all(r.getMessage().startswith("ratings.csv: dropped ") for r in warnings)
    messages = {r.getMessage() for r in warnings}
    assert messages == {
        "ratings.csv: dropped 1 rows with missing user ids",
        "ratings.csv: dropped 2 rows with non-numeric values",
        "ratings.csv: dropped 1 rows with unparseable timestamps",
        "ratings.csv: dropped 1 rows with interactions on items not in the catalog",
    }


def test_drop_duplicates_keeps_first_and_logs_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path / "items.csv",
        "item_id,title\n1,A\n2,B\n1,A2\n3,\n2,B2\n4,D\n",
    )
    with caplog.at_level(logging.WARNING, logger="ragrec.data"):
        cat = Catalog.from_file(path, on_invalid="drop")
    assert cat.item_ids.tolist() == [1, 2, 4]
    assert cat.titles.tolist() == ["A", "B", "D"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "items.csv: dropped 2 rows with duplicate item ids" in messages
    assert "items.csv: dropped 1 rows with missing titles" in messages


def test_drop_with_nothing_bad_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "items.csv", "item_id,title\n1,A\n2,B\n")
    with caplog.at_level(logging.WARNING, logger="ragrec.data"):
        strict = Catalog.from_file(path)
        lenient = Catalog.from_file(path, on_invalid="drop")
    assert lenient.item_ids.tolist() == strict.item_ids.tolist() == [1, 2]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("value", ["skip", "raise", "", "DROP"])
def test_invalid_on_invalid_is_a_config_error(value: str) -> None:
    frame = pd.DataFrame({"user_id": [1], "item_id": [1]})
    with pytest.raises(ConfigError, match=rf"on_invalid={value!r}.*'error'.*'drop'"):
        Interactions.from_frame(frame, on_invalid=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_invalid"):
        Catalog.from_frame(frame.assign(title="A"), on_invalid=value)  # type: ignore[arg-type]


# input formats ---------------------------------------------------------------------------

ITEMS = pd.DataFrame(
    {
        "mid": [10, 20, 30, 40],
        "name": ["Toy Story (1995)", "Café (2001)", "Heat", " Up (2009) "],
        "g": ["Comedy|Animation", "(no genres listed)", "", "Drama"],
        "yr": [1995.0, 2001.0, np.nan, 2009.0],
        "plot": ["toys", "coffee", None, "balloons"],
    }
)
ITEM_COLUMNS = {"item": "mid", "title": "name", "genres": "g", "year": "yr", "description": "plot"}

EVENTS = pd.DataFrame(
    {
        "who": ["u1", "u1", "u2", "u3"],
        "what": [10, 20, 10, 40],
        "stars": [4.5, 3.0, 5.0, 1.0],
        "when": [964982703, 964982224, 1537783200, 1537783201],
        "how": ["rating", "click", "rating", "like"],
    }
)
EVENT_COLUMNS = {
    "user": "who",
    "item": "what",
    "value": "stars",
    "timestamp": "when",
    "kind": "how",
}


def _write_all(frame: pd.DataFrame, folder: Path, stem: str) -> list[Path]:
    csv = folder / f"{stem}.csv"
    frame.to_csv(csv, index=False)
    jsonl = folder / f"{stem}.jsonl"
    records = json.loads(frame.to_json(orient="records"))
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    parquet = folder / f"{stem}.parquet"
    frame.to_parquet(parquet)
    tsv = folder / f"{stem}.tsv"
    frame.to_csv(tsv, index=False, sep="\t")
    return [csv, jsonl, parquet, tsv]


def _catalog_state(cat: Catalog) -> tuple[object, ...]:
    return (
        cat.item_ids.dtype,
        cat.item_ids.tolist(),
        cat.titles.tolist(),
        np.nan_to_num(cat.years, nan=-1).tolist(),
        cat.categories,
        {k: v.tolist() for k, v in cat.text.items()},
    )


def _interactions_state(inter: Interactions) -> tuple[object, ...]:
    return (
        inter.user_ids.dtype,
        inter.user_ids.tolist(),
        inter.item_ids.dtype,
        inter.item_ids.tolist(),
        inter.values.tolist(),
        inter.timestamps.tolist(),
        inter.kinds.tolist(),
    )


def test_all_formats_give_the_same_catalog(tmp_path: Path) -> None:
    expected = Catalog.from_frame(ITEMS, columns=ITEM_COLUMNS)
    assert expected.item_ids.tolist() == [10, 20, 30, 40]
    assert expected.titles.tolist() == ["Toy Story (1995)", "Café (2001)", "Heat", "Up (2009)"]
    assert expected.categories == (("Comedy", "Animation"), (), (), ("Drama",))
    assert expected.text["description"].tolist() == ["toys", "coffee", "", "balloons"]
    for path in _write_all(ITEMS, tmp_path, "items"):
        got = Catalog.from_file(path, columns=ITEM_COLUMNS)
        assert _catalog_state(got) == _catalog_state(expected), path.name


def test_all_formats_give_the_same_interactions(tmp_path: Path) -> None:
    expected = Interactions.from_frame(EVENTS, columns=EVENT_COLUMNS)
    assert expected.user_ids.tolist() == ["u1", "u1", "u2", "u3"]
    assert expected.kinds.tolist() == ["rating", "click", "rating", "like"]
    for path in _write_all(EVENTS, tmp_path, "events"):
        got = Interactions.from_file(path, columns=EVENT_COLUMNS)
        assert _interactions_state(got) == _interactions_state(expected), path.name


def test_iso_and_datetime_timestamps_are_unix_seconds() -> None:
    unix = [964982703, 1537783200]
    iso = ["2000-07-30T18:45:03Z", "2018-09-24T12:00:00+02:00"]
    frames = {
        "unix": pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "timestamp": unix}),
        "unix-text": pd.DataFrame(
            {"user_id": [1, 2], "item_id": [1, 2], "timestamp": [str(t) for t in unix]}
        ),
        "iso": pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "timestamp": iso}),
        "datetime64": pd.DataFrame(
            {
                "user_id": [1, 2],
                "item_id": [1, 2],
                "timestamp": pd.to_datetime(iso, utc=True, format="ISO8601"),
            }
        ),
    }
    for name, frame in frames.items():
        got = Interactions.from_frame(frame, columns={"timestamp": "timestamp"})
        assert got.timestamps.tolist() == unix, name


def test_no_timestamp_column_uses_row_order() -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [3, 2, 1]})
    inter = Interactions.from_frame(frame)
    assert inter.timestamps.tolist() == [0, 1, 2]
    assert inter.values.tolist() == [1.0, 1.0, 1.0]
    assert inter.kinds.tolist() == ["rating"] * 3
    assert Interactions.from_frame(frame, default_kind="click").kinds.tolist() == ["click"] * 3


# immutability ----------------------------------------------------------------------------


def test_catalog_arrays_are_read_only() -> None:
    cat = Catalog.from_frame(ITEMS, columns=ITEM_COLUMNS, text_columns=["plot"])
    for name, array in [
        ("item_ids", cat.item_ids),
        ("titles", cat.titles),
        ("years", cat.years),
        *((f"text[{k}]", v) for k, v in cat.text.items()),
    ]:
        with pytest.raises(ValueError, match="read-only"):
            array[0] = array[1]
        assert not array.flags.writeable, name
    with pytest.raises(TypeError):
        cat.text["new"] = np.array(["x"] * len(cat))  # type: ignore[index]
    with pytest.raises(AttributeError):
        cat.titles = np.array([])  # type: ignore[misc]


def test_interactions_arrays_are_read_only() -> None:
    inter = Interactions.from_frame(EVENTS, columns=EVENT_COLUMNS)
    for name in ("user_ids", "item_ids", "values", "timestamps", "kinds"):
        array = getattr(inter, name)
        with pytest.raises(ValueError, match="read-only"):
            array[0] = array[1]
    assert not inter.select(np.array([0, 2])).values.flags.writeable


def test_arrays_passed_in_are_copied_not_frozen() -> None:
    users = np.array([1, 2, 3])
    inter = Interactions(
        user_ids=users, item_ids=np.array([1, 1, 2]), values=np.ones(3), timestamps=np.arange(3)
    )
    users[0] = 99  # the caller's array stays writable, and the table is unaffected
    assert inter.user_ids.tolist() == [1, 2, 3]


@pytest.mark.parametrize("on_invalid", ["error", "drop"])
def test_input_frames_are_not_modified(on_invalid: str) -> None:
    items = pd.concat([ITEMS, ITEMS.iloc[[0]]], ignore_index=True)  # a duplicate id
    items_before = items.copy(deep=True)
    events = EVENTS.assign(stars=["4.5", "n/a", 5.0, 1])  # mixed object column
    events_before = events.copy(deep=True)

    if on_invalid == "error":
        with pytest.raises(DataValidationError):
            Catalog.from_frame(items, columns=ITEM_COLUMNS, text_columns=["plot"])
        with pytest.raises(DataValidationError):
            Interactions.from_frame(events, columns=EVENT_COLUMNS)
    else:
        cat = Catalog.from_frame(
            items, columns=ITEM_COLUMNS, text_columns=["plot"], on_invalid="drop"
        )
        inter = Interactions.from_frame(
            events, columns=EVENT_COLUMNS, catalog=cat, on_invalid="drop"
        )
        assert len(cat) == 4
        assert len(inter) == 3

    pd.testing.assert_frame_equal(items, items_before)
    pd.testing.assert_frame_equal(events, events_before)


def test_movielens_copy_with_extra_file_still_loads(ml_small_path: Path, tmp_path: Path) -> None:
    """A copy of the shared data with an unrelated file loads the same as the original."""
    folder = tmp_path / "ml"
    folder.mkdir()
    for name in ("movies.csv", "ratings.csv"):
        shutil.copyfile(ml_small_path / name, folder / name)
    (folder / "notes.txt").write_text("not data\n")
    ml = load_movielens(folder)
    assert len(ml.catalog) == 9_742
    assert len(ml.interactions) == 100_836
    assert "tags" not in ml.catalog.text  # no tags.csv: no tags field
