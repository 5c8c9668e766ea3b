"""Column parsing that reports bad values by row and column, for the loaders."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from ragrec.errors import ConfigError, DataValidationError, Problem

logger = logging.getLogger(__name__)

OnInvalid = Literal["error", "drop"]

__all__ = ["OnInvalid", "RowFilter", "check_on_invalid"]


def check_on_invalid(on_invalid: str) -> OnInvalid:
    """Validate an ``on_invalid`` policy value."""
    if on_invalid not in ("error", "drop"):
        raise ConfigError(
            f"on_invalid={on_invalid!r} is not allowed; use 'error' (stop at the first "
            "kind of invalid row) or 'drop' (skip invalid rows, counted and logged)"
        )
    return on_invalid  # type: ignore[return-value]


def is_blank(values: pd.Series) -> np.ndarray:
    """True where a value is missing or only whitespace."""
    isna = values.isna().to_numpy()
    as_text = values.astype("string").fillna("").str.strip()
    return isna | (as_text == "").to_numpy(dtype=bool)


class RowFilter:
    """Collects invalid rows of one table and applies the ``on_invalid`` policy.

    Each check either raises :class:`DataValidationError` (policy ``"error"``) or
    marks the rows to drop (policy ``"drop"``); :meth:`keep` gives the surviving rows.

    Args:
        source: Name of the input, used in messages.
        n_rows: Number of data rows.
        on_invalid: ``"error"`` or ``"drop"``.
        row_numbers: 1-based row number of each data row (defaults to 1..n).
    """

    def __init__(
        self,
        source: str,
        n_rows: int,
        on_invalid: OnInvalid,
        row_numbers: np.ndarray | None = None,
    ) -> None:
        self.source = source
        self.on_invalid = check_on_invalid(on_invalid)
        self.bad = np.zeros(n_rows, dtype=bool)
        self.row_numbers = (
            np.arange(1, n_rows + 1) if row_numbers is None else np.asarray(row_numbers)
        )
        self.dropped: dict[str, int] = {}

    def flag(
        self,
        mask: np.ndarray,
        *,
        reason: str,
        column: str | None,
        values: Sequence[object] | pd.Series,
        fix: str,
    ) -> None:
        """Report the rows where ``mask`` is true as invalid for ``reason``."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        positions = np.flatnonzero(mask)
        vals = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
        if self.on_invalid == "error":
            problems = [
                Problem(int(self.row_numbers[p]), column, _text(vals[p])) for p in positions
            ]
            raise DataValidationError(self.source, reason, problems, fix=fix)
        new = mask & ~self.bad
        self.bad |= mask
        if new.any():
            self.dropped[reason] = self.dropped.get(reason, 0) + int(new.sum())
            logger.warning("%s: dropped %d rows with %s", self.source, int(new.sum()), reason)

    def keep(self) -> np.ndarray:
        """Boolean mask of the rows that passed every check."""
        return ~self.bad


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def parse_numbers(
    rows: RowFilter, frame: pd.DataFrame, column: str, *, what: str, fix: str
) -> np.ndarray:
    """Parse a numeric column; non-numeric and missing values are invalid."""
    raw = frame[column]
    parsed = pd.to_numeric(raw, errors="coerce")
    values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    rows.flag(
        ~np.isfinite(values), reason=f"non-numeric {what}", column=column, values=raw, fix=fix
    )
    return values


def parse_timestamps(rows: RowFilter, frame: pd.DataFrame, column: str) -> np.ndarray:
    """Parse Unix seconds or ISO-8601 date-times into int64 Unix seconds."""
    raw = frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        # to_numeric would give counts of the column's unit (us or ns), not seconds
        numeric = np.full(len(raw), np.nan)
    else:
        numeric = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    result = np.zeros(len(raw), dtype=np.int64)
    ok = np.isfinite(numeric)
    result[ok] = numeric[ok].astype(np.int64)
    if not ok.all():
        rest = raw[~ok]
        text = rest.astype("string")
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        good = parsed.notna().to_numpy(dtype=bool)
        # pandas 3 parses strings at us (not ns) resolution: divide by the real unit
        epoch = pd.Timestamp(0, tz="UTC")
        seconds = (parsed[good] - epoch) // pd.Timedelta(seconds=1) if good.any() else []
        idx = np.flatnonzero(~ok)
        result[idx[good]] = np.asarray(seconds, dtype=np.int64)
        bad = np.zeros(len(raw), dtype=bool)
        bad[idx[~good]] = True
        rows.flag(
            bad,
            reason="unparseable timestamps",
            column=column,
            values=raw,
            fix="use Unix seconds or ISO-8601 date-times (2018-09-24T10:00:00Z)",
        )
    return result


def parse_ids(rows: RowFilter, frame: pd.DataFrame, column: str, *, what: str) -> np.ndarray:
    """Parse an id column: integers stay int64, anything else becomes text."""
    raw = frame[column]
    rows.flag(
        is_blank(raw),
        reason=f"missing {what} ids",
        column=column,
        values=raw,
        fix=f"give every row a {what} id, or pass on_invalid='drop'",
    )
    return normalise_ids(raw)


def normalise_ids(raw: pd.Series | np.ndarray | Sequence[object]) -> np.ndarray:
    """Ids as int64 when every value is an integer, else as text (object array)."""
    series = pd.Series(raw)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    text = series.astype("string").fillna("").str.strip()
    as_int = pd.to_numeric(text, errors="coerce")
    nonblank = (text != "").to_numpy(dtype=bool)
    finite = as_int.notna().to_numpy(dtype=bool)
    if (finite | ~nonblank).all() and nonblank.any():
        floats = as_int.to_numpy(dtype=np.float64, na_value=-1.0)
        if np.all(floats == np.floor(floats)):
            ints = floats.astype(np.int64)
            # "0545010225" must stay text: as an int it would no longer match its item.
            if (
                pd.Series(ints).astype(str).to_numpy()[nonblank] == text.to_numpy()[nonblank]
            ).all():
                return ints
    return text.to_numpy(dtype=object)
