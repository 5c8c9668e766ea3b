"""Catalog and Interactions invariants that the loaders rely on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ragrec.data import Catalog, Interactions


def test_numeric_looking_ids_with_leading_zeros_stay_text() -> None:
    catalog = Catalog.from_frame(
        pd.DataFrame({"item_id": ["B00X", "0545010225"], "title": ["a", "b"]})
    )
    events = Interactions.from_frame(
        pd.DataFrame({"user_id": [1], "item_id": ["0545010225"]}), catalog=catalog
    )
    assert events.item_ids.tolist() == ["0545010225"]
    assert catalog.positions(events.item_ids).tolist() == [1]


def test_plain_integer_ids_become_int64() -> None:
    catalog = Catalog.from_frame(pd.DataFrame({"item_id": ["7", "12"], "title": ["a", "b"]}))
    assert catalog.item_ids.dtype == np.int64
    assert catalog.position(12) == 1
    assert 7 in catalog
    assert 8 not in catalog


def test_arrays_cannot_be_made_writable_again() -> None:
    catalog = Catalog.from_frame(pd.DataFrame({"item_id": [1, 2], "title": ["a", "b"]}))
    with pytest.raises(ValueError, match="WRITEABLE"):
        catalog.titles.flags.writeable = True
    with pytest.raises(ValueError, match="read-only"):
        catalog.titles[0] = "changed"
    assert catalog.titles[0] == "a"


def test_unknown_item_lookup_names_the_id() -> None:
    catalog = Catalog.from_frame(pd.DataFrame({"item_id": [1], "title": ["a"]}))
    with pytest.raises(KeyError, match="99"):
        catalog.position(99)
