"""A load generator for the service: concurrent clients sending recommend and feedback
requests for a fixed time (used by the load test and the serving benchmark; also a way
to check a deployment)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

__all__ = ["LoadReport", "run_load"]


@dataclass(frozen=True)
class LoadReport:
    """What a load run saw, client side.

    Attributes:
        seconds: Wall time of the run.
        statuses: ``(route, status)`` -> responses.
        latencies: Route -> seconds per request (client side).
        acknowledged: Ids of the events a 200 response acknowledged.
        transport_errors: Requests that got no response (connection errors, timeouts).
        errors: The first few unexpected responses or exceptions, for the report.
    """

    seconds: float
    statuses: dict[tuple[str, int], int]
    latencies: dict[str, list[float]]
    acknowledged: frozenset[str]
    transport_errors: int
    errors: tuple[str, ...] = field(default=())

    @property
    def server_errors(self) -> int:
        """Responses with a 5xx status."""
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)

    def requests_per_second(self, route: str | None = None) -> float:
        """Completed requests per second (of one route, or all)."""
        n = sum(n for (r, _), n in self.statuses.items() if route is None or r == route)
        return n / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, route: str, q: float) -> float:
        """The ``q``-th percentile (0-100) of a route's latency in seconds (NaN if none)."""
        values = self.latencies.get(route, [])
        return float(np.percentile(values, q)) if values else float("nan")

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: requests/s, p50/p95 per route, errors, events."""
        routes = sorted(self.latencies)
        return {
            "seconds": round(self.seconds, 2),
            "requests": sum(self.statuses.values()),
            "requests_per_s": round(self.requests_per_second(), 2),
            "routes": {
                r: {
                    "requests": len(self.latencies[r]),
                    "per_s": round(self.requests_per_second(r), 2),
                    "p50_ms": round(1000 * self.percentile(r, 50), 1),
                    "p95_ms": round(1000 * self.percentile(r, 95), 1),
                }
                for r in routes
            },
            "statuses": {f"{r} {s}": n for (r, s), n in sorted(self.statuses.items())},
            "server_errors": self.server_errors,
            "transport_errors": self.transport_errors,
            "acknowledged_events": len(self.acknowledged),
            "errors": list(self.errors),
        }


def run_load(
    url: str,
    *,
    clients: int = 8,
    seconds: float = 10.0,
    users: Sequence[int | str] = (1,),
    token: str | None = None,
    k: int = 10,
    explain: bool = False,
    feedback_share: float = 0.5,
    batch_every: int = 5,
    timeout: float = 120.0,
    seed: int = 0,
) -> LoadReport:
    """Drive a running service with ``clients`` concurrent clients for ``seconds``.

    Each client loops: ``POST /recommend`` for a random user; then, with probability
    ``feedback_share``, ``POST /feedback`` on one of the items it was served (every
    ``batch_every``-th time a batch of up to three events), each with a new event id.

    Args:
        url: The service's base URL.
        clients: Concurrent clients (threads, one connection each).
        seconds: How long to send new requests.
        users: User ids to recommend to.
        token: Bearer token for the feedback route.
        k: Items per recommendation.
        explain: Ask for LLM explanations.
        feedback_share: Share of recommendations followed by feedback.
        batch_every: Every n-th feedback request is a batch (0: never).
        timeout: Per-request timeout in seconds.
        seed: Seed of the users and items chosen.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    lock = threading.Lock()
    statuses: Counter[tuple[str, int]] = Counter()
    latencies: dict[str, list[float]] = {"/recommend": [], "/feedback": []}
    acknowledged: set[str] = set()
    errors: list[str] = []
    transport = 0
    start = time.perf_counter()
    deadline = start + seconds

    def send(http: httpx.Client, route: str, payload: dict[str, Any]) -> httpx.Response | None:
        """POST ``payload`` to ``route`` and count the outcome; the response when it is a
        200, else None."""
        nonlocal transport
        t0 = time.perf_counter()
        try:
            response = http.post(route, json=payload)
        except httpx.HTTPError as exc:
            with lock:
                transport += 1
                errors.append(f"{route}: {type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - t0
        ok = response.status_code == 200
        with lock:
            statuses[(route, response.status_code)] += 1
            latencies[route].append(elapsed)
            if not ok and len(errors) < 10:
                errors.append(f"{route} {response.status_code}: {response.text[:200]}")
        return response if ok else None

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        sent = 0
        with httpx.Client(base_url=url, timeout=timeout, headers=headers) as http:
            while time.perf_counter() < deadline:
                user = rng.choice(list(users))
                body = {"user_id": user, "k": k, "explain": explain}
                response = send(http, "/recommend", body)
                if response is None or rng.random() >= feedback_share:
                    continue
                served = response.json()
                items = [i["item_id"] for i in served["items"]] or [None]
                sent += 1
                size = min(3, len(items)) if batch_every and sent % batch_every == 0 else 1
                events = [
                    {
                        "event_id": uuid.uuid4().hex,
                        "user_id": user,
                        "item_id": item,
                        "kind": rng.choice(["click", "like", "dislike", "purchase"]),
                        "rec_id": served["rec_id"],
                        "timestamp": datetime.now(UTC).isoformat(),
                    }
                    for item in rng.sample(items, size)
                    if item is not None
                ]
                if not events:
                    continue
                payload: dict[str, Any] = {"events": events} if size > 1 else events[0]
                answer = send(http, "/feedback", payload)
                if answer is not None:
                    data = answer.json()
                    done = data.get("events", [data])
                    with lock:
                        acknowledged.update(d["event_id"] for d in done)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadReport(
        seconds=time.perf_counter() - start,
        statuses=dict(statuses),
        latencies=latencies,
        acknowledged=frozenset(acknowledged),
        transport_errors=transport,
        errors=tuple(errors),
    )
