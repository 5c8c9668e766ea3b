"""What the SQL stores share below the store: the schema, the statements, and how
events and recommendations become rows and back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ragrec.errors import ConfigError
from ragrec.feedback._errors import FeedbackStoreError
from ragrec.feedback._models import (
    EventKind,
    FeedbackEvent,
    RecommendationRecord,
    canonical_json,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "Tx",
    "decode_id",
    "encode_id",
    "from_us",
    "to_us",
]

SCHEMA_VERSION = 1
"""Schema version this ragrec writes; stores of other versions are migrated or refused."""

# Statements from one version to the next: MIGRATIONS[v] takes a store from v to v + 1.
# Version 1 is the first, so there is nothing to migrate yet.
MIGRATIONS: dict[int, tuple[str, ...]] = {}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Tables are prefixed so a shared PostgreSQL database can hold them beside others.
# `{seq}` is the dialect's auto-increment key: it orders rows stored at the same time.
_DDL_V1 = (
    """CREATE TABLE IF NOT EXISTS ragrec_events (
        seq {seq},
        event_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        value DOUBLE PRECISION,
        ts_us BIGINT NOT NULL,
        rec_id TEXT,
        context TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ragrec_events_user_ts ON ragrec_events (user_id, ts_us)",
    "CREATE INDEX IF NOT EXISTS ragrec_events_ts ON ragrec_events (ts_us)",
    """CREATE TABLE IF NOT EXISTS ragrec_recommendations (
        seq {seq},
        rec_id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        ts_us BIGINT NOT NULL,
        prompt_hash TEXT,
        model TEXT,
        weights TEXT NOT NULL,
        items TEXT NOT NULL,
        context TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ragrec_recommendations_user_ts "
    "ON ragrec_recommendations (user_id, ts_us)",
    """CREATE TABLE IF NOT EXISTS ragrec_global_weights (
        channel TEXT PRIMARY KEY,
        weight DOUBLE PRECISION NOT NULL,
        updated_us BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS ragrec_user_weights (
        user_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        weight DOUBLE PRECISION NOT NULL,
        updated_us BIGINT NOT NULL,
        PRIMARY KEY (user_id, channel)
    )""",
    """CREATE TABLE IF NOT EXISTS ragrec_profiles (
        user_id TEXT NOT NULL,
        profile_key TEXT NOT NULL,
        profile_value TEXT NOT NULL,
        updated_us BIGINT NOT NULL,
        PRIMARY KEY (user_id, profile_key)
    )""",
)

_SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS ragrec_schema (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    version INTEGER NOT NULL
)"""

TABLES = (
    "ragrec_schema",
    "ragrec_events",
    "ragrec_recommendations",
    "ragrec_global_weights",
    "ragrec_user_weights",
    "ragrec_profiles",
)
"""Every table of the current schema."""

_EVENT_COLUMNS = "event_id, user_id, item_id, kind, value, ts_us, rec_id, context"
_INSERT_EVENT = (
    f"INSERT INTO ragrec_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING"
)
_REC_COLUMNS = "rec_id, user_id, ts_us, prompt_hash, model, weights, items, context"
_INSERT_REC = (
    f"INSERT INTO ragrec_recommendations ({_REC_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (rec_id) DO NOTHING"
)
_EVENT_FIELDS = (
    "event_id",
    "user_id",
    "item_id",
    "kind",
    "value",
    "timestamp",
    "rec_id",
    "context",
)
_REC_FIELDS = (
    "rec_id",
    "user_id",
    "timestamp",
    "prompt_hash",
    "model",
    "weights",
    "items",
    "context",
)


class Tx(Protocol):
    """One open transaction of a backend; statements use ``?`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query; return its rows."""
        ...


def encode_id(value: int | str) -> str:
    """An id as stored: JSON, so ``1`` and ``"1"`` stay different and read back typed."""
    return json.dumps(value, ensure_ascii=False)


def decode_id(text: str) -> int | str:
    """Inverse of :func:`encode_id`."""
    value = json.loads(text)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FeedbackStoreError(f"stored id {text!r} is neither an int nor text")
    return value


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch (exact)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_us(micros: int) -> datetime:
    """Inverse of :func:`to_us`, in UTC."""
    return _EPOCH + timedelta(microseconds=micros)


def _query_id(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise ConfigError(
            f"{name}={value!r}: a user id is an int or a non-empty str; pass the id the "
            "events were stored with (1 and '1' are different ids)"
        )
    return encode_id(int(value) if isinstance(value, int) else value)


def _query_since(since: datetime | None) -> int | None:
    if since is None:
        return None
    if not isinstance(since, datetime) or since.utcoffset() is None:
        raise ConfigError(
            f"since={since!r}: expected a timezone-aware datetime; pass e.g. "
            "datetime(2024, 1, 1, tzinfo=UTC)"
        )
    return to_us(since)


def _query_kinds(kinds: Iterable[EventKind | str] | None) -> list[str] | None:
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = [kinds]
    checked = []
    for kind in kinds:
        try:
            checked.append(EventKind(kind).value)
        except ValueError:
            allowed = ", ".join(k.value for k in EventKind)
            raise ConfigError(f"kinds: unknown event kind {kind!r}; use {allowed}") from None
    return checked


def _event_row(event: FeedbackEvent) -> tuple[Any, ...]:
    return (
        event.event_id,
        encode_id(event.user_id),
        encode_id(event.item_id),
        event.kind.value,
        event.value,
        to_us(event.timestamp),
        event.rec_id,
        None if event.context is None else canonical_json(event.context),
    )


def _event_from_row(row: Sequence[Any]) -> FeedbackEvent:
    # Rows were validated on the way in; constructing without validation keeps reads
    # fast and lets a later, stricter ragrec still read what an older one stored.
    return FeedbackEvent.model_construct(
        event_id=row[0],
        user_id=decode_id(row[1]),
        item_id=decode_id(row[2]),
        kind=EventKind(row[3]),
        value=None if row[4] is None else float(row[4]),
        timestamp=from_us(int(row[5])),
        rec_id=row[6],
        context=None if row[7] is None else json.loads(row[7]),
    )


def _rec_row(record: RecommendationRecord) -> tuple[Any, ...]:
    return (
        record.rec_id,
        encode_id(record.user_id),
        to_us(record.timestamp),
        record.prompt_hash,
        record.model,
        canonical_json(record.weights),
        canonical_json([item.model_dump(mode="json") for item in record.items]),
        None if record.context is None else canonical_json(record.context),
    )


def _rec_from_row(row: Sequence[Any]) -> RecommendationRecord:
    return RecommendationRecord(
        rec_id=row[0],
        user_id=decode_id(row[1]),
        timestamp=from_us(int(row[2])),
        prompt_hash=row[3],
        model=row[4],
        weights=json.loads(row[5]),
        items=json.loads(row[6]),
        context=None if row[7] is None else json.loads(row[7]),
    )


def _differences(
    fields: Sequence[str], stored: Sequence[Any], received: Sequence[Any]
) -> dict[str, tuple[Any, Any]]:
    return {
        name: (old, new)
        for name, old, new in zip(fields, stored, received, strict=True)
        if old != new
    }
