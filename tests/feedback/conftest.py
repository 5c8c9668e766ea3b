"""Fixtures of the feedback-store tests: a SQLite store directory and a real, throwaway
PostgreSQL server.

PostgreSQL comes from ``$RAGREC_TEST_POSTGRES_URL`` when set (a throwaway server, as
``scripts/ci-postgres.sh start`` gives: each test creates a database there). Otherwise
one cluster per session is created with the server binaries found on this machine
(``initdb`` and ``pg_ctl`` in ``$RAGREC_TEST_POSTGRES_BINDIR``, on PATH, or under
/usr/lib/postgresql/*/bin), on a free loopback port, in a temporary folder, and removed
at the end. As root the server runs as the ``postgres`` user (PostgreSQL refuses root).
Where no server can be started the PostgreSQL tests skip, and fail under ``CI``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragrec.feedback import FeedbackStore, open_store

from ._support import with_database

POSTGRES_URL_ENV = "RAGREC_TEST_POSTGRES_URL"
BINDIR_ENV = "RAGREC_TEST_POSTGRES_BINDIR"


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI: {message}", pytrace=False)
    pytest.skip(message)


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parts
    version = parts[-3] if len(parts) >= 3 else "0"
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def postgres_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (``$RAGREC_TEST_POSTGRES_BINDIR`` when
    set), or None."""
    chosen = os.environ.get(BINDIR_ENV)
    if chosen is not None:
        folder = Path(chosen)
        return folder if (folder / "pg_ctl").is_file() and (folder / "initdb").is_file() else None
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Cluster:
    """A throwaway PostgreSQL cluster in a temporary folder."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # Not under pytest's tmp_path: that is private to root, and the server may run
        # as another user.
        self.root = Path(tempfile.mkdtemp(prefix="ragrec-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    os.chown(self.root, entry.pw_uid, entry.pw_gid)
                    self.user = name
                    break
            if self.user is None:
                raise OSError("running as root and no 'postgres' or 'nobody' user to run as")
        self.port = 0

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.user,
            cwd=self.root,
        )

    def start(self) -> str:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        last: Exception | None = None
        for _ in range(3):  # a free port can be taken between the probe and the start
            self.port = _free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                    "-w", "-t", "60", "start",
                )  # fmt: skip
                return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
            except subprocess.CalledProcessError as exc:
                last = exc
        raise OSError(f"pg_ctl start failed: {last}")

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server (its ``postgres`` database) for this session."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'psycopg[binary]>=3.2,<4')")
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        yield external
        return
    bindir = postgres_bindir()
    if bindir is None:
        _unavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl) found; install them with "
            "`bash scripts/ci-postgres.sh install`"
        )
        return
    cluster: _Cluster | None = None
    try:
        cluster = _Cluster(bindir)
        url = cluster.start()
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        log = cluster.log_tail() if cluster else ""
        if cluster:
            cluster.stop()
        _unavailable(f"could not start PostgreSQL from {bindir}: {exc} {detail} {log}")
        return
    try:
        yield url
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """URL of a new, empty database on the session's server, one per test. They are not
    dropped (that takes a checkpoint each): the server is a throwaway one."""
    import psycopg

    name = f"ragrec_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(postgres_server, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new store lives: a store directory (SQLite) or a database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(location: str) -> Iterator[FeedbackStore]:
    """A new, open store at ``location``."""
    with open_store(location) as opened:
        yield opened
