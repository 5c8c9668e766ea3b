"""Retrieval speed and memory: numpy exact vs FAISS flat / HNSW / IVF, side by side.

    .venv/bin/python benchmarks/retrieval_speed.py [--sizes 10000,1000000] [--dim 384]
        [--queries 1000] [--k 50] [--seed 0] [--user-queries 200] [--kinds numpy,flat,hnsw,ivf]
        [--ef-search 128,256,512] [--ivf-nprobe 16,32,64]

Synthetic unit-length float32 vectors drawn from a mixture of Gaussian clusters (queries from
the same mixture). For each size every index is built in the same process and measured:
build seconds, index memory (``memory_bytes()``) and the process RSS delta of the build (from
/proc/self/statm), per-user latency p50/p95 (single-query ``VectorIndex.search`` calls), batch
throughput (all queries in one call), recall@k and recall@100 against the numpy exact
reference, and the Python cost of the public search wrapper over the raw backend call.
Optionally, HNSW efSearch and IVF nprobe are then swept on the same indexes.
Progress goes to stderr; tables to stdout. Wall-clock figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ragrec.retrieval import FaissIndex, IndexConfig, NumpyIndex, VectorIndex, make_index

RECALL_DEPTH = 100
KINDS = ("numpy", "flat", "hnsw", "ivf")
_START = time.perf_counter()


def log(message: str) -> None:
    """Progress line on stderr with the seconds since start."""
    print(f"[{time.perf_counter() - _START:8.1f}s] {message}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size (VmHWM) of this process, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def mixture(
    n: int, dim: int, *, centres: np.ndarray, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """``n`` unit vectors: a random centre plus isotropic Gaussian noise, normalised.

    ``spread`` is the expected noise norm relative to the (unit) centre norm.
    """
    out = np.empty((n, dim), dtype=np.float32)
    sigma = np.float32(spread / np.sqrt(dim))
    step = 100_000  # bounds the temporaries at 1M x 384
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        block = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        block *= sigma
        block += centres[rng.integers(0, len(centres), hi - lo)]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:hi] = block
    return out


def chunk_rows(n_items: int, budget_bytes: int) -> int:
    """Queries per NumpyIndex call so that its (queries x items) temporaries fit the budget.

    NumpyIndex._search holds the float32 similarities, their negation and argpartition's
    int64 indices at once: about 16 bytes per (query, item) pair.
    """
    return max(1, budget_bytes // (16 * max(1, n_items)))


def search_ids(index: VectorIndex, queries: np.ndarray, k: int, rows: int) -> np.ndarray:
    """Ids of the top ``k`` per query via the public search, ``rows`` queries per call."""
    parts = [index.search(queries[lo : lo + rows], k).ids for lo in range(0, len(queries), rows)]
    found = np.concatenate(parts)
    found[found == None] = -1  # noqa: E711 (rows short of k hits are padded with None)
    return found.astype(np.int64)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each truth row that the found row holds."""
    hits = [
        len(np.intersect1d(f, t, assume_unique=True)) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.sum(hits) / truth.size)


@dataclass(frozen=True)
class Row:
    """Figures for one index at one size."""

    name: str
    build_s: float
    memory_bytes: int
    rss_delta_bytes: int
    p50_ms: float
    p95_ms: float
    raw_p50_ms: float
    wrapper_us: float
    batch_qps: float
    raw_batch_qps: float
    recall_k: float
    recall_100: float


def build(
    kind: str, items: np.ndarray, ids: np.ndarray, *, chunks: int
) -> tuple[VectorIndex, float, int]:
    """Build one index; returns it, the build seconds and the process RSS delta."""
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    index = (
        NumpyIndex(items.shape[1])
        if kind == "numpy"
        else make_index(items.shape[1], IndexConfig(kind=kind))
    )
    # HNSW is added in chunks only to report progress; IVF trains on its first add, so it
    # gets every vector at once.
    parts = chunks if kind == "hnsw" else 1
    bounds = np.linspace(0, len(items), parts + 1).astype(int)
    for lo, hi in itertools.pairwise(bounds):
        index.add(ids[lo:hi], items[lo:hi])
        if parts > 1:
            log(f"  {kind}: {hi:,}/{len(items):,} added ({time.perf_counter() - start:.1f} s)")
    seconds = time.perf_counter() - start
    gc.collect()
    return index, seconds, rss_bytes() - before


def raw_search(index: VectorIndex) -> Callable[[np.ndarray, int], object]:
    """The bare backend call: faiss ``_index.search`` (default OpenMP threads), numpy
    ``_search``."""
    if isinstance(index, FaissIndex):
        return index._index.search
    return index._search


def wrapper_cost(index: VectorIndex, queries: np.ndarray, k: int) -> float:
    """Median seconds ``VectorIndex.search`` spends outside its backend for single queries.

    Each query's backend answer is computed first and replayed, so only the wrapper's
    Python (validation, id mapping, exclusion, result arrays) is timed.
    """
    fetch = k + 8
    answers = [index._search(q[None, :], fetch) for q in queries]
    times = []
    try:
        for q, answer in zip(queries, answers, strict=True):
            setattr(index, "_search", lambda _q, _k, a=answer: a)  # noqa: B010
            t0 = time.perf_counter()
            index.search(q[None, :], k)
            times.append(time.perf_counter() - t0)
    finally:
        delattr(index, "_search")
    return float(np.median(times))


def measure(
    name: str,
    index: VectorIndex,
    build_s: float,
    rss_delta: int,
    *,
    queries: np.ndarray,
    k: int,
    user_queries: int,
    truth: np.ndarray,
    rows: int,
) -> Row:
    """Latency, throughput and recall of a built index."""
    fetch = k + 8  # what VectorIndex.search asks the backend for without exclusions
    raw = raw_search(index)
    user = queries[:user_queries]
    # Raw calls get other queries than the wrapped ones, so neither is timed on a query
    # whose graph nodes or lists the other just pulled into cache.
    other = queries[user_queries : 2 * user_queries]
    if len(other) < len(user):
        other = user
    for q in queries[-5:]:  # warm-up
        index.search(q[None, :], k)
        raw(q[None, :], fetch)
    wrapped_t, raw_t = [], []
    for q, r in zip(user, other, strict=True):
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        t1 = time.perf_counter()
        raw(r[None, :], fetch)
        t2 = time.perf_counter()
        wrapped_t.append(t1 - t0)
        raw_t.append(t2 - t1)
    wrapped = np.array(wrapped_t) * 1e3
    t0 = time.perf_counter()
    found_k = search_ids(index, queries, k, rows)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for lo in range(0, len(queries), rows):
        raw(queries[lo : lo + rows], fetch)
    raw_batch_s = time.perf_counter() - t0
    found_100 = search_ids(index, queries, RECALL_DEPTH, rows)
    return Row(
        name=name,
        build_s=build_s,
        memory_bytes=index.memory_bytes(),
        rss_delta_bytes=rss_delta,
        p50_ms=float(np.percentile(wrapped, 50)),
        p95_ms=float(np.percentile(wrapped, 95)),
        raw_p50_ms=float(np.median(raw_t)) * 1e3,
        wrapper_us=wrapper_cost(index, user, k) * 1e6,
        batch_qps=len(queries) / batch_s,
        raw_batch_qps=len(queries) / raw_batch_s,
        recall_k=recall(found_k, truth[:, :k]),
        recall_100=recall(found_100, truth[:, :RECALL_DEPTH]),
    )


def print_table(n: int, args: argparse.Namespace, rows: list[Row], note: str) -> None:
    mb = 1 << 20
    print(
        f"\n## {n:,} items x {args.dim} d, {args.queries} queries, k={args.k} "
        f"({args.user_queries} single-query calls for latency)"
    )
    header = (
        f"{'index':8} {'build s':>8} {'mem MB':>8} {'RSS+ MB':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'raw p50':>8} {'wrap us':>8} {'batch q/s':>10} {'raw q/s':>10} "
        f"{f'rec@{args.k}':>8} {'rec@100':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.name:8} {r.build_s:8.2f} {r.memory_bytes / mb:8.1f} {r.rss_delta_bytes / mb:8.1f} "
            f"{r.p50_ms:8.3f} {r.p95_ms:8.3f} {r.raw_p50_ms:8.3f} {r.wrapper_us:8.1f} "
            f"{r.batch_qps:10.0f} {r.raw_batch_qps:10.0f} {r.recall_k:8.4f} {r.recall_100:8.4f}"
        )
    print(note)


def run_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> None:
    log(f"size {n:,}: generating vectors")
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    items = mixture(n, args.dim, centres=centres, spread=args.spread, rng=rng)
    queries = mixture(args.queries, args.dim, centres=centres, spread=args.spread, rng=rng)
    ids = np.arange(n, dtype=np.int64)
    rows_per_call = chunk_rows(n, args.numpy_budget_mb << 20)
    rows_numpy = min(len(queries), rows_per_call)
    kinds = [k for k in args.kinds.split(",") if k]
    indexes: dict[str, tuple[VectorIndex, float, int]] = {}
    for kind in ["numpy", *[k for k in kinds if k != "numpy"]]:
        log(f"size {n:,}: building {kind}")
        indexes[kind] = build(kind, items, ids, chunks=10 if n >= 100_000 else 1)
        log(f"size {n:,}: {kind} built in {indexes[kind][1]:.1f} s")
    log(f"size {n:,}: exact top-{RECALL_DEPTH} with numpy ({rows_numpy} queries per call)")
    truth = search_ids(indexes["numpy"][0], queries, RECALL_DEPTH, rows_numpy)
    results = []
    for kind in kinds:
        index, seconds, rss_delta = indexes[kind]
        log(f"size {n:,}: measuring {kind}")
        rows = rows_numpy if kind == "numpy" else len(queries)
        results.append(
            measure(
                kind,
                index,
                seconds,
                rss_delta,
                queries=queries,
                k=args.k,
                user_queries=args.user_queries,
                truth=truth,
                rows=rows,
            )
        )
    hnsw_cfg = IndexConfig()
    note = (
        f"hnsw M={hnsw_cfg.hnsw_m} efConstruction={hnsw_cfg.hnsw_ef_construction} "
        f"efSearch={hnsw_cfg.hnsw_ef_search}; ivf nlist={_ivf_nlist(indexes)} "
        f"nprobe={hnsw_cfg.ivf_nprobe}; numpy batch in calls of {rows_numpy} queries; "
        f"raw = bare backend search for k+8={args.k + 8} on other queries; wrap us = median "
        "Python cost of VectorIndex.search per single query (backend answer replayed); "
        f"peak RSS {peak_rss_bytes() / (1 << 30):.2f} GiB; load average {os.getloadavg()[0]:.2f}"
    )
    print_table(n, args, results, note)
    sys.stdout.flush()
    sweeps = [("hnsw", "efSearch", args.ef_search), ("ivf", "nprobe", args.ivf_nprobe)]
    if any(kind in indexes and kind in kinds and values for kind, _, values in sweeps):
        print(f"\n## {n:,} items: search-breadth sweep (same indexes, k={args.k})")
        header = (
            f"{'index':20} {'p50 ms':>8} {'p95 ms':>8} {'batch q/s':>10} "
            f"{f'rec@{args.k}':>8} {'rec@100':>8}"
        )
        print(header)
        print("-" * len(header))
        for kind, param, values in sweeps:
            if kind not in indexes or kind not in kinds:
                continue
            index = indexes[kind][0]
            for value in (int(v) for v in values.split(",") if v):
                log(f"size {n:,}: {kind} {param}={value}")
                set_breadth(index, value)
                p50, p95, qps, rec_k, rec_100 = sweep_point(
                    index, queries=queries, k=args.k, user_queries=args.user_queries, truth=truth
                )
                print(
                    f"{f'{kind} {param}={value}':20} {p50:8.3f} {p95:8.3f} {qps:10.0f} "
                    f"{rec_k:8.4f} {rec_100:8.4f}"
                )
                sys.stdout.flush()
        print(f"load average {os.getloadavg()[0]:.2f}")


def set_breadth(index: VectorIndex, value: int) -> None:
    """Set efSearch (HNSW) or nprobe (IVF) on a built FaissIndex."""
    if not isinstance(index, FaissIndex):
        raise TypeError(f"{type(index).__name__} has no search breadth")
    faiss = index._faiss
    if index.kind == "hnsw":
        faiss.downcast_index(index._index.index).hnsw.efSearch = value
    else:
        ivf = faiss.extract_index_ivf(index._index)
        ivf.nprobe = min(value, ivf.nlist)


def sweep_point(
    index: VectorIndex, *, queries: np.ndarray, k: int, user_queries: int, truth: np.ndarray
) -> tuple[float, float, float, float, float]:
    """Single-query p50/p95 ms, batch queries/s, recall@k and recall@100."""
    times = []
    for q in queries[:user_queries]:
        t0 = time.perf_counter()
        index.search(q[None, :], k)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    t0 = time.perf_counter()
    found_k = search_ids(index, queries, k, len(queries))
    qps = len(queries) / (time.perf_counter() - t0)
    found_100 = search_ids(index, queries, RECALL_DEPTH, len(queries))
    return (
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 95)),
        qps,
        recall(found_k, truth[:, :k]),
        recall(found_100, truth[:, :RECALL_DEPTH]),
    )


def _ivf_nlist(indexes: dict[str, tuple[VectorIndex, float, int]]) -> str:
    entry = indexes.get("ivf")
    if entry is None or not isinstance(entry[0], FaissIndex):
        return "-"
    faiss = entry[0]._faiss
    return str(faiss.extract_index_ivf(entry[0]._index).nlist)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,1000000", help="Comma-separated item counts.")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000, help="Queries in the batch call.")
    parser.add_argument("--user-queries", type=int, default=200, help="Single-query calls.")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=100, help="Gaussian mixture components.")
    parser.add_argument(
        "--spread", type=float, default=1.0, help="Noise norm relative to the centre norm."
    )
    parser.add_argument("--kinds", default=",".join(KINDS), help="Indexes to measure.")
    parser.add_argument(
        "--ef-search",
        default="",
        help="HNSW efSearch values to sweep after the main table, e.g. 128,256,512.",
    )
    parser.add_argument(
        "--ivf-nprobe", default="", help="IVF nprobe values to sweep, e.g. 16,32,64."
    )
    parser.add_argument(
        "--numpy-budget-mb",
        type=int,
        default=1536,
        help="Memory for one NumpyIndex search call; larger batches are split.",
    )
    args = parser.parse_args()
    unknown = set(args.kinds.split(",")) - set(KINDS)
    if unknown:
        parser.error(f"--kinds {sorted(unknown)} unknown; choose from {', '.join(KINDS)}")
    import faiss

    print(
        f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads), numpy "
        f"{np.__version__}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}, "
        f"{args.clusters} clusters, spread {args.spread}, seed {args.seed}"
    )
    rng = np.random.default_rng(args.seed)
    for n in (int(s) for s in args.sizes.split(",") if s):
        run_size(n, args, rng)
        gc.collect()


if __name__ == "__main__":
    main()
