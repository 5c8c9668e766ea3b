"""Bounded load tests: concurrent clients send recommend and feedback requests for a few
seconds; afterwards every acknowledged event is in the store and no request got a 5xx.
Latency is not asserted here (benchmarks/serving.py prints it)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ragrec import Recommender
from ragrec.feedback import open_store
from ragrec.serve import LoadReport, create_app, run_load

from ._support import free_socket, running

CLIENTS = 8
SECONDS = 3.0
TOKEN = "load-token"


def _check(report: LoadReport, store: Path) -> None:
    assert report.server_errors == 0, report.summary()
    assert report.transport_errors == 0, report.summary()
    assert report.errors == (), report.errors
    assert report.statuses.get(("/recommend", 200), 0) >= CLIENTS, report.summary()
    assert report.acknowledged, "no feedback was acknowledged"
    with open_store(str(store / "feedback.sqlite")) as feedback:
        stored = {e.event_id for e in feedback.events()}
    lost = report.acknowledged - stored
    assert not lost, f"{len(lost)} acknowledged events are not in the store"


def test_concurrent_recommend_and_feedback_lose_nothing(copy_store: Callable[[], Path]) -> None:
    store = copy_store()
    rec = Recommender.load(store)
    users = [*sorted(set(rec.interactions.user_ids.tolist()))[:20], "new-1", "new-2"]
    with running(create_app(rec, token=TOKEN)) as url:
        report = run_load(url, clients=CLIENTS, seconds=SECONDS, users=users, token=TOKEN)
        metrics = httpx.get(f"{url}/metrics").text
    rec.close()
    _check(report, store)
    served = report.statuses[("/recommend", 200)]
    assert f"ragrec_recommendations_total {served}" in metrics


def test_several_workers_share_the_feedback_store(copy_store: Callable[[], Path]) -> None:
    """``ragrec serve --workers 2``: two processes, each with its own model, one SQLite
    store in WAL mode."""
    store = copy_store()
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # uvicorn's workers bind it themselves
    env = {**os.environ, "RAGREC_SERVE_TOKEN": TOKEN}
    script = Path(sys.executable).parent / "ragrec"
    server = subprocess.Popen(
        [str(script), "serve", str(store), "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(server.stdout or ()), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while sum("Application startup complete" in line for line in lines) < 2:
            assert server.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "the workers did not start: " + "".join(lines)
            time.sleep(0.2)
        assert httpx.get(f"{url}/health").status_code == 200
        unauthorised = httpx.post(f"{url}/feedback", json={"events": []})
        assert unauthorised.status_code == 401
        report = run_load(url, clients=4, seconds=SECONDS, users=[1, 2, 3, "new"], token=TOKEN)
    finally:
        server.terminate()
        server.wait(timeout=60)
        reader.join(timeout=10)
    output = "".join(lines)
    assert server.returncode == 0, output
    _check(report, store)
