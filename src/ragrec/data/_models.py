"""Catalog and interaction tables: typed, immutable, columnar."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from ragrec.data._io import read_table
from ragrec.data._validate import (
    OnInvalid,
    RowFilter,
    check_on_invalid,
    is_blank,
    normalise_ids,
    parse_ids,
    parse_numbers,
    parse_timestamps,
)
from ragrec.errors import ConfigError, DataValidationError

logger = logging.getLogger(__name__)

__all__ = ["Catalog", "InteractionKind", "Interactions"]

_T = TypeVar("_T")

InteractionKind = str
"""Event kind of an interaction: ``"rating"``, ``"click"``, ``"like"``, ``"purchase"``, ..."""


def _frozen(array: np.ndarray) -> np.ndarray:
    # A read-only view of a read-only private copy: the flag cannot be turned back on.
    owner = np.array(array, copy=True)
    owner.flags.writeable = False
    view = owner.view()
    view.flags.writeable = False
    return view


def _frozen_ids(ids: np.ndarray) -> np.ndarray:
    """Ids normalised (:func:`normalise_ids`; an empty array as it is) and read-only."""
    return _frozen(normalise_ids(ids) if len(ids) else ids)


def _from_file(
    from_frame: Callable[..., _T], path: str | Path, encoding: str, **options: Any
) -> _T:
    """``from_frame`` of the table in ``path`` (CSV/TSV, JSONL or Parquet, by suffix),
    with the file's name as the source."""
    path = Path(path)
    return from_frame(read_table(path, encoding=encoding), source=path.name, **options)


def _check_mapping(
    columns: Mapping[str, str] | None, allowed: Sequence[str], defaults: Mapping[str, str]
) -> dict[str, str]:
    mapping = dict(defaults)
    for key, value in (columns or {}).items():
        if key not in allowed:
            raise ConfigError(
                f"columns has unknown field {key!r}; allowed fields: {', '.join(allowed)} "
                f"(map each to a column of your table, e.g. {{'item': 'movieId'}})"
            )
        mapping[key] = value
    return mapping


def _require_columns(source: str, frame: pd.DataFrame, needed: Mapping[str, str]) -> None:
    missing = {f: c for f, c in needed.items() if c not in frame.columns}
    if missing:
        listed = ", ".join(f"{c!r} (for {f})" for f, c in missing.items())
        raise DataValidationError(
            source,
            f"missing column(s) {listed}; the table has {list(map(str, frame.columns))}",
            fix="rename the columns or pass columns={field: column} to map them",
        )


@dataclass(frozen=True, eq=False)
class Catalog:
    """The items that can be recommended, one row per item.

    Build it with :meth:`from_frame` or :meth:`from_file`; arrays are read-only.

    Attributes:
        item_ids: Item ids (int64, or text as an object array), unique.
        titles: Item titles, non-empty.
        text: Extra text fields by name (``"genres"``, ``"tags"``, ``"description"``),
            each an array of strings aligned with ``item_ids`` (``""`` when absent).
        categories: Per item, a tuple of category labels (genres).
        years: Release year per item, ``nan`` when unknown.
    """

    item_ids: np.ndarray
    titles: np.ndarray
    text: Mapping[str, np.ndarray] = field(default_factory=dict)
    categories: tuple[tuple[str, ...], ...] = ()
    years: np.ndarray = field(default_factory=lambda: np.empty(0))

    FIELDS: ClassVar[tuple[str, ...]] = ("item", "title", "genres", "year", "description")

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        set_ = object.__setattr__
        set_(self, "item_ids", _frozen_ids(self.item_ids))
        set_(self, "titles", _frozen(np.asarray(self.titles, dtype=object)))
        categories = self.categories or tuple(() for _ in range(n))
        set_(self, "categories", tuple(tuple(c) for c in categories))
        years = self.years if len(self.years) else np.full(n, np.nan)
        set_(self, "years", _frozen(np.asarray(years, dtype=np.float64)))
        text = {k: _frozen(np.asarray(v, dtype=object)) for k, v in self.text.items()}
        set_(self, "text", MappingProxyType(text))
        for name, arr in (
            ("titles", self.titles),
            ("categories", self.categories),
            ("years", self.years),
            *((f"text[{k!r}]", v) for k, v in text.items()),
        ):
            if len(arr) != n:
                raise ConfigError(f"Catalog.{name} has {len(arr)} entries, item_ids has {n}")
        index = pd.Index(self.item_ids)
        if not index.is_unique:
            dup = index[index.duplicated()].unique()[:3].tolist()
            raise ConfigError(f"Catalog.item_ids must be unique; duplicated: {dup}")
        set_(self, "_index", index)

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        columns: Mapping[str, str] | None = None,
        text_columns: Sequence[str] = (),
        category_sep: str = "|",
        on_invalid: OnInvalid = "error",
        source: str = "catalog",
        row_numbers: np.ndarray | None = None,
    ) -> Catalog:
        """Build a catalog from a DataFrame.

        Args:
            frame: One row per item. Not modified.
            columns: Field -> column mapping for ``item`` (default ``"item_id"``), ``title``
                (``"title"``), optional ``genres`` (categories joined by ``category_sep``),
                ``year`` and ``description``.
            text_columns: Further columns folded into the item text, by their own names.
            category_sep: Separator inside the genres column.
            on_invalid: ``"error"`` raises on the first kind of invalid row; ``"drop"``
                skips invalid rows (duplicate ids keep their first row), counted and logged.
            source: Name of the input for messages (a file name).
            row_numbers: 1-based row numbers of the frame's rows, for messages.

        Returns:
            The catalog.

        Raises:
            DataValidationError: Missing columns, missing or duplicate ids, missing titles,
                non-numeric years.
        """
        check_on_invalid(on_invalid)
        mapping = _check_mapping(columns, cls.FIELDS, {"item": "item_id", "title": "title"})
        _require_columns(source, frame, {f: mapping[f] for f in mapping})
        for col in text_columns:
            _require_columns(source, frame, {col: col})
        rows = RowFilter(source, len(frame), on_invalid, row_numbers)
        ids = parse_ids(rows, frame, mapping["item"], what="item")
        id_series = pd.Series(ids)
        dup = id_series.duplicated(keep="first").to_numpy() & rows.keep()
        rows.flag(
            dup,
            reason="duplicate item ids",
            column=mapping["item"],
            values=frame[mapping["item"]],
            fix="give each item one row, or pass on_invalid='drop' to keep the first",
        )
        rows.flag(
            is_blank(frame[mapping["title"]]),
            reason="missing titles",
            column=mapping["title"],
            values=frame[mapping["title"]],
            fix="give every item a title, or pass on_invalid='drop' to skip those items",
        )
        years = np.full(len(frame), np.nan)
        if "year" in mapping:
            raw = frame[mapping["year"]]
            blank = is_blank(raw)
            parsed = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            rows.flag(
                ~blank & ~np.isfinite(parsed),
                reason="non-numeric years",
                column=mapping["year"],
                values=raw,
                fix="write years as numbers (1995) or leave them empty",
            )
            years = parsed
        keep = rows.keep()
        text: dict[str, np.ndarray] = {}
        cats: list[tuple[str, ...]] = [() for _ in range(int(keep.sum()))]
        if "genres" in mapping:
            genres = frame[mapping["genres"]].astype("string").fillna("")[keep]
            cats = [_split_categories(g, category_sep) for g in genres]
            text["genres"] = np.array([", ".join(c) for c in cats], dtype=object)
        if "description" in mapping:
            text["description"] = _as_text(frame[mapping["description"]][keep])
        for col in text_columns:
            text[col] = _as_text(frame[col][keep])
        titles = frame[mapping["title"]].astype("string").str.strip()[keep]
        return cls(
            item_ids=ids[keep],
            titles=titles.to_numpy(dtype=object),
            text=text,
            categories=tuple(cats),
            years=years[keep],
        )

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        columns: Mapping[str, str] | None = None,
        text_columns: Sequence[str] = (),
        category_sep: str = "|",
        on_invalid: OnInvalid = "error",
        encoding: str = "utf-8",
    ) -> Catalog:
        """Build a catalog from a CSV/TSV, JSONL or Parquet file (by suffix).

        See :meth:`from_frame` for the arguments; ``encoding`` applies to text files.
        """
        return _from_file(
            cls.from_frame,
            path,
            encoding,
            columns=columns,
            text_columns=text_columns,
            category_sep=category_sep,
            on_invalid=on_invalid,
        )

    # access ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def index(self) -> pd.Index:
        """The item ids as a pandas Index (id -> position)."""
        return self._index  # type: ignore[attr-defined]

    def positions(self, item_ids: Iterable[Any] | np.ndarray) -> np.ndarray:
        """Positions (0..len-1) of the given ids; -1 for ids not in the catalog."""
        ids = np.asarray(list(item_ids) if not isinstance(item_ids, np.ndarray) else item_ids)
        if ids.size == 0:
            return np.empty(0, dtype=np.int64)
        if self.item_ids.dtype.kind in "iu" and ids.dtype.kind not in "iu":
            ids = normalise_ids(ids)
        return np.asarray(self.index.get_indexer(pd.Index(ids)), dtype=np.int64)

    def position(self, item_id: Any) -> int:
        """Position of one id; raises ``KeyError`` naming the id when unknown."""
        pos = int(self.positions([item_id])[0])
        if pos < 0:
            raise KeyError(f"item id {item_id!r} is not in the catalog ({len(self)} items)")
        return pos

    def __contains__(self, item_id: object) -> bool:
        return bool(self.positions([item_id])[0] >= 0)

    def subset(self, positions: np.ndarray) -> Catalog:
        """A catalog of the items at ``positions`` (in that order)."""
        pos = np.asarray(positions, dtype=np.int64)
        return Catalog(
            item_ids=self.item_ids[pos],
            titles=self.titles[pos],
            text={k: v[pos] for k, v in self.text.items()},
            categories=tuple(self.categories[i] for i in pos),
            years=self.years[pos],
        )

    def to_frame(self, *, text_prefix: str = "") -> pd.DataFrame:
        """A DataFrame copy with ``item_id``, ``title``, ``year``, text fields (their names
        prefixed with ``text_prefix``, so a text field cannot clash with the others),
        ``categories``."""
        data: dict[str, Any] = {"item_id": self.item_ids, "title": self.titles, "year": self.years}
        data.update({f"{text_prefix}{k}": v for k, v in self.text.items()})
        data["categories"] = [list(c) for c in self.categories]
        return pd.DataFrame(data)


def _split_categories(value: str, sep: str) -> tuple[str, ...]:
    parts = [p.strip() for p in str(value).split(sep)]
    return tuple(p for p in parts if p and p not in _NO_GENRE)


_NO_GENRE = frozenset({"(no genres listed)", "unknown"})


def _as_text(values: pd.Series) -> np.ndarray:
    return values.astype("string").fillna("").str.strip().to_numpy(dtype=object)


@dataclass(frozen=True, eq=False)
class Interactions:
    """User-item events, one row each; arrays are read-only and aligned.

    Attributes:
        user_ids: User id per row (int64 or text).
        item_ids: Item id per row (int64 or text).
        values: Rating or other value per row (float64; 1.0 for implicit events).
        timestamps: Unix seconds per row (int64).
        kinds: Event kind per row (``"rating"``, ``"click"``, ...).
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray
    kinds: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))

    FIELDS: ClassVar[tuple[str, ...]] = ("user", "item", "value", "timestamp", "kind")

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        set_ = object.__setattr__
        set_(self, "user_ids", _frozen_ids(self.user_ids))
        set_(self, "item_ids", _frozen_ids(self.item_ids))
        set_(self, "values", _frozen(np.asarray(self.values, dtype=np.float64)))
        set_(self, "timestamps", _frozen(np.asarray(self.timestamps, dtype=np.int64)))
        kinds = self.kinds if len(self.kinds) else np.full(n, "rating", dtype=object)
        set_(self, "kinds", _frozen(np.asarray(kinds, dtype=object)))
        for name in ("item_ids", "values", "timestamps", "kinds"):
            if len(getattr(self, name)) != n:
                raise ConfigError(
                    f"Interactions.{name} has {len(getattr(self, name))} rows, user_ids has {n}"
                )
        if not np.isfinite(self.values).all():
            raise ConfigError("Interactions.values must be finite numbers")

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        columns: Mapping[str, str] | None = None,
        catalog: Catalog | None = None,
        default_kind: str = "rating",
        on_invalid: OnInvalid = "error",
        source: str = "interactions",
        row_numbers: np.ndarray | None = None,
    ) -> Interactions:
        """Build interactions from a DataFrame.

        Args:
            frame: One row per event. Not modified.
            columns: Field -> column mapping for ``user`` (default ``"user_id"``), ``item``
                (``"item_id"``), optional ``value`` (default 1.0 per row), ``timestamp``
                (Unix seconds or ISO-8601; default: row order) and ``kind``.
            catalog: When given, rows whose item is not in it are invalid.
            default_kind: Kind of every row when no ``kind`` column is mapped.
            on_invalid: ``"error"`` or ``"drop"`` (invalid rows skipped, counted, logged).
            source: Name of the input for messages.
            row_numbers: 1-based row numbers of the frame's rows, for messages.

        Raises:
            DataValidationError: Missing columns, missing ids, non-numeric values,
                unparseable timestamps, items not in ``catalog``.
        """
        check_on_invalid(on_invalid)
        mapping = _check_mapping(columns, cls.FIELDS, {"user": "user_id", "item": "item_id"})
        _require_columns(source, frame, mapping)
        rows = RowFilter(source, len(frame), on_invalid, row_numbers)
        users = parse_ids(rows, frame, mapping["user"], what="user")
        items = parse_ids(rows, frame, mapping["item"], what="item")
        if "value" in mapping:
            values = parse_numbers(
                rows,
                frame,
                mapping["value"],
                what="values",
                fix=f"column {mapping['value']!r} must hold numbers (4.5), not text",
            )
        else:
            values = np.ones(len(frame))
        if "timestamp" in mapping:
            stamps = parse_timestamps(rows, frame, mapping["timestamp"])
        else:
            logger.info("%s: no timestamp column; using row order as time", source)
            stamps = np.arange(len(frame), dtype=np.int64)
        if "kind" in mapping:
            kinds = _as_text(frame[mapping["kind"]])
        else:
            kinds = np.full(len(frame), default_kind, dtype=object)
        if catalog is not None:
            unknown = (catalog.positions(items) < 0) & rows.keep()
            rows.flag(
                unknown,
                reason="interactions on items not in the catalog",
                column=mapping["item"],
                values=frame[mapping["item"]],
                fix="add those items to the catalog, or pass on_invalid='drop'",
            )
        keep = rows.keep()
        return cls(
            user_ids=users[keep],
            item_ids=items[keep],
            values=values[keep],
            timestamps=stamps[keep],
            kinds=kinds[keep],
        )

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        columns: Mapping[str, str] | None = None,
        catalog: Catalog | None = None,
        default_kind: str = "rating",
        on_invalid: OnInvalid = "error",
        encoding: str = "utf-8",
    ) -> Interactions:
        """Build interactions from a CSV/TSV, JSONL or Parquet file (by suffix).

        See :meth:`from_frame` for the arguments.
        """
        return _from_file(
            cls.from_frame,
            path,
            encoding,
            columns=columns,
            catalog=catalog,
            default_kind=default_kind,
            on_invalid=on_invalid,
        )

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def n_users(self) -> int:
        """Number of distinct users."""
        return int(pd.unique(self.user_ids).size)

    @property
    def n_items(self) -> int:
        """Number of distinct items."""
        return int(pd.unique(self.item_ids).size)

    def users(self) -> np.ndarray:
        """Distinct user ids, sorted."""
        return np.sort(pd.unique(self.user_ids))

    def select(self, mask_or_positions: np.ndarray) -> Interactions:
        """The rows picked by a boolean mask or an array of positions."""
        sel = np.asarray(mask_or_positions)
        return Interactions(
            user_ids=self.user_ids[sel],
            item_ids=self.item_ids[sel],
            values=self.values[sel],
            timestamps=self.timestamps[sel],
            kinds=self.kinds[sel],
        )

    def concat(self, other: Interactions) -> Interactions:
        """These rows followed by ``other``'s."""
        return Interactions(
            user_ids=np.concatenate([self.user_ids, other.user_ids]),
            item_ids=np.concatenate([self.item_ids, other.item_ids]),
            values=np.concatenate([self.values, other.values]),
            timestamps=np.concatenate([self.timestamps, other.timestamps]),
            kinds=np.concatenate([self.kinds, other.kinds]),
        )

    def restrict_items(self, catalog: Catalog) -> Interactions:
        """Only the rows whose item is in ``catalog``."""
        return self.select(catalog.positions(self.item_ids) >= 0)

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame copy with ``user_id``, ``item_id``, ``value``, ``timestamp``, ``kind``."""
        return pd.DataFrame(
            {
                "user_id": self.user_ids,
                "item_id": self.item_ids,
                "value": self.values,
                "timestamp": self.timestamps,
                "kind": self.kinds,
            }
        )
