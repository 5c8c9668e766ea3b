"""The SQL shared by the SQLite and PostgreSQL stores: per-thread connections, retries,
and the store's operations as SQL (the schema and row codecs are in ``_sql_rows``)."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import weakref
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import JsonValue

from ragrec.errors import ConfigError
from ragrec.feedback._errors import (
    FeedbackConflictError,
    FeedbackStoreError,
    FieldIssue,
    InvalidFeedbackError,
    StoreVersionError,
)
from ragrec.feedback._models import (
    DEFAULT_MIN_RATING,
    POSITIVE_KINDS,
    EventKind,
    FeedbackEvent,
    RecommendationRecord,
    canonical_json,
    check_weights,
)
from ragrec.feedback._sql_rows import (
    _DDL_V1,
    _EVENT_COLUMNS,
    _EVENT_FIELDS,
    _INSERT_EVENT,
    _INSERT_REC,
    _REC_COLUMNS,
    _REC_FIELDS,
    _SCHEMA_TABLE,
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLES,
    Tx,
    _differences,
    _event_from_row,
    _event_row,
    _query_id,
    _query_kinds,
    _query_since,
    _rec_from_row,
    _rec_row,
    decode_id,
    to_us,
)
from ragrec.feedback._store import FeedbackStore

__all__ = ["SCHEMA_VERSION", "TABLES", "ConnectionHandle", "SQLStore", "Tx"]

logger = logging.getLogger("ragrec.feedback")

_T = TypeVar("_T")

# Connections inherited through fork() belong to the parent: they are kept alive here,
# never used and never closed, so the child cannot disturb the parent's locks.
_INHERITED: list[object] = []


class ConnectionHandle:
    """One thread's connection; closes it when the thread's local storage goes, and
    never from a forked child (the parent's connection is not the child's to close)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pid = os.getpid()

    def close(self) -> None:
        if self.pid == os.getpid():
            self.conn.close()

    def __del__(self) -> None:
        self.close()


class SQLStore(FeedbackStore):
    """Everything the SQL backends share; a backend supplies connections and
    transactions and says which errors are worth a retry.

    Args:
        retry_timeout_s: How long a write keeps retrying while the database is busy
            (locked, serialization failure, deadlock, lost connection).
    """

    def __init__(self, *, retry_timeout_s: float) -> None:
        if not retry_timeout_s > 0:
            raise ConfigError(
                f"retry_timeout_s={retry_timeout_s!r}: must be > 0 seconds; pass e.g. 30"
            )
        self._retry_timeout_s = float(retry_timeout_s)
        self._rng = random.Random()
        self._version = 0

    # -- backend hooks -------------------------------------------------------------

    #: The dialect's auto-increment primary key column type.
    _seq_type: str

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[Tx]:
        """A transaction on this thread's connection: committed when the block ends,
        rolled back when it raises."""

    @abstractmethod
    def _is_transient(self, exc: BaseException) -> bool:
        """True when ``exc`` means "try again" (and drop a broken connection)."""

    @abstractmethod
    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """The database driver's error types, reported as :class:`FeedbackStoreError`."""

    def _lock_schema(self, tx: Tx) -> None:
        """Serialise schema creation between processes (SQLite's write lock does it)."""

    # -- per-thread connections ------------------------------------------------------

    def _start_connections(self) -> None:
        """No connection yet: each thread opens its own on first use."""
        self._local = threading.local()
        self._handles: weakref.WeakSet[ConnectionHandle] = weakref.WeakSet()
        self._handles_lock = threading.Lock()
        self._closed = False

    def _thread_handle(self) -> ConnectionHandle | None:
        """This thread's connection handle, or ``None`` when it has none that this
        process opened (one inherited through fork() is set aside, never closed).

        Raises:
            FeedbackStoreError: The store is closed.
        """
        if self._closed:
            raise FeedbackStoreError(
                f"feedback store {self.location} is closed; open it again with open_store()"
            )
        handle: ConnectionHandle | None = getattr(self._local, "handle", None)
        if handle is not None and handle.pid != os.getpid():
            _INHERITED.append(handle)
            return None
        return handle

    def _keep(self, conn: Any) -> Any:
        """Make ``conn`` this thread's connection (closed with the store); returns it."""
        handle = ConnectionHandle(conn)
        self._local.handle = handle
        with self._handles_lock:
            self._handles.add(handle)
        return conn

    def close(self) -> None:
        self._closed = True
        with self._handles_lock:
            handles = list(self._handles)
            self._handles.clear()
        for handle in handles:
            handle.close()

    # -- running statements ----------------------------------------------------------

    def _run(self, fn: Callable[[Tx], _T], *, write: bool = True) -> _T:
        """Run ``fn`` in one transaction, retrying it whole while the database is busy.

        Retrying is safe because every write is idempotent: events and recommendations
        by id, weights and profiles by key.
        """
        deadline = time.monotonic() + self._retry_timeout_s
        attempt = 0
        while True:
            try:
                with self._transaction(write=write) as tx:
                    return fn(tx)
            except self._driver_errors() as exc:
                if not self._is_transient(exc):
                    raise FeedbackStoreError(
                        f"feedback store {self.location}: {type(exc).__name__}: {exc}".rstrip()
                    ) from exc
                if time.monotonic() >= deadline:
                    raise FeedbackStoreError(
                        f"feedback store {self.location}: still busy after "
                        f"{self._retry_timeout_s:g} s ({type(exc).__name__}: {exc}); fix: "
                        "retry later, or raise the backend's retry timeout"
                    ) from exc
                attempt += 1
                logger.debug(
                    "feedback store %s: retry %d after %s: %s",
                    self.location,
                    attempt,
                    type(exc).__name__,
                    exc,
                )
                delay = min(0.002 * 2**attempt, 0.2) * (0.5 + self._rng.random())
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))

    def _init_schema(self) -> int:
        def init(tx: Tx) -> int:
            self._lock_schema(tx)
            tx.execute(_SCHEMA_TABLE)
            rows = tx.query("SELECT version FROM ragrec_schema")
            if not rows:
                for statement in _DDL_V1:
                    tx.execute(statement.format(seq=self._seq_type))
                tx.execute(
                    "INSERT INTO ragrec_schema (singleton, version) VALUES (1, ?)",
                    (SCHEMA_VERSION,),
                )
                return SCHEMA_VERSION
            version = int(rows[0][0])
            if version == SCHEMA_VERSION:
                return version
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"feedback store {self.location} has schema version {version}, written "
                    f"by a newer ragrec; this ragrec reads schema version {SCHEMA_VERSION} "
                    "and older. Fix: upgrade ragrec (pip install -U ragrec), or open "
                    "another store."
                )
            missing = [v for v in range(version, SCHEMA_VERSION) if v not in MIGRATIONS]
            if missing:
                known = ", ".join(str(v) for v in sorted(MIGRATIONS)) or "none"
                raise StoreVersionError(
                    f"feedback store {self.location} has schema version {version}, which "
                    f"this ragrec cannot migrate to version {SCHEMA_VERSION} (it migrates "
                    f"from versions: {known}). Fix: open it with the ragrec that wrote it "
                    "and export the events, or start a new store."
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    tx.execute(statement.format(seq=self._seq_type))
            tx.execute("UPDATE ragrec_schema SET version = ?", (SCHEMA_VERSION,))
            logger.info(
                "feedback store %s migrated from schema %d to %d",
                self.location,
                version,
                SCHEMA_VERSION,
            )
            return SCHEMA_VERSION

        return self._run(init)

    @property
    def schema_version(self) -> int:
        return self._version

    # -- events ----------------------------------------------------------------------

    def add(self, event: FeedbackEvent | Mapping[str, Any]) -> bool:
        checked = FeedbackEvent.parse(event)
        return self._run(lambda tx: self._insert_events(tx, [checked]))[0]

    def add_many(self, events: Iterable[FeedbackEvent | Mapping[str, Any]]) -> int:
        return sum(self.add_each(events))

    def add_each(self, events: Iterable[FeedbackEvent | Mapping[str, Any]]) -> list[bool]:
        # Validate all before opening the transaction: a malformed event writes nothing.
        checked = [FeedbackEvent.parse(e) for e in events]
        if not checked:
            return []
        return self._run(lambda tx: self._insert_events(tx, checked))

    def event(self, event_id: str) -> FeedbackEvent | None:
        if not isinstance(event_id, str):
            raise ConfigError(f"event_id={event_id!r}: event ids are text; pass a str")
        found = self._select_events(["event_id = ?"], [event_id])
        return found[0] if found else None

    def _insert_events(self, tx: Tx, events: Sequence[FeedbackEvent]) -> list[bool]:
        stored: list[bool] = []
        for event in events:
            row = _event_row(event)
            if tx.execute(_INSERT_EVENT, row) == 1:
                stored.append(True)
                continue
            existing = tx.query(
                f"SELECT {_EVENT_COLUMNS} FROM ragrec_events WHERE event_id = ?", (row[0],)
            )
            if not existing:
                raise FeedbackStoreError(
                    f"feedback store {self.location}: event {event.event_id!r} was neither "
                    "inserted nor found"
                )
            if tuple(existing[0]) != row:
                old = _event_from_row(existing[0]).model_dump()
                raise FeedbackConflictError(
                    f"feedback event {event.event_id!r}",
                    _differences(
                        _EVENT_FIELDS,
                        [old[f] for f in _EVENT_FIELDS],
                        [getattr(event, f) for f in _EVENT_FIELDS],
                    ),
                    fix="Fix: a retry must resend the identical event (same timestamp too); "
                    "a new event needs a new event_id. Nothing of this call was stored.",
                )
            stored.append(False)
        return stored

    def events(
        self,
        user_id: int | str | None = None,
        *,
        kinds: Iterable[EventKind | str] | None = None,
        since: datetime | None = None,
    ) -> list[FeedbackEvent]:
        where: list[str] = []
        params: list[Any] = []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(_query_id(user_id, "user_id"))
        kind_values = _query_kinds(kinds)
        if kind_values is not None:
            if not kind_values:
                return []
            where.append(f"kind IN ({', '.join('?' for _ in kind_values)})")
            params.extend(kind_values)
        since_us = _query_since(since)
        if since_us is not None:
            where.append("ts_us >= ?")
            params.append(since_us)
        return self._select_events(where, params)

    def _select_events(self, where: Sequence[str], params: Sequence[Any]) -> list[FeedbackEvent]:
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_EVENT_COLUMNS} FROM ragrec_events{clause} ORDER BY ts_us, seq"
        rows = self._run(lambda tx: tx.query(sql, params), write=False)
        return [_event_from_row(r) for r in rows]

    def count(self) -> int:
        rows = self._run(lambda tx: tx.query("SELECT COUNT(*) FROM ragrec_events"), write=False)
        return int(rows[0][0])

    def users(self) -> list[int | str]:
        rows = self._run(
            lambda tx: tx.query("SELECT DISTINCT user_id FROM ragrec_events"), write=False
        )
        ids = [decode_id(r[0]) for r in rows]
        return sorted(ids, key=lambda v: (isinstance(v, str), v))

    def history(
        self, user_id: int | str, *, min_rating: float = DEFAULT_MIN_RATING
    ) -> list[FeedbackEvent]:
        if isinstance(min_rating, bool) or not isinstance(min_rating, int | float):
            raise ConfigError(f"min_rating={min_rating!r}: pass a number such as 4.0")
        positive = sorted(k.value for k in POSITIVE_KINDS)
        where = [
            "user_id = ?",
            f"(kind IN ({', '.join('?' for _ in positive)}) OR (kind = ? AND value >= ?))",
        ]
        params = [
            _query_id(user_id, "user_id"),
            *positive,
            EventKind.RATING.value,
            float(min_rating),
        ]
        return self._select_events(where, params)

    # -- recommendations ---------------------------------------------------------------

    def log_recommendation(
        self, record: RecommendationRecord | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> bool:
        if (record is None) == (not fields):
            raise ConfigError(
                "log_recommendation: pass either a RecommendationRecord (or a mapping of its "
                "fields) or its fields as keywords (rec_id=..., user_id=..., items=..., "
                "timestamp=...), not both and not neither"
            )
        checked = RecommendationRecord.parse(record if record is not None else fields)
        row = _rec_row(checked)

        def insert(tx: Tx) -> bool:
            if tx.execute(_INSERT_REC, row) == 1:
                return True
            existing = tx.query(
                f"SELECT {_REC_COLUMNS} FROM ragrec_recommendations WHERE rec_id = ?",
                (row[0],),
            )
            if existing and tuple(existing[0]) != row:
                old = _rec_from_row(existing[0])
                raise FeedbackConflictError(
                    f"recommendation {checked.rec_id!r}",
                    _differences(
                        _REC_FIELDS,
                        [getattr(old, f) for f in _REC_FIELDS],
                        [getattr(checked, f) for f in _REC_FIELDS],
                    ),
                    fix="Fix: log each served recommendation under its own rec_id; a retry "
                    "must resend the identical record. Nothing was stored.",
                )
            return False

        return self._run(insert)

    def recommendation(self, rec_id: str) -> RecommendationRecord | None:
        if not isinstance(rec_id, str):
            raise ConfigError(f"rec_id={rec_id!r}: recommendation ids are text; pass a str")
        rows = self._run(
            lambda tx: tx.query(
                f"SELECT {_REC_COLUMNS} FROM ragrec_recommendations WHERE rec_id = ?",
                (rec_id,),
            ),
            write=False,
        )
        return _rec_from_row(rows[0]) if rows else None

    def recommendations(
        self, user_id: int | str | None = None, *, since: datetime | None = None
    ) -> list[RecommendationRecord]:
        where: list[str] = []
        params: list[Any] = []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(_query_id(user_id, "user_id"))
        since_us = _query_since(since)
        if since_us is not None:
            where.append("ts_us >= ?")
            params.append(since_us)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_REC_COLUMNS} FROM ragrec_recommendations{clause} ORDER BY ts_us, seq"
        rows = self._run(lambda tx: tx.query(sql, params), write=False)
        return [_rec_from_row(r) for r in rows]

    # -- weights and profiles --------------------------------------------------------

    def get_weights(self, user_id: int | str | None) -> dict[str, float]:
        params: tuple[Any, ...] = ()
        if user_id is None:
            sql = "SELECT channel, weight FROM ragrec_global_weights"
        else:
            sql = "SELECT channel, weight FROM ragrec_user_weights WHERE user_id = ?"
            params = (_query_id(user_id, "user_id"),)
        rows = self._run(lambda tx: tx.query(sql, params), write=False)
        return {str(name): float(weight) for name, weight in sorted(rows)}

    def set_weights(self, user_id: int | str | None, weights: Mapping[str, float]) -> None:
        scope = "global prior" if user_id is None else f"user {user_id!r}"
        try:
            checked = check_weights(weights)
        except ValueError as exc:
            why, _, fix = str(exc).partition(" -- fix: ")
            raise InvalidFeedbackError(
                f"channel weights of the {scope}", [FieldIssue("weights", weights, why, fix)]
            ) from None
        now = to_us(datetime.now(UTC))
        key = None if user_id is None else _query_id(user_id, "user_id")

        def replace(tx: Tx) -> None:
            if key is None:
                tx.execute("DELETE FROM ragrec_global_weights")
                for name, weight in checked.items():
                    tx.execute(
                        "INSERT INTO ragrec_global_weights (channel, weight, updated_us) "
                        "VALUES (?, ?, ?)",
                        (name, weight, now),
                    )
                return
            tx.execute("DELETE FROM ragrec_user_weights WHERE user_id = ?", (key,))
            for name, weight in checked.items():
                tx.execute(
                    "INSERT INTO ragrec_user_weights (user_id, channel, weight, updated_us) "
                    "VALUES (?, ?, ?, ?)",
                    (key, name, weight, now),
                )

        self._run(replace)

    def profile(self, user_id: int | str) -> dict[str, JsonValue]:
        key = _query_id(user_id, "user_id")
        rows = self._run(
            lambda tx: tx.query(
                "SELECT profile_key, profile_value FROM ragrec_profiles WHERE user_id = ?",
                (key,),
            ),
            write=False,
        )
        return {str(k): json.loads(v) for k, v in sorted(rows)}

    def update_profile(self, user_id: int | str, values: Mapping[str, JsonValue]) -> None:
        key = _query_id(user_id, "user_id")
        source = f"profile update of user {user_id!r}"
        if not isinstance(values, Mapping):
            raise InvalidFeedbackError(
                source,
                [FieldIssue("values", values, "not a mapping", "pass a dict of key -> value")],
            )
        issues: list[FieldIssue] = []
        encoded: dict[str, str | None] = {}
        for name, value in values.items():
            if not isinstance(name, str) or not name.strip():
                issues.append(
                    FieldIssue(repr(name), value, "key is not a non-empty str", "use text keys")
                )
                continue
            try:
                encoded[name] = None if value is None else canonical_json(value)
            except (TypeError, ValueError) as exc:
                issues.append(
                    FieldIssue(
                        name,
                        value,
                        f"not JSON ({exc})",
                        "store str, numbers, bools, lists and dicts (no NaN)",
                    )
                )
        if issues:
            raise InvalidFeedbackError(source, issues)
        now = to_us(datetime.now(UTC))

        def update(tx: Tx) -> None:
            for name, text in encoded.items():
                if text is None:
                    tx.execute(
                        "DELETE FROM ragrec_profiles WHERE user_id = ? AND profile_key = ?",
                        (key, name),
                    )
                else:
                    tx.execute(
                        "INSERT INTO ragrec_profiles "
                        "(user_id, profile_key, profile_value, updated_us) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (user_id, profile_key) DO UPDATE SET "
                        "profile_value = excluded.profile_value, "
                        "updated_us = excluded.updated_us",
                        (key, name, text, now),
                    )

        self._run(update)

    # -- privacy -----------------------------------------------------------------------

    def forget_user(self, user_id: int | str) -> dict[str, int]:
        key = _query_id(user_id, "user_id")

        def forget(tx: Tx) -> dict[str, int]:
            return {
                table: tx.execute(f"DELETE FROM ragrec_{table} WHERE user_id = ?", (key,))
                for table in ("events", "recommendations", "user_weights", "profiles")
            }

        counts = self._run(forget)
        logger.info("feedback store %s: forgot a user (%s)", self.location, counts)
        return counts
