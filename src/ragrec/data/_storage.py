"""Catalogs and interactions as a store saves them (parquet frames), and catalog changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ragrec.data._models import Catalog, Interactions
from ragrec.errors import ConfigError, DataValidationError

__all__ = [
    "STORE_TEXT_PREFIX",
    "add_to_catalog",
    "catalog_from_store_frame",
    "check_user_id",
    "concat_catalogs",
    "interactions_from_store_frame",
    "remove_from_catalog",
    "user_rows",
]

STORE_TEXT_PREFIX = "text:"
"""Text fields are saved as ``text:<name>`` columns (``Catalog.to_frame(text_prefix=...)``)."""


def catalog_from_store_frame(frame: pd.DataFrame) -> Catalog:
    """A catalog from the frame ``Catalog.to_frame(text_prefix=STORE_TEXT_PREFIX)`` wrote
    (ids, titles and years kept as saved, unlike :meth:`Catalog.from_frame`)."""
    text = {
        c.split(":", 1)[1]: frame[c].to_numpy(dtype=object)
        for c in frame.columns
        if c.startswith(STORE_TEXT_PREFIX)
    }
    return Catalog(
        item_ids=frame["item_id"].to_numpy(),
        titles=frame["title"].to_numpy(dtype=object),
        text=text,
        categories=tuple(tuple(str(x) for x in c) for c in frame["categories"]),
        years=frame["year"].to_numpy(dtype=np.float64),
    )


def interactions_from_store_frame(frame: pd.DataFrame) -> Interactions:
    """Interactions from the frame :meth:`Interactions.to_frame` wrote."""
    return Interactions(
        user_ids=frame["user_id"].to_numpy(),
        item_ids=frame["item_id"].to_numpy(),
        values=frame["value"].to_numpy(dtype=np.float64),
        timestamps=frame["timestamp"].to_numpy(),
        kinds=frame["kind"].to_numpy(dtype=object),
    )


def concat_catalogs(a: Catalog, b: Catalog) -> Catalog:
    """``a`` then ``b`` (a text field one of them lacks is empty text there)."""
    names = list(dict.fromkeys([*a.text, *b.text]))

    def field(c: Catalog, name: str) -> np.ndarray:
        return c.text.get(name, np.full(len(c), "", dtype=object))

    ids = (
        np.concatenate([a.item_ids, b.item_ids])
        if a.item_ids.dtype.kind == b.item_ids.dtype.kind
        else np.concatenate([a.item_ids.astype(object), b.item_ids.astype(object)])
    )
    return Catalog(
        item_ids=ids,
        titles=np.concatenate([a.titles, b.titles]),
        text={n: np.concatenate([field(a, n), field(b, n)]) for n in names},
        categories=(*a.categories, *b.categories),
        years=np.concatenate([a.years, b.years]),
    )


def add_to_catalog(catalog: Catalog, new: Catalog) -> Catalog:
    """``catalog`` with the ``new`` items after it.

    Raises:
        DataValidationError: An id of ``new`` is in ``catalog`` already.
    """
    clash = set(new.item_ids.tolist()) & set(catalog.item_ids.tolist())
    if clash:
        raise DataValidationError(
            "add_items",
            f"{len(clash)} item id(s) already in the catalog, e.g. {sorted(clash, key=str)[:3]}",
            fix="use new ids, or remove_items() the old ones first",
        )
    return concat_catalogs(catalog, new)


def remove_from_catalog(catalog: Catalog, item_ids: Sequence[Any]) -> Catalog:
    """``catalog`` without ``item_ids``.

    Raises:
        DataValidationError: An id is not in the catalog.
        ConfigError: Every item would be removed.
    """
    drop = catalog.positions(item_ids)
    for item_id, pos in zip(item_ids, drop.tolist(), strict=True):
        if pos < 0:
            raise DataValidationError(
                "request",
                f"item_id {item_id!r} is not in the catalog ({len(catalog)} items)",
                fix="use an id from the catalog, or add_items() first",
            )
    keep = np.setdiff1d(np.arange(len(catalog)), drop)
    if not len(keep):
        raise ConfigError(
            f"remove_items would remove all {len(catalog)} items; a recommender "
            "needs at least one (build a new store instead)"
        )
    return catalog.subset(keep)


def check_user_id(value: Any) -> int | str:
    """A user id to look up: an int (numpy ints too) or non-empty text.

    Raises:
        ConfigError: Anything else (names the value and its type).
    """
    plain = value.item() if isinstance(value, np.generic) else value
    if isinstance(plain, bool) or not isinstance(plain, int | str) or plain == "":
        raise ConfigError(
            f"user_id={value!r} ({type(value).__name__}): a user id is an int or non-empty "
            "text, the id the user's interactions and feedback use (1 and '1' differ)"
        )
    return plain


def user_rows(interactions: Interactions, user: int | str) -> np.ndarray:
    """Boolean mask of the rows of ``user`` (ids compare by type: 1 is not '1')."""
    user_ids = interactions.user_ids
    if user_ids.dtype.kind in "iu":
        if isinstance(user, str):
            return np.zeros(len(user_ids), dtype=bool)
        return np.asarray(user_ids == user, dtype=bool)
    return np.fromiter(
        (
            type(u.item() if isinstance(u, np.generic) else u) is type(user) and u == user
            for u in user_ids
        ),
        dtype=bool,
        count=len(user_ids),
    )
