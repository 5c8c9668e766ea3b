"""``open_store``: a feedback store from a directory, a file or a PostgreSQL URL."""

from __future__ import annotations

import os
from pathlib import Path

from ragrec.errors import ConfigError
from ragrec.feedback._postgres import PostgresFeedbackStore, redact_url
from ragrec.feedback._sqlite import SQLiteFeedbackStore
from ragrec.feedback._store import FeedbackStore

__all__ = ["DEFAULT_DB_NAME", "open_store"]

DEFAULT_DB_NAME = "feedback.sqlite"
"""The SQLite file a store directory holds."""

_FILE_SUFFIXES = (".sqlite3", ".sqlite", ".db")


def open_store(location: str | os.PathLike[str]) -> FeedbackStore:
    """Open (creating when new) the feedback store at ``location``.

    Args:
        location: One of

            - ``postgresql://user:password@host:port/database`` (or ``postgres://``):
              a :class:`PostgresFeedbackStore`, for deployments that share feedback;
            - a directory, existing or not: a :class:`SQLiteFeedbackStore` in
              ``<dir>/feedback.sqlite`` (the layout of a saved ragrec store);
            - an existing file, or a new path ending in ``.sqlite3``, ``.sqlite`` or
              ``.db``: a :class:`SQLiteFeedbackStore` in that file.

    Raises:
        ConfigError: The location has another scheme, or is empty or ``:memory:``.
        FeedbackStoreError: The store cannot be opened.
        StoreVersionError: The store has a schema version this ragrec cannot read.
    """
    text = os.fspath(location)
    if not isinstance(text, str):
        raise ConfigError(f"location={location!r}: pass the path or URL as text")
    scheme, sep, _ = text.partition("://")
    if sep:
        if scheme.lower() in ("postgresql", "postgres"):
            return PostgresFeedbackStore(text)
        raise ConfigError(
            f"feedback store location {redact_url(text)!r}: unknown scheme {scheme!r}; use "
            "postgresql://user:password@host:port/database for PostgreSQL, or a directory "
            "or file path for SQLite"
        )
    if not text.strip() or text == ":memory:":
        raise ConfigError(
            f"feedback store location {text!r}: pass a directory (e.g. 'store'), a .sqlite3 "
            "file, or a postgresql:// URL; in-memory stores are not durable"
        )
    path = Path(text).expanduser()
    if path.is_dir() or (not path.exists() and path.suffix.lower() not in _FILE_SUFFIXES):
        path = path / DEFAULT_DB_NAME
    return SQLiteFeedbackStore(path)
