"""Several writers at once, and durability when a writer is killed with SIGKILL; on SQLite
and on a real PostgreSQL server."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ragrec.feedback import DEFAULT_DB_NAME, FeedbackEvent, FeedbackStore, open_store

from ._support import run_sql
from ._writer import make_event

WRITER = Path(__file__).with_name("_writer.py")
SHARED = 20


def _writer(location: str, prefix: str, count: int, shared: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), location, prefix, str(count), str(shared)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def _expected(prefixes: list[str], count: int) -> dict[str, object]:
    events = [make_event(p, i) for p in prefixes for i in range(count)]
    events += [make_event("shared", i) for i in range(SHARED)]
    return {e.event_id: e for e in events}


def _check_exactly_once(store: FeedbackStore, expected: dict[str, object]) -> None:
    stored = store.events()
    ids = [e.event_id for e in stored]
    assert len(ids) == len(set(ids)), "an event is stored twice"
    assert sorted(ids) == sorted(expected), "events missing or unexpected"
    assert all(e == expected[e.event_id] for e in stored), "an event's content changed"
    assert store.count() == len(expected)


def test_threads_write_at_once(store: FeedbackStore) -> None:
    """4 threads x 200 events through one store object (a connection per thread), each
    thread also sending the same 20 shared events."""
    start = threading.Barrier(4)

    def work(t: int) -> int:
        start.wait()
        stored = 0
        for i in range(200):
            if i % 3 == 2:
                stored += store.add_many([make_event(f"thread{t}", i)])
            else:
                stored += store.add(make_event(f"thread{t}", i))
            if i % 10 == 0:
                store.add(make_event("shared", i // 10))
        return stored

    with ThreadPoolExecutor(max_workers=4) as pool:
        stored = list(pool.map(work, range(4)))
    assert stored == [200] * 4
    _check_exactly_once(store, _expected([f"thread{t}" for t in range(4)], 200))


def test_processes_write_at_once(location: str) -> None:
    """3 processes x 200 events into one store location, each also sending the same 20
    shared events."""
    with open_store(location):
        pass  # the schema exists before the writers race
    writers = [_writer(location, f"proc{p}", 200, SHARED) for p in range(3)]
    for proc in writers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert len(out.splitlines()) == 200
    with open_store(location) as store:
        _check_exactly_once(store, _expected([f"proc{p}" for p in range(3)], 200))


def test_acknowledged_events_survive_sigkill(location: str) -> None:
    """A writer prints each event id once add()/add_many() has returned; killed with
    SIGKILL mid-stream, every id it printed must be in the store."""
    proc = _writer(location, "kill", -1)
    assert proc.stdout is not None
    watchdog = threading.Timer(60, proc.kill)  # a stuck writer fails the test, not CI
    watchdog.start()
    acknowledged: list[str] = []
    try:
        while len(acknowledged) < 400:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(line.rstrip("\n"))
        os.kill(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
    finally:
        watchdog.cancel()
    assert len(acknowledged) >= 400, f"the writer stopped early: {err}"
    assert proc.returncode == -signal.SIGKILL
    # lines already in the pipe were acknowledged too; a cut-off last line was not
    complete, _, _partial = rest.rpartition("\n")
    acknowledged += complete.splitlines()

    if not location.startswith("postgresql://"):
        conn = sqlite3.connect(Path(location) / DEFAULT_DB_NAME)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
    with open_store(location) as store:
        stored = {e.event_id: e for e in store.events()}
    missing = [a for a in acknowledged if a not in stored]
    assert missing == [], f"{len(missing)} acknowledged events lost: {missing[:5]}"
    # at most the one add or add_many (4 events) in flight was stored but not printed
    assert len(set(stored) - set(acknowledged)) <= 4
    index = {e: int(e.rsplit("-", 1)[1]) for e in stored}
    assert all(event == make_event("kill", index[eid]) for eid, event in stored.items())


def test_postgres_deadlocks_are_retried(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two batches inserting the same ids in opposite orders deadlock on PostgreSQL; the
    store retries the losing transaction, and each event is stored once."""
    database = postgres_url.rsplit("/", 1)[1]
    run_sql(postgres_url, f"ALTER DATABASE \"{database}\" SET deadlock_timeout = '20ms'")
    caplog.set_level(logging.DEBUG, logger="ragrec.feedback")
    with open_store(postgres_url) as store:
        for round_ in range(3):
            batch = [make_event(f"round{round_}", i) for i in range(150)]
            start = threading.Barrier(2)

            def work(events: list[FeedbackEvent], start: threading.Barrier = start) -> int:
                start.wait()
                return store.add_many(events)

            with ThreadPoolExecutor(max_workers=2) as pool:
                stored = list(pool.map(work, [batch, batch[::-1]]))
            assert sorted(stored) == [0, 150]
        assert store.count() == 450
    retried = [r for r in caplog.records if "after DeadlockDetected" in r.getMessage()]
    assert retried, "no deadlock happened: the retry path was not exercised"
