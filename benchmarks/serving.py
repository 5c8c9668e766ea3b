"""Throughput and latency of ``ragrec serve``, with and without LLM explanations.

    python benchmarks/serving.py [--data PATH] [--store runs/bench-serve] [--clients 8]
        [--seconds 30] [--explain-seconds 120] [--workers 1] [--skip-explain]
        [--llm-candidates 20]

Builds a store from ml-latest-small once (default config: retrieval channels, LLM
prompts for the top 20 with explanations of the top ``explain_top`` items; the LLM does
not rank, as its blend weight is 0; ``--llm-candidates 0``: retrieval only, no prompt
and no model), serves it with ``ragrec serve`` in its own process
on loopback, and drives it with ``--clients`` concurrent HTTP clients
(:func:`ragrec.serve.run_load`: each ``POST /recommend`` for a random user, half of them
followed by ``POST /feedback`` on a served item, every fifth of those a batch of three).
Two runs: ``explain=false`` for ``--seconds``, then ``explain=true`` for
``--explain-seconds``. Prints requests/s and p50/p95 latency per route, 5xx responses,
and how many acknowledged events are missing from the feedback store afterwards.
Client and server share the machine: on a 2-core machine the clients take CPU from it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ragrec import Recommender, load_movielens
from ragrec.feedback import open_store
from ragrec.serve import LoadReport, run_load

TOKEN = "bench-token"


def _build(store: Path, data: Path, *, llm_candidates: int) -> None:
    if (store / "manifest.json").is_file():
        saved = json.loads((store / "config.json").read_text())["llm_candidates"]
        if saved != llm_candidates:
            raise SystemExit(f"{store} has llm_candidates={saved}; pass another --store")
        print(f"store: {store} (reused)")
        return
    ml = load_movielens(data)
    t0 = time.perf_counter()
    config = {"llm_candidates": llm_candidates}
    Recommender.build(ml.catalog, ml.interactions, config, path=store).close()
    print(f"store: {store} built in {time.perf_counter() - t0:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _row(name: str, report: LoadReport, lost: int) -> str:
    rec, fb = "/recommend", "/feedback"
    return (
        f"| {name} | {report.requests_per_second(rec):.2f} | "
        f"{1000 * report.percentile(rec, 50):.1f} | {1000 * report.percentile(rec, 95):.1f} | "
        f"{report.requests_per_second(fb):.2f} | {1000 * report.percentile(fb, 50):.1f} | "
        f"{1000 * report.percentile(fb, 95):.1f} | {report.server_errors} | "
        f"{report.transport_errors} | {len(report.acknowledged)} | {lost} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/ml-latest-small")
    parser.add_argument("--store", default="runs/bench-serve")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--explain-seconds", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-explain", action="store_true")
    parser.add_argument(
        "--llm-candidates",
        type=int,
        default=20,
        help="The store's llm_candidates: 20 (default) renders the LLM prompt in every "
        "request, 0 serves retrieval only.",
    )
    args = parser.parse_args()

    store = Path(args.store)
    _build(store, Path(args.data), llm_candidates=args.llm_candidates)
    if args.llm_candidates == 0:
        args.skip_explain = True  # nothing to explain without a prompt
    users = sorted(set(_store_users(store)))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RAGREC_SERVE_TOKEN": TOKEN}
    script = Path(sys.executable).parent / "ragrec"
    command = [str(script), "serve", str(store), "--port", str(port)]
    command += ["--workers", str(args.workers), "--log-level", "warning"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[bytes] = []
    threading.Thread(target=lambda: lines.extend(server.stdout or ()), daemon=True).start()
    rows = []
    try:
        t0 = time.perf_counter()
        while True:
            if server.poll() is not None:
                raise SystemExit(b"".join(lines).decode())
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        print(f"server up in {time.perf_counter() - t0:.1f} s ({args.workers} worker(s))")
        # warm up: the first request loads the tokenizer the prompts are measured with,
        # the first explained one the LLM
        for explain in (False, True)[: 1 if args.skip_explain else 2]:
            t0 = time.perf_counter()
            response = httpx.post(
                f"{url}/recommend", json={"user_id": users[0], "explain": explain}, timeout=600
            )
            response.raise_for_status()
            print(f"warm-up explain={explain}: {time.perf_counter() - t0:.1f} s")
        runs = [("without explanations", False, args.seconds)]
        if not args.skip_explain:
            runs.append(("with LLM explanations", True, args.explain_seconds))
        for name, explain, seconds in runs:
            report = run_load(
                url,
                clients=args.clients,
                seconds=seconds,
                users=[*users, "new-user-1", "new-user-2"],
                token=TOKEN,
                explain=explain,
                timeout=600,
            )
            with open_store(str(store / "feedback.sqlite")) as feedback:
                stored = {e.event_id for e in feedback.events()}
            lost = len(report.acknowledged - stored)
            rows.append(_row(f"{name}, {args.clients} clients", report, lost))
            print(json.dumps({name: report.summary()}, indent=1))
        metrics = httpx.get(f"{url}/metrics").text
        degraded = [m for m in metrics.splitlines() if m.startswith("ragrec_recommendations_")]
    finally:
        server.terminate()
        server.wait(timeout=60)
    print()
    print(
        "| run | recommend req/s | p50 ms | p95 ms | feedback req/s | p50 ms | p95 ms | "
        "5xx | no response | events acknowledged | lost |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print("\n".join(degraded))


def _store_users(store: Path) -> list[int]:
    import pandas as pd

    frame = pd.read_parquet(store / "interactions.parquet", columns=["user_id"])
    return [int(u) for u in frame["user_id"].unique()]


if __name__ == "__main__":
    main()
