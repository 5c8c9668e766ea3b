"""The SQLite feedback store: one file, WAL mode, one connection per thread."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ragrec.errors import ConfigError
from ragrec.feedback._errors import FeedbackStoreError
from ragrec.feedback._sql import ConnectionHandle, SQLStore, Tx, logger

__all__ = ["SQLiteFeedbackStore"]


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()


class SQLiteFeedbackStore(SQLStore):
    """A feedback store in one SQLite file.

    The database runs in WAL mode; each write is one ``BEGIN IMMEDIATE`` transaction,
    committed (and, with ``synchronous="full"``, fsynced) before the method returns.
    Each thread gets its own connection; writers from several threads or processes
    wait on SQLite's busy timeout and retry until ``busy_timeout_s`` has passed.

    Args:
        path: The database file (created with its folders when missing). To keep it in
            a store directory, use :func:`~ragrec.feedback.open_store` with the folder.
        synchronous: ``"full"`` (default) fsyncs every commit: an acknowledged event
            survives a process kill and a power loss. ``"normal"`` survives a process
            kill but may lose the last commits on power loss; faster.
        busy_timeout_s: How long a write waits for other writers before it fails.

    Raises:
        ConfigError: An argument is invalid.
        FeedbackStoreError: The file is not a SQLite database or cannot use WAL.
        StoreVersionError: The store has a schema version this ragrec cannot read.
    """

    backend = "sqlite"
    _seq_type = "INTEGER PRIMARY KEY"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["full", "normal"] = "full",
        busy_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(retry_timeout_s=busy_timeout_s)
        if synchronous not in ("full", "normal"):
            raise ConfigError(
                f"synchronous={synchronous!r}: use 'full' (durable on power loss) or "
                "'normal' (durable on process crash)"
            )
        text = os.fspath(path)
        if not isinstance(text, str) or text in ("", ":memory:") or text.startswith("file:"):
            raise ConfigError(
                f"path={path!r}: the SQLite feedback store needs a file path (in-memory "
                "databases are not durable nor shared between threads); pass e.g. "
                "'store/feedback.sqlite'"
            )
        file = Path(text).expanduser().absolute()
        if file.is_dir():
            raise ConfigError(
                f"path={text!r} is a directory; pass the database file, or call "
                "open_store() with the directory to use <dir>/feedback.sqlite"
            )
        file.parent.mkdir(parents=True, exist_ok=True)
        self._path = file
        self._synchronous = synchronous
        self._busy_timeout_s = float(busy_timeout_s)
        self._start_connections()
        try:
            self._version = self._init_schema()
        except BaseException:
            self.close()
            raise
        logger.info(
            "feedback store: sqlite %s (schema %d, WAL, synchronous=%s)",
            self._path,
            self._version,
            synchronous,
        )

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def copy_to(self, path: str | os.PathLike[str]) -> SQLiteFeedbackStore:
        """Copy the database to a new file and open the copy (this store stays open).

        The copy is a consistent snapshot taken with SQLite's online backup, so writers
        may keep going while it runs.

        Args:
            path: The new database file; it must not exist yet.

        Raises:
            ConfigError: ``path`` exists already.
        """
        target = Path(os.fspath(path)).expanduser().absolute()
        if target.exists():
            raise ConfigError(
                f"path={os.fspath(path)!r} exists; copy_to() does not overwrite: pass a new "
                "path, or remove the old file first"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        destination = sqlite3.connect(target)
        try:
            self._connection().backup(destination)
        except sqlite3.Error as exc:
            destination.close()
            target.unlink(missing_ok=True)
            raise FeedbackStoreError(
                f"feedback store {self.location}: copy to {target} failed ({exc})"
            ) from exc
        destination.close()
        return SQLiteFeedbackStore(
            target, synchronous=self._synchronous, busy_timeout_s=self._busy_timeout_s
        )

    def _connection(self) -> sqlite3.Connection:
        handle = self._thread_handle()
        if handle is not None:
            return handle.conn
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise FeedbackStoreError(
                    f"feedback store {self.location}: SQLite cannot use WAL mode here "
                    f"(journal mode stays {mode!r}); fix: keep the store on a local "
                    "file system, not a network share"
                )
            conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise FeedbackStoreError(
                    f"feedback store {self.location}: not a SQLite database ({exc}); fix: "
                    "pass a new path or the feedback.sqlite of a ragrec store"
                ) from exc
            raise
        except BaseException:
            conn.close()
            raise
        return self._keep(conn)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Tx]:
        conn = self._connection()
        # IMMEDIATE takes the write lock up front: a deferred transaction that upgrades
        # later can fail with SQLITE_BUSY without waiting on the busy timeout.
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield _SQLiteTx(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    # A connection stuck in a transaction is useless: start afresh.
                    logger.debug("rollback failed; reconnecting", exc_info=True)
                    self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        handle: ConnectionHandle | None = getattr(self._local, "handle", None)
        self._local.handle = None
        if handle is not None:
            handle.close()

    def _is_transient(self, exc: BaseException) -> bool:
        text = str(exc).lower()
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)
