"""``ragrec eval --items F --interactions F``: every protocol on a user's own files, read
with the column options of ``ragrec index`` (the e-commerce example in examples/shop)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .test_cli import _assert_one_line_error, _invoke, _plain

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
COLUMNS = [
    "--items",
    str(SHOP / "items.csv"),
    "--interactions",
    str(SHOP / "events.csv"),
    "--item-columns",
    "item=sku,title=name,genres=category",
    "--interaction-columns",
    "user=customer,item=sku,timestamp=ts,kind=action",
]


def _summary(folder: Path) -> dict[str, object]:
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("protocol", "ranker"),
    [("llamarec", "itemknn"), ("llmrank-c20", "popularity"), ("temporal", "popularity")],
)
def test_every_protocol_runs_on_own_files(protocol: str, ranker: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _invoke(
        "eval", *COLUMNS, "--protocol", protocol, "--ranker", ranker, "--out", str(out),
        "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = _summary(out)
    assert summary["protocol"] == protocol
    assert summary["dataset"] == "items.csv + events.csv"
    assert summary["users"] > 0
    assert (out / "report.md").is_file()
    assert "report:" in _plain(result.stdout)


def test_own_files_give_the_same_split_as_the_python_api(tmp_path: Path) -> None:
    from ragrec.data import Catalog, Interactions
    from ragrec.eval import llamarec_protocol

    catalog = Catalog.from_file(
        SHOP / "items.csv", columns={"item": "sku", "title": "name", "genres": "category"}
    )
    rows = Interactions.from_file(
        SHOP / "events.csv",
        columns={"user": "customer", "item": "sku", "timestamp": "ts", "kind": "action"},
        catalog=catalog,
    )
    expected = llamarec_protocol(catalog, rows)
    out = tmp_path / "run"
    result = _invoke("eval", *COLUMNS, "--ranker", "popularity", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert _summary(out)["users"] == len(expected.cases("test"))


def test_custom_protocol_takes_the_catalog_from_items(tmp_path: Path) -> None:
    events = pd.read_csv(SHOP / "events.csv").rename(
        columns={"customer": "user_id", "sku": "item_id"}
    )
    events = events.sort_values(["user_id", "ts"], kind="stable")
    last = events.groupby("user_id").cumcount(ascending=False)
    events[last >= 2][["user_id", "item_id"]].to_csv(tmp_path / "train.csv", index=False)
    events[last == 1][["user_id", "item_id"]].to_csv(tmp_path / "valid.csv", index=False)
    events[last == 0][["user_id", "item_id"]].to_csv(tmp_path / "test.csv", index=False)
    out = tmp_path / "run"
    result = _invoke(
        "eval", "--items", str(SHOP / "items.csv"), "--item-columns", "item=sku,title=name",
        "--protocol", "custom",
        "--protocol-option", f"train={tmp_path / 'train.csv'}",
        "--protocol-option", f"validation={tmp_path / 'valid.csv'}",
        "--protocol-option", f"test={tmp_path / 'test.csv'}",
        "--ranker", "popularity", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _summary(out)["users"] == events["user_id"].nunique()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--items", str(SHOP / "items.csv")], ("--items needs --interactions", "'llamarec'")),
        (["--interactions", str(SHOP / "events.csv")], ("--interactions needs --items",)),
        ([*COLUMNS, "--data", "movielens-small"], ("either --data or --items",)),
        (["--item-columns", "item=sku"], ("pass those files too",)),
        ([*COLUMNS[:4], "--item-columns", "item=sku"], ("items.csv", "'title'")),
        ([*COLUMNS[:6], "--interaction-columns", "user"], ("'user' is not FIELD=COLUMN",)),
        ([*COLUMNS, "--protocol", "custom"], ("drop --interactions",)),
    ],
)
def test_file_option_errors(args: list[str], needles: tuple[str, ...], tmp_path: Path) -> None:
    result = _invoke("eval", *args, "--out", str(tmp_path / "o"), "--no-progress")
    _assert_one_line_error(result, *needles)
    assert not (tmp_path / "o").exists()
