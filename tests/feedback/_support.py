"""Helpers of the feedback-store tests: direct SQL on a store's database."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ragrec.feedback import DEFAULT_DB_NAME


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def run_sql(location: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store's database directly, as another client would."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return list(cursor.fetchall()) if cursor.description else []
    db = sqlite3.connect(Path(location) / DEFAULT_DB_NAME, timeout=30)
    try:
        with db:
            return db.execute(sql, params).fetchall()
    finally:
        db.close()


def all_tables(location: str) -> list[str]:
    """Every table in the store's database, whoever created it."""
    if location.startswith("postgresql://"):
        sql = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        )
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    return [str(r[0]) for r in run_sql(location, sql)]
