"""The PostgreSQL feedback store, for deployments where several hosts share feedback."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ragrec.errors import ConfigError
from ragrec.feedback._errors import FeedbackStoreError
from ragrec.feedback._sql import ConnectionHandle, SQLStore, Tx, logger

__all__ = ["PostgresFeedbackStore", "redact_url"]

_INSTALL_HINT = (
    "the PostgreSQL feedback store needs psycopg 3; fix: pip install 'psycopg[binary]>=3.2,<4'"
)
# Any constant shared by every ragrec process: it names the lock for schema creation.
_SCHEMA_LOCK_KEY = 0x7261677265630001


def _psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(_INSTALL_HINT) from exc
    return psycopg


def redact_url(url: str) -> str:
    """The URL (or ``key=value`` connection string) with its password replaced by ``***``."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            user = parts.username or ""
            parts = parts._replace(netloc=f"{user}:***@{host}")
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit(parts._replace(query=query))
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)


class _PgTx:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cursor.execute(sql.replace("?", "%s"), params)
        return int(self._cursor.rowcount)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql.replace("?", "%s"), params)
        return list(self._cursor.fetchall())


class PostgresFeedbackStore(SQLStore):
    """A feedback store in a PostgreSQL database, shared by every process that opens it.

    Tables are named ``ragrec_*`` and created on first use (schema creation is
    serialised by an advisory lock). Each write is one transaction committed with
    ``synchronous_commit = on`` before the method returns. Each thread gets its own
    connection; serialization failures, deadlocks and dropped connections are retried
    until ``retry_timeout_s`` has passed (safe: every write is idempotent).

    Args:
        url: ``postgresql://user:password@host:port/database``; libpq parameters go in
            the query string (``?sslmode=require``; ``?options=-csearch_path%3Dmyschema``
            keeps the tables in another schema).
        connect_timeout_s: How long to wait for the server when connecting.
        retry_timeout_s: How long a write keeps retrying transient failures.

    Raises:
        ConfigError: psycopg is not installed (with the install command), or an
            argument is invalid.
        FeedbackStoreError: The server cannot be reached or refuses the login.
        StoreVersionError: The store has a schema version this ragrec cannot read.
    """

    backend = "postgresql"
    _seq_type = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"

    def __init__(
        self, url: str, *, connect_timeout_s: float = 10.0, retry_timeout_s: float = 30.0
    ) -> None:
        super().__init__(retry_timeout_s=retry_timeout_s)
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(
                f"url={url!r}: pass a PostgreSQL URL such as "
                "postgresql://user:password@localhost:5432/ragrec"
            )
        if not connect_timeout_s > 0:
            raise ConfigError(
                f"connect_timeout_s={connect_timeout_s!r}: must be > 0 seconds; pass e.g. 10"
            )
        self._psycopg = _psycopg()
        self._url = url
        self._location = redact_url(url)
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._start_connections()
        # Until the first connection succeeds, a connection error is a wrong URL or a
        # server that is down: report it at once rather than retrying.
        self._connected_once = False
        try:
            self._connection()
            self._connected_once = True
            self._version = self._init_schema()
        except BaseException:
            self.close()
            raise
        logger.info(
            "feedback store: postgresql %s (schema %d, synchronous_commit=on)",
            self._location,
            self._version,
        )

    @property
    def location(self) -> str:
        return self._location

    def _connection(self) -> Any:
        handle = self._thread_handle()
        if handle is not None and not handle.conn.closed:
            return handle.conn
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.OperationalError as exc:
            if self._connected_once:
                raise
            raise FeedbackStoreError(
                f"feedback store {self.location}: cannot connect ({str(exc).strip()}); fix: "
                "check the URL (host, port, database, user, password) and that the server "
                "is running and accepts connections from this host"
            ) from exc
        except psycopg.ProgrammingError as exc:
            raise ConfigError(
                f"feedback store {self.location}: invalid connection URL ({exc}); pass "
                "postgresql://user:password@host:port/database"
            ) from exc
        # The store promises that an acknowledged write is on disk, whatever the
        # server's default for this setting.
        conn.execute("SET synchronous_commit TO on")
        return self._keep(conn)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Tx]:
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cursor:
            yield _PgTx(cursor)

    def _lock_schema(self, tx: Tx) -> None:
        tx.query("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK_KEY,))

    def _is_transient(self, exc: BaseException) -> bool:
        errors = self._psycopg.errors
        if isinstance(
            exc, errors.SerializationFailure | errors.DeadlockDetected | errors.LockNotAvailable
        ):
            return True
        if isinstance(exc, self._psycopg.OperationalError) and self._connected_once:
            handle: ConnectionHandle | None = getattr(self._local, "handle", None)
            if handle is not None and (handle.conn.closed or handle.conn.broken):
                self._local.handle = None
                handle.close()
                return True
            return handle is None
        return False

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)
