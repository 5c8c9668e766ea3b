"""Request counts, a latency histogram and recommendation outcomes, in the Prometheus
text format (one set per process)."""

from __future__ import annotations

import bisect
import threading
from collections import Counter

__all__ = ["LATENCY_BUCKETS", "ServiceMetrics"]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Upper bounds (seconds) of the request latency histogram; ``+Inf`` is added."""


def _labels(**values: object) -> str:
    text = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in values.items()
    )
    return "{" + text + "}"


class ServiceMetrics:
    """Thread-safe counters of one server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = {}
        self._recommendations: Counter[str] = Counter()
        self._events: Counter[str] = Counter()

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a finished request and its latency."""
        key = (method, route)
        with self._lock:
            self._requests[(method, route, status)] += 1
            counts = self._buckets.setdefault(key, [0] * (len(LATENCY_BUCKETS) + 1))
            counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._sums[key] = self._sums.get(key, 0.0) + seconds

    def recommendation(self, *, degraded: bool, cold_start: bool) -> None:
        """Count a served recommendation and its flags."""
        with self._lock:
            self._recommendations["served"] += 1
            self._recommendations["degraded"] += int(degraded)
            self._recommendations["cold_start"] += int(cold_start)

    def events(self, *, stored: int, repeated: int) -> None:
        """Count feedback events stored now and resends of stored ones."""
        with self._lock:
            self._events["stored"] += stored
            self._events["repeat"] += repeated

    def render(self) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        with self._lock:
            requests = dict(self._requests)
            buckets = {k: list(v) for k, v in self._buckets.items()}
            sums = dict(self._sums)
            recs = dict(self._recommendations)
            events = dict(self._events)
        lines = [
            "# HELP ragrec_http_requests_total HTTP requests by method, route and status.",
            "# TYPE ragrec_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(requests.items()):
            labels = _labels(method=method, route=route, status=status)
            lines.append(f"ragrec_http_requests_total{labels} {n}")
        lines += [
            "# HELP ragrec_http_request_duration_seconds Request latency by method and route.",
            "# TYPE ragrec_http_request_duration_seconds histogram",
        ]
        for (method, route), counts in sorted(buckets.items()):
            running = 0
            for bound, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
                running += n
                labels = _labels(method=method, route=route, le=bound)
                lines.append(f"ragrec_http_request_duration_seconds_bucket{labels} {running}")
            labels = _labels(method=method, route=route)
            lines.append(
                f"ragrec_http_request_duration_seconds_sum{labels} {sums[(method, route)]}"
            )
            lines.append(f"ragrec_http_request_duration_seconds_count{labels} {running}")
        for name, key, text in (
            ("ragrec_recommendations_total", "served", "Recommendations served."),
            (
                "ragrec_recommendations_degraded_total",
                "degraded",
                "Recommendations whose LLM stage failed (retrieval order served).",
            ),
            (
                "ragrec_recommendations_cold_start_total",
                "cold_start",
                "Recommendations for users without history.",
            ),
        ):
            lines += [
                f"# HELP {name} {text}",
                f"# TYPE {name} counter",
                f"{name} {recs.get(key, 0)}",
            ]
        lines += [
            "# HELP ragrec_feedback_events_total Feedback events by result (stored, repeat).",
            "# TYPE ragrec_feedback_events_total counter",
        ]
        for result in ("stored", "repeat"):
            lines.append(
                f"ragrec_feedback_events_total{_labels(result=result)} {events.get(result, 0)}"
            )
        return "\n".join(lines) + "\n"
