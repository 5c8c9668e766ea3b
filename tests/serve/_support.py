"""A tiny synthetic store and a real uvicorn server on loopback, for the service tests
and the serving benchmark."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

GENRES = ("Comedy", "Drama", "Horror", "Sci-Fi", "Animation")
TINY_CONFIG: dict[str, Any] = {
    "llm_candidates": 0,
    "exemplars": {"k": 0},
    "generator": {"device": "cpu", "threads": 1},
}


def tiny_frames(
    *, n_items: int = 60, n_users: int = 40, per_user: int = 10, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items (item_id, title, genres) and ratings (user_id, item_id, rating, timestamp):
    each user mostly watches one genre, in time order."""
    rng = np.random.default_rng(seed)
    genres = [GENRES[i % len(GENRES)] for i in range(n_items)]
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1),
            "title": [f"{g} film {i + 1} ({1980 + i % 40})" for i, g in enumerate(genres)],
            "genres": genres,
        }
    )
    rows = []
    for user in range(1, n_users + 1):
        liked = GENRES[user % len(GENRES)]
        pool = items.index[items["genres"] == liked].to_numpy()
        others = items.index.to_numpy()
        picks = [int(rng.choice(pool if rng.random() < 0.8 else others)) for _ in range(per_user)]
        for step, pos in enumerate(dict.fromkeys(picks)):
            rows.append(
                {
                    "user_id": user,
                    "item_id": int(items.loc[pos, "item_id"]),
                    "rating": float(rng.choice([3.0, 4.0, 4.5, 5.0])),
                    "timestamp": 1_700_000_000 + user * 10_000 + step * 60,
                }
            )
    return items, pd.DataFrame(rows)


def build_tiny_store(path: Path, config: dict[str, Any] | None = None) -> Path:
    """A saved store at ``path`` built from :func:`tiny_frames`."""
    from ragrec import Catalog, Interactions, Recommender

    items, ratings = tiny_frames()
    catalog = Catalog.from_frame(
        items, columns={"item": "item_id", "title": "title", "genres": "genres"}
    )
    interactions = Interactions.from_frame(
        ratings,
        columns={"user": "user_id", "item": "item_id", "value": "rating", "timestamp": "timestamp"},
        catalog=catalog,
    )
    Recommender.build(catalog, interactions, config or TINY_CONFIG, path=path).close()
    return path


def free_socket() -> socket.socket:
    """A loopback socket bound to a free port (handed to uvicorn: no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running(app: Any, *, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields its URL."""
    import uvicorn

    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
