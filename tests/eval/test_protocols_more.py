"""Tests for ragrec.eval._protocol: the llmrank-c20, temporal and custom protocols and
protocol options, on hand-made sets, files in tmp_path and ml-small."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ragrec.config import EvalConfig
from ragrec.data import Catalog, Interactions, MovieLens
from ragrec.errors import ConfigError
from ragrec.eval._protocol import (
    PROTOCOLS,
    ProtocolData,
    custom_protocol,
    llmrank_c20_protocol,
    prepare_protocol,
    protocol_options,
    temporal_protocol,
)


def _catalog(ids: list[int]) -> Catalog:
    return Catalog(
        item_ids=np.array(ids), titles=np.array([f"Movie {i}" for i in ids], dtype=object)
    )


def _rows(rows: list[tuple[int, int, int]]) -> Interactions:
    users, items, stamps = (np.array(col) for col in zip(*rows, strict=True))
    return Interactions(
        user_ids=users, item_ids=items, values=np.ones(len(rows)), timestamps=stamps
    )


def _ids(data: ProtocolData, positions: np.ndarray) -> list[int]:
    return data.catalog.item_ids[positions].tolist()


def _seen(frame: pd.DataFrame) -> dict[Any, set[Any]]:
    return {u: set(g.tolist()) for u, g in frame.groupby("user_id")["item_id"]}


# llmrank-c20 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def c20(ml_small: MovieLens) -> ProtocolData:
    return prepare_protocol("llmrank-c20", ml_small.catalog, ml_small.interactions)


class TestC20:
    def test_same_data_as_llamarec(self, c20: ProtocolData, llamarec_data: ProtocolData) -> None:
        assert c20.name == "llmrank-c20"
        assert c20.options == {"k": 5, "negatives": 19, "seed": 0}
        assert c20.steps == llamarec_data.steps
        assert c20.catalog.item_ids.tolist() == llamarec_data.catalog.item_ids.tolist()
        assert c20.fit_rows("test") is c20.train
        for split in ("validation", "test"):
            a, b = c20.cases(split), llamarec_data.cases(split)
            assert a.user_ids.tolist() == b.user_ids.tolist()
            assert a.targets.tolist() == b.targets.tolist()
            assert [h.tolist() for h in a.histories] == [h.tolist() for h in b.histories]
            assert b.candidates == ()

    @pytest.mark.parametrize("split", ["validation", "test"])
    def test_twenty_candidates_target_once_none_seen(
        self,
        ml_small: MovieLens,
        c20: ProtocolData,
        split: str,
    ) -> None:
        seen = _seen(ml_small.interactions.to_frame())
        cases = c20.cases(split)  # type: ignore[arg-type]
        assert len(cases.candidates) == len(cases) == 610
        for user, target, cands in zip(
            cases.user_ids.tolist(), cases.targets.tolist(), cases.candidates, strict=True
        ):
            assert cands.dtype == np.int64
            assert len(cands) == 20
            assert len(set(cands.tolist())) == 20
            assert cands.tolist().count(target) == 1
            assert ((cands >= 0) & (cands < len(c20.catalog))).all()
            negatives = set(_ids(c20, cands)) - {int(c20.catalog.item_ids[target])}
            assert len(negatives) == 19
            assert not negatives & seen[user]

    def test_deterministic_and_seeded(self, ml_small: MovieLens, c20: ProtocolData) -> None:
        again = prepare_protocol("llmrank-c20", ml_small.catalog, ml_small.interactions, seed=0)
        other = prepare_protocol("llmrank-c20", ml_small.catalog, ml_small.interactions, seed=1)
        for split in ("validation", "test"):
            a, b, c = (d.cases(split).candidates for d in (c20, again, other))
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
            assert sum(np.array_equal(x, y) for x, y in zip(a, c, strict=True)) == 0

    def test_validation_and_test_are_independent(self, c20: ProtocolData) -> None:
        val, test = c20.cases("validation"), c20.cases("test")
        overlaps = []
        for i in range(len(val)):
            negs_val = set(val.candidates[i].tolist()) - {int(val.targets[i])}
            negs_test = set(test.candidates[i].tolist()) - {int(test.targets[i])}
            overlaps.append(len(negs_val & negs_test))
        # independent draws of 19 from ~3,500 share about 0.1 items; a shared stream 19
        assert np.mean(overlaps) < 0.5

    def test_target_position_is_uniform(self, c20: ProtocolData) -> None:
        slots = np.zeros(20, dtype=np.int64)
        for split in ("validation", "test"):
            cases = c20.cases(split)
            for target, cands in zip(cases.targets, cases.candidates, strict=True):
                slots[int(np.flatnonzero(cands == target)[0])] += 1
        assert slots.sum() == 1220
        assert stats.chisquare(slots).pvalue > 0.001

    def test_take_and_head_keep_candidates(self, c20: ProtocolData) -> None:
        cases = c20.cases("test")
        picked = cases.take(np.array([5, 2]))
        assert picked.user_ids.tolist() == cases.user_ids[[5, 2]].tolist()
        assert [c.tolist() for c in picked.candidates] == [
            cases.candidates[5].tolist(),
            cases.candidates[2].tolist(),
        ]
        assert len(cases.head(3).candidates) == 3

    def test_negatives_option(self, ml_small: MovieLens) -> None:
        data = prepare_protocol(
            "llmrank-c20", ml_small.catalog, ml_small.interactions, negatives=4, seed=7
        )
        assert data.options == {"k": 5, "negatives": 4, "seed": 7}
        assert {len(c) for c in data.cases("validation").candidates} == {5}

    def test_too_few_unseen_items(self) -> None:
        catalog = _catalog([1, 2, 3, 4])
        rows = _rows([(u, i, t) for u in (1, 2) for t, i in enumerate([1, 2, 3, 4])])
        with pytest.raises(ConfigError, match=r"user 1 has 0 unseen items.*negatives=19"):
            llmrank_c20_protocol(catalog, rows, k=1)

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"negatives": 0}, "negatives"),
            ({"seed": -1}, "seed"),
            ({"negatives": "many"}, "negatives"),
        ],
    )
    def test_bad_options(self, options: dict[str, object], match: str) -> None:
        catalog = _catalog([1, 2])
        with pytest.raises(ConfigError, match=match):
            prepare_protocol("llmrank-c20", catalog, _rows([(1, 1, 1)]), **options)
        if not isinstance(next(iter(options.values())), str):  # a str is a type error here
            with pytest.raises(ConfigError, match=match):
                llmrank_c20_protocol(catalog, _rows([(1, 1, 1)]), **options)  # type: ignore[arg-type]


# temporal ----------------------------------------------------------------------------------

# Timestamps 1..20: with quantiles 0.5 and 0.75 the cutoffs are 11 and 16. User 4 has no
# training row (cold start in validation), user 5 only a test row; item 60 occurs only in
# the validation period, item 70 only in the test period, item 80 nowhere.
TEMPORAL_ROWS = [
    (1, 10, 1),
    (1, 20, 2),
    (2, 10, 3),
    (2, 30, 4),
    (3, 20, 5),
    (1, 30, 6),
    (2, 20, 7),
    (3, 10, 8),
    (1, 40, 9),
    (3, 30, 10),
    (1, 50, 11),
    (2, 40, 12),
    (1, 60, 13),
    (4, 10, 14),
    (2, 50, 15),
    (1, 70, 16),
    (3, 40, 17),
    (5, 20, 18),
    (4, 20, 19),
    (2, 60, 20),
]


@pytest.fixture(scope="module")
def temporal_tiny() -> ProtocolData:
    rows = _rows(TEMPORAL_ROWS[::-1])
    return temporal_protocol(
        _catalog([80, 70, 60, 50, 40, 30, 20, 10]),
        rows,
        validation_quantile=0.5,
        test_quantile=0.75,
    )


@pytest.fixture(scope="module")
def temporal_ml(ml_small: MovieLens) -> ProtocolData:
    return prepare_protocol("temporal", ml_small.catalog, ml_small.interactions)


class TestTemporalTiny:
    def test_cutoffs_and_catalog(self, temporal_tiny: ProtocolData) -> None:
        assert temporal_tiny.name == "temporal"
        assert temporal_tiny.options["validation_cutoff"] == 11
        assert temporal_tiny.options["test_cutoff"] == 16
        assert temporal_tiny.catalog.item_ids.tolist() == [70, 60, 50, 40, 30, 20, 10]

    def test_validation_cases(self, temporal_tiny: ProtocolData) -> None:
        cases = temporal_tiny.cases("validation")
        assert cases.user_ids.tolist() == [1, 2, 4]
        assert _ids(temporal_tiny, cases.targets) == [50, 40, 10]
        assert [_ids(temporal_tiny, h) for h in cases.histories] == [
            [10, 20, 30, 40],
            [10, 30, 20],
            [],
        ]
        assert cases.candidates == ()

    def test_test_cases(self, temporal_tiny: ProtocolData) -> None:
        cases = temporal_tiny.cases("test")
        assert cases.user_ids.tolist() == [1, 2, 3, 4, 5]
        assert _ids(temporal_tiny, cases.targets) == [70, 60, 40, 20, 20]
        assert [_ids(temporal_tiny, h) for h in cases.histories] == [
            [10, 20, 30, 40, 50, 60],
            [10, 30, 20, 40, 50],
            [20, 10, 30],
            [10],
            [],
        ]
        assert [len(r) for r in cases.ratings] == [6, 5, 3, 1, 0]

    def test_fit_rows(self, temporal_tiny: ProtocolData) -> None:
        assert temporal_tiny.fit_rows("validation") is temporal_tiny.train
        assert sorted(temporal_tiny.train.timestamps.tolist()) == list(range(1, 11))
        assert sorted(temporal_tiny.fit_rows("test").timestamps.tolist()) == list(range(1, 16))

    def test_ties_at_a_cutoff_go_to_the_later_period(self) -> None:
        rows = _rows([(1, 10, 1), (1, 20, 2), (2, 10, 2), (2, 20, 3), (1, 30, 3), (2, 30, 4)])
        data = temporal_protocol(
            _catalog([10, 20, 30]), rows, validation_quantile=0.2, test_quantile=0.6
        )
        assert (data.options["validation_cutoff"], data.options["test_cutoff"]) == (2, 3)
        assert data.train.timestamps.tolist() == [1]
        assert sorted(data.test.timestamps.tolist()) == [3, 3]

    @pytest.mark.parametrize(
        ("val", "test", "match"),
        [
            (0.9, 0.8, "validation_quantile < test_quantile"),
            (0.0, 0.5, "0 < validation_quantile"),
            (0.5, 1.0, "test_quantile < 1"),
            (0.01, 0.02, "training is empty"),
            (0.97, 0.98, "validation period is empty"),
        ],
    )
    def test_bad_quantiles(self, val: float, test: float, match: str) -> None:
        rows = _rows([(1, 10, 1)] * 2 + [(1, 20, 2)] * 59 + [(1, 30, 3)] * 39)
        with pytest.raises(ConfigError, match=match):
            temporal_protocol(
                _catalog([10, 20, 30]), rows, validation_quantile=val, test_quantile=test
            )

    def test_options_checked_by_name(self) -> None:
        with pytest.raises(ConfigError, match="test_quantile"):
            prepare_protocol("temporal", _catalog([1]), _rows([(1, 1, 1)]), test_quantile=1.5)


class TestTemporalMovieLensSmall:
    def test_sizes(self, temporal_ml: ProtocolData) -> None:
        assert len(temporal_ml.catalog) == 9724
        assert len(temporal_ml.cases("validation")) == 62
        assert len(temporal_ml.cases("test")) == 74

    def test_against_a_reference(self, ml_small: MovieLens, temporal_ml: ProtocolData) -> None:
        frame = ml_small.interactions.to_frame()
        val_cut, test_cut = (
            int(np.quantile(frame["timestamp"], q, method="higher")) for q in (0.8, 0.9)
        )
        assert temporal_ml.options["validation_cutoff"] == val_cut
        assert temporal_ml.options["test_cutoff"] == test_cut
        frame = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
        catalog = temporal_ml.catalog
        for split, lo, hi in (("validation", val_cut, test_cut), ("test", test_cut, None)):
            cases = temporal_ml.cases(split)  # type: ignore[arg-type]
            period = frame[(frame["timestamp"] >= lo) & (frame["timestamp"] < (hi or 2**62))]
            first = period.groupby("user_id").head(1).set_index("user_id")
            assert cases.user_ids.tolist() == first.index.tolist()
            for user, target, history in zip(
                cases.user_ids.tolist(), cases.targets, cases.histories, strict=True
            ):
                row = first.loc[user]
                assert catalog.item_ids[target] == row["item_id"]
                assert lo <= row["timestamp"]
                before = frame[(frame["user_id"] == user) & (frame["timestamp"] < lo)]
                assert catalog.item_ids[history].tolist() == before["item_id"].tolist()
                assert (before["timestamp"] < row["timestamp"]).all()

    def test_no_test_target_before_the_cutoff(self, temporal_ml: ProtocolData) -> None:
        test_cut = temporal_ml.options["test_cutoff"]
        val_cut = temporal_ml.options["validation_cutoff"]
        assert (temporal_ml.test.timestamps >= test_cut).all()
        assert (temporal_ml.validation.timestamps >= val_cut).all()
        assert (temporal_ml.validation.timestamps < test_cut).all()

    def test_fit_rows_exclude_the_future(
        self, ml_small: MovieLens, temporal_ml: ProtocolData
    ) -> None:
        stamps = ml_small.interactions.timestamps
        for split, cut in (
            ("validation", temporal_ml.options["validation_cutoff"]),
            ("test", temporal_ml.options["test_cutoff"]),
        ):
            fit = temporal_ml.fit_rows(split)  # type: ignore[arg-type]
            assert (fit.timestamps < cut).all()
            assert len(fit) == int((stamps < cut).sum())

    def test_cold_start_users_kept(self, temporal_ml: ProtocolData) -> None:
        cases = temporal_ml.cases("test")
        empty = [len(h) == 0 for h in cases.histories]
        assert 0 < sum(empty) < len(cases)
        train_users = set(temporal_ml.fit_rows("test").user_ids.tolist())
        for user, is_empty in zip(cases.user_ids.tolist(), empty, strict=True):
            assert is_empty == (user not in train_users)


# custom ------------------------------------------------------------------------------------


def _write(rows: Interactions, path: Path) -> Path:
    frame = rows.to_frame().rename(columns={"value": "rating"}).drop(columns="kind")
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


class TestCustom:
    def test_round_trip_reproduces_llamarec(
        self,
        tmp_path: Path,
        ml_small: MovieLens,
        llamarec_data: ProtocolData,
    ) -> None:
        files = {
            "train": _write(llamarec_data.train, tmp_path / "train.parquet"),
            "validation": _write(llamarec_data.validation, tmp_path / "val.csv"),
            "test": _write(llamarec_data.test, tmp_path / "test.csv"),
        }
        data = prepare_protocol(
            "custom",
            ml_small.catalog,
            ml_small.interactions,
            **{k: str(v) for k, v in files.items()},
        )
        assert data.name == "custom"
        assert data.options == {k: str(v) for k, v in files.items()}
        assert data.catalog.item_ids.tolist() == llamarec_data.catalog.item_ids.tolist()
        assert len(data.fit_rows("test")) == len(llamarec_data.train)
        for split in ("validation", "test"):
            a, b = data.cases(split), llamarec_data.cases(split)
            assert a.user_ids.tolist() == b.user_ids.tolist()
            assert a.targets.tolist() == b.targets.tolist()
            assert [h.tolist() for h in a.histories] == [h.tolist() for h in b.histories]
            assert [r.tolist() for r in a.ratings] == [r.tolist() for r in b.ratings]

    def test_first_row_by_time_is_the_target_and_cold_start(self, tmp_path: Path) -> None:
        pd.DataFrame(
            {"user_id": [1, 1, 2], "item_id": [10, 20, 10], "timestamp": [1, 2, 3]}
        ).to_csv(tmp_path / "train.csv", index=False)
        pd.DataFrame(
            {"user_id": [1, 1, 2], "item_id": [40, 30, 20], "timestamp": [9, 5, 6]}
        ).to_csv(tmp_path / "val.csv", index=False)
        pd.DataFrame(
            {"user_id": [3, 1, 1], "item_id": [10, 50, 60], "timestamp": [7, 12, 11]}
        ).to_csv(tmp_path / "test.csv", index=False)
        data = custom_protocol(
            _catalog([10, 20, 30, 40, 50, 60, 70]),
            train=tmp_path / "train.csv",
            validation=tmp_path / "val.csv",
            test=tmp_path / "test.csv",
        )
        assert data.catalog.item_ids.tolist() == [10, 20, 30, 40, 50, 60]
        val, test = data.cases("validation"), data.cases("test")
        assert val.user_ids.tolist() == [1, 2]
        assert _ids(data, val.targets) == [30, 20]
        assert [_ids(data, h) for h in val.histories] == [[10, 20], [10]]
        assert test.user_ids.tolist() == [1, 3]
        assert _ids(data, test.targets) == [60, 10]
        # every validation-file row of the user joins the test history
        assert [_ids(data, h) for h in test.histories] == [[10, 20, 30, 40], []]
        assert data.fit_rows("test") is data.train

    def test_no_timestamps_means_file_order(self, tmp_path: Path) -> None:
        for name, items in (("train", [30, 10]), ("val", [20]), ("test", [40])):
            pd.DataFrame({"user_id": [1] * len(items), "item_id": items}).to_csv(
                tmp_path / f"{name}.csv", index=False
            )
        data = custom_protocol(
            _catalog([10, 20, 30, 40]),
            train=tmp_path / "train.csv",
            validation=tmp_path / "val.csv",
            test=tmp_path / "test.csv",
        )
        assert [_ids(data, h) for h in data.cases("test").histories] == [[30, 10, 20]]

    @pytest.fixture
    def files(self, tmp_path: Path) -> dict[str, str]:
        frame = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 20], "timestamp": [1, 2]})
        out = {}
        for name in ("train", "validation", "test"):
            frame.to_csv(tmp_path / f"{name}.csv", index=False)
            out[name] = str(tmp_path / f"{name}.csv")
        return out

    def test_unknown_item(self, tmp_path: Path, files: dict[str, str]) -> None:
        pd.DataFrame(
            {"user_id": [1, 2, 2], "item_id": [10, 99, 98], "timestamp": [3, 4, 5]}
        ).to_csv(files["test"], index=False)
        with pytest.raises(ConfigError) as info:
            custom_protocol(_catalog([10, 20]), **files)
        message = str(info.value)
        assert "option test=" in message
        assert "test.csv" in message
        assert "row 2 has item_id 99" in message
        assert "2 such rows" in message
        assert "remove those rows" in message

    def test_missing_file(self, files: dict[str, str]) -> None:
        files["validation"] = "/nonexistent/val.csv"
        with pytest.raises(ConfigError, match=r"option validation='/nonexistent/val.csv'"):
            custom_protocol(_catalog([10, 20]), **files)

    def test_missing_column(self, files: dict[str, str]) -> None:
        pd.DataFrame({"user": [1], "item_id": [10], "timestamp": [1]}).to_csv(
            files["train"], index=False
        )
        with pytest.raises(ConfigError, match=r"option train=.*user_id"):
            custom_protocol(_catalog([10, 20]), **files)

    def test_unreadable_suffix(self, tmp_path: Path, files: dict[str, str]) -> None:
        (tmp_path / "train.xlsx").write_text("x")
        files["train"] = str(tmp_path / "train.xlsx")
        with pytest.raises(ConfigError, match=r"option train=.*unknown file type"):
            custom_protocol(_catalog([10, 20]), **files)

    def test_timestamps_in_some_files_only(self, files: dict[str, str]) -> None:
        pd.DataFrame({"user_id": [1], "item_id": [10]}).to_csv(files["test"], index=False)
        with pytest.raises(ConfigError, match="timestamps or none"):
            custom_protocol(_catalog([10, 20]), **files)

    def test_empty_target_file(self, files: dict[str, str]) -> None:
        Path(files["test"]).write_text("user_id,item_id,timestamp\n")
        with pytest.raises(ConfigError, match=r"test file .* has no rows"):
            custom_protocol(_catalog([10, 20]), **files)

    def test_options_required(self, files: dict[str, str]) -> None:
        del files["test"]
        with pytest.raises(ConfigError, match=r"'custom' needs option\(s\) test"):
            prepare_protocol("custom", _catalog([10, 20]), _rows([(1, 10, 1)]), **files)


# by name -----------------------------------------------------------------------------------


class TestByName:
    def test_all_protocols_listed(self) -> None:
        assert PROTOCOLS == ("llamarec", "llmrank-c20", "temporal", "custom")

    def test_options_and_defaults(self) -> None:
        assert protocol_options("llamarec") == {"k": 5}
        assert protocol_options("llmrank-c20") == {"k": 5, "negatives": 19, "seed": 0}
        assert protocol_options("temporal") == {
            "validation_quantile": 0.8,
            "test_quantile": 0.9,
        }
        assert protocol_options("custom") == {"train": None, "validation": None, "test": None}
        with pytest.raises(ConfigError, match="'nope' is not known"):
            protocol_options("nope")

    @pytest.mark.parametrize("name", PROTOCOLS)
    def test_unknown_option(self, name: str) -> None:
        allowed = ", ".join(protocol_options(name))
        with pytest.raises(ConfigError) as info:
            prepare_protocol(name, _catalog([1]), _rows([(1, 1, 1)]), sed=1)
        assert f"protocol {name!r} has no option 'sed'; allowed: {allowed}" in str(info.value)

    def test_llamarec_k_option(self) -> None:
        rows = _rows([(u, i, i) for u in (1, 2, 3) for i in (1, 2, 3)])
        data = prepare_protocol("llamarec", _catalog([1, 2, 3]), rows, k=3)
        assert data.options == {"k": 3}
        assert len(data.cases("test")) == 3

    def test_config_accepts_every_protocol(self) -> None:
        for name in PROTOCOLS:
            assert EvalConfig(protocol=name).protocol == name
        config = EvalConfig(protocol="temporal", protocol_options={"test_quantile": 0.95})
        assert config.protocol_options == {"test_quantile": 0.95}
        assert EvalConfig().protocol_options == {}
        with pytest.raises(ValueError, match="protocol"):
            EvalConfig(protocol="sasrec")

    def test_split_keys_checked(self, llamarec_data: ProtocolData) -> None:
        with pytest.raises(ConfigError, match="'train'"):
            ProtocolData(
                name="x",
                catalog=llamarec_data.catalog,
                train=llamarec_data.train,
                validation=llamarec_data.validation,
                test=llamarec_data.test,
                steps=(),
                fit={"train": llamarec_data.train},  # type: ignore[dict-item]
            )
