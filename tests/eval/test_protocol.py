"""Tests for ragrec.eval._protocol: the LlamaRec protocol, on a hand-made set and ml-small."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval import (
    EvalCases,
    ProtocolData,
    ProtocolStep,
    llamarec_protocol,
    prepare_protocol,
)

# A hand-made dataset for a 3-core. Item 60 has a blank title, item 70 is not in the
# catalog; user 5 survives the first round of the core only through item 90, which
# users 6 and 7 (one row each) make look popular, so only an iterative core drops them.
# Timestamp ties: user 1 at 100 (10, 20) and at 300 (30 then 40: validation before
# test by item id, rows given the other way round); user 4 has all rows at 5.
ROWS = [
    (1, 40, 300),
    (1, 30, 300),
    (1, 20, 100),
    (1, 10, 100),
    (2, 20, 50),
    (2, 10, 60),
    (2, 50, 70),
    (2, 30, 70),
    (3, 50, 10),
    (3, 40, 20),
    (3, 10, 30),
    (3, 20, 40),
    (4, 50, 5),
    (4, 40, 5),
    (4, 30, 5),
    (4, 60, 1),
    (5, 10, 1),
    (5, 20, 2),
    (5, 70, 3),
    (5, 90, 4),
    (6, 90, 1),
    (7, 90, 1),
]
CATALOG_IDS = [50, 40, 10, 60, 20, 90, 30]


def _tiny() -> tuple[Catalog, Interactions]:
    titles = {60: "  "}
    catalog = Catalog(
        item_ids=np.array(CATALOG_IDS),
        titles=np.array([titles.get(i, f"Movie {i}") for i in CATALOG_IDS], dtype=object),
    )
    users, items, stamps = (np.array(col) for col in zip(*ROWS, strict=True))
    interactions = Interactions(
        user_ids=users, item_ids=items, values=np.ones(len(ROWS)), timestamps=stamps
    )
    return catalog, interactions


@pytest.fixture(scope="module")
def tiny() -> ProtocolData:
    catalog, interactions = _tiny()
    return llamarec_protocol(catalog, interactions, k=3)


def _ids(data: ProtocolData, positions: np.ndarray) -> list[int]:
    return data.catalog.item_ids[positions].tolist()


class TestTiny:
    def test_steps(self, tiny: ProtocolData) -> None:
        assert tiny.name == "llamarec"
        assert tiny.steps == (
            ProtocolStep("loaded", 7, 8, 22),
            ProtocolStep("items with a title", 7, 6, 20),
            ProtocolStep("3-core (iterative)", 4, 5, 15),
            ProtocolStep("train", 4, 5, 7),
            ProtocolStep("validation targets", 4, 3, 4),
            ProtocolStep("test targets", 4, 3, 4),
        )

    def test_catalog_is_the_surviving_items_in_catalog_order(self, tiny: ProtocolData) -> None:
        assert tiny.catalog.item_ids.tolist() == [50, 40, 10, 20, 30]
        assert tiny.catalog.titles.tolist() == [f"Movie {i}" for i in [50, 40, 10, 20, 30]]

    def test_targets_break_timestamp_ties_by_item_id(self, tiny: ProtocolData) -> None:
        def by_user(rows: Interactions) -> dict[int, int]:
            return dict(zip(rows.user_ids.tolist(), rows.item_ids.tolist(), strict=True))

        assert by_user(tiny.validation) == {1: 30, 2: 30, 3: 10, 4: 40}
        assert by_user(tiny.test) == {1: 40, 2: 50, 3: 20, 4: 50}
        train = sorted(zip(tiny.train.user_ids.tolist(), tiny.train.item_ids.tolist(), strict=True))
        assert train == [(1, 10), (1, 20), (2, 10), (2, 20), (3, 40), (3, 50), (4, 30)]

    def test_validation_cases(self, tiny: ProtocolData) -> None:
        cases = tiny.cases("validation")
        assert isinstance(cases, EvalCases)
        assert cases.split == "validation"
        assert len(cases) == 4
        assert cases.user_ids.tolist() == [1, 2, 3, 4]
        assert [_ids(tiny, h) for h in cases.histories] == [[10, 20], [20, 10], [50, 40], [30]]
        assert _ids(tiny, cases.targets) == [30, 30, 10, 40]

    def test_test_cases_add_the_validation_item_last(self, tiny: ProtocolData) -> None:
        cases = tiny.cases("test")
        assert cases.split == "test"
        assert cases.user_ids.tolist() == [1, 2, 3, 4]
        assert [_ids(tiny, h) for h in cases.histories] == [
            [10, 20, 30],
            [20, 10, 30],
            [50, 40, 10],
            [30, 40],
        ]
        assert _ids(tiny, cases.targets) == [40, 50, 20, 50]

    def test_fit_rows_are_the_training_rows_for_both_splits(self, tiny: ProtocolData) -> None:
        assert tiny.fit_rows("validation") is tiny.train
        assert tiny.fit_rows("test") is tiny.train

    def test_head(self, tiny: ProtocolData) -> None:
        head = tiny.cases("test").head(2)
        assert head.user_ids.tolist() == [1, 2]
        assert len(head.histories) == 2
        assert _ids(tiny, head.targets) == [40, 50]

    @pytest.mark.parametrize("split", ["tst", "train", ""])
    def test_invalid_split(self, tiny: ProtocolData, split: str) -> None:
        with pytest.raises(ConfigError, match=repr(split)):
            tiny.cases(split)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="validation"):
            tiny.fit_rows(split)  # type: ignore[arg-type]

    def test_inputs_unchanged_and_order_free(self) -> None:
        catalog, interactions = _tiny()
        first = llamarec_protocol(catalog, interactions, k=3)
        shuffled = interactions.select(np.random.default_rng(3).permutation(len(interactions)))
        second = llamarec_protocol(catalog, shuffled, k=3)
        assert catalog.item_ids.tolist() == CATALOG_IDS
        assert interactions.item_ids.tolist() == [r[1] for r in ROWS]
        for split in ("validation", "test"):
            a, b = first.cases(split), second.cases(split)
            assert a.user_ids.tolist() == b.user_ids.tolist()
            assert a.targets.tolist() == b.targets.tolist()
            assert [h.tolist() for h in a.histories] == [h.tolist() for h in b.histories]

    def test_nothing_survives(self) -> None:
        catalog, interactions = _tiny()
        with pytest.raises(ConfigError, match="100-core"):
            llamarec_protocol(catalog, interactions, k=100)

    def test_prepare_protocol(self) -> None:
        catalog, interactions = _tiny()
        # by name the protocol uses its published 5-core, which the tiny set does not survive
        with pytest.raises(ConfigError, match="5-core"):
            prepare_protocol("llamarec", catalog, interactions)
        with pytest.raises(ConfigError, match=r"'sasrec'.*llamarec"):
            prepare_protocol("sasrec", catalog, interactions)


def _reference_kcore(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """An independent iterative k-core: drop users and items below k until none are."""
    while True:
        item_counts = frame.groupby("item_id")["user_id"].transform("size")
        user_counts = frame.groupby("user_id")["item_id"].transform("size")
        keep = (item_counts >= k) & (user_counts >= k)
        if keep.all():
            return frame
        frame = frame[keep]


class TestMovieLensSmall:
    def test_sizes(self, llamarec_data: ProtocolData) -> None:
        core = llamarec_data.steps[2]
        assert (core.users, core.items, core.interactions) == (610, 3650, 90274)
        assert len(llamarec_data.catalog) == 3650
        assert len(llamarec_data.train) + 2 * 610 == 90274
        assert len(llamarec_data.validation) == len(llamarec_data.test) == 610
        for split in ("validation", "test"):
            assert len(llamarec_data.cases(split)) == 610

    def test_against_a_reference(self, ml_small, llamarec_data: ProtocolData) -> None:  # type: ignore[no-untyped-def]
        frame = _reference_kcore(ml_small.interactions.to_frame(), 5)
        assert len(frame) == 90274
        catalog = llamarec_data.catalog
        assert set(catalog.item_ids.tolist()) == set(frame["item_id"].tolist())
        # the protocol's catalog keeps the loaded catalog's order
        loaded = ml_small.catalog.positions(catalog.item_ids)
        assert (loaded >= 0).all()
        assert (np.diff(loaded) > 0).all()

        ordered = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
        per_user = {u: g.to_list() for u, g in ordered.groupby("user_id")["item_id"]}
        val, test = llamarec_data.cases("validation"), llamarec_data.cases("test")
        assert val.user_ids.tolist() == test.user_ids.tolist() == sorted(per_user)
        for i, user in enumerate(val.user_ids.tolist()):
            items = per_user[user]
            assert catalog.item_ids[test.targets[i]] == items[-1]
            assert catalog.item_ids[val.targets[i]] == items[-2]
            assert catalog.item_ids[val.histories[i]].tolist() == items[:-2]
            assert catalog.item_ids[test.histories[i]].tolist() == items[:-1]

    @pytest.mark.parametrize("split", ["validation", "test"])
    def test_no_target_in_its_history(self, llamarec_data: ProtocolData, split: str) -> None:
        cases = llamarec_data.cases(split)
        for history, target in zip(cases.histories, cases.targets, strict=True):
            assert target not in set(history.tolist())
            assert len(history) >= 3
