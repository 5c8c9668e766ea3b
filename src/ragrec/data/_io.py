"""Reading tables from CSV/TSV, JSONL and Parquet files with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ragrec.errors import DataValidationError, Problem

__all__ = ["read_table"]

_TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": ",", ".dat": "::"}


def read_table(
    path: str | Path, *, encoding: str = "utf-8", sep: str | None = None, header: bool = True
) -> pd.DataFrame:
    """Read a table as text columns (values are parsed and checked by the caller).

    Args:
        path: A ``.csv``, ``.tsv``, ``.dat``, ``.jsonl``/``.json`` or ``.parquet`` file;
            with ``sep`` given, any other name is read as delimited text (ml-100k's
            ``u.item``, ``u.data``).
        encoding: Text encoding of text files.
        sep: Field separator for delimited files (default by suffix).
        header: Whether a delimited file starts with a header row.

    Returns:
        A DataFrame; delimited files give string columns, empty cells as ``""``.

    Raises:
        DataValidationError: Missing file, unknown suffix, wrong encoding, malformed rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(
            str(path), "file not found", fix="check the path (it must be a file)"
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataValidationError(path.name, f"not a readable Parquet file ({exc})") from exc
    if sep is None and suffix not in _TEXT_SUFFIXES and suffix not in (".jsonl", ".json"):
        raise DataValidationError(
            path.name,
            f"unknown file type {suffix!r}",
            fix="use .csv, .tsv, .dat, .jsonl or .parquet",
        )
    try:
        raw = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        byte = path.read_bytes()[exc.start : exc.start + 1]
        raise DataValidationError(
            path.name,
            f"not valid {encoding} text at line {line} (byte {byte!r} at offset {exc.start})",
            fix="pass the file's encoding, e.g. encoding='latin-1'",
        ) from exc
    except LookupError as exc:
        raise DataValidationError(
            path.name, f"unknown encoding {encoding!r}", fix="use e.g. 'utf-8' or 'latin-1'"
        ) from exc
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path.name, raw)
    delimiter = sep or _TEXT_SUFFIXES[suffix]
    return read_delimited(path.name, raw, sep=delimiter, header=header)


def read_delimited(source: str, text: str, *, sep: str, header: bool = True) -> pd.DataFrame:
    """Parse delimited text into string columns, naming the line of a malformed row."""
    import io

    kwargs: dict[str, object] = {
        "dtype": str,
        "keep_default_na": False,
        "header": 0 if header else None,
    }
    if len(sep) > 1:
        kwargs.update(engine="python", sep=sep.replace("|", r"\|"))
    else:
        kwargs["sep"] = sep
    try:
        return pd.read_csv(io.StringIO(text), **kwargs)  # type: ignore[call-overload]
    except pd.errors.ParserError as exc:
        raise DataValidationError(
            source, f"malformed delimited text ({exc})", fix="check quoting and column counts"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(source, "the file is empty", fix="add a header row") from exc


def _read_jsonl(source: str, text: str) -> pd.DataFrame:
    records = []
    problems = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(n, None, f"{line[:40]} ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(n, None, line[:40]))
            continue
        records.append(obj)
    if problems:
        raise DataValidationError(
            source, "lines that are not JSON objects", problems, fix="write one object per line"
        )
    return pd.DataFrame.from_records(records)
