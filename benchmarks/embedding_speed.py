"""Embedding throughput of the default embedder, and the cost of re-indexing with a cache.

    .venv/bin/python benchmarks/embedding_speed.py [--data ../shared/data/ml-latest-small]
        [--batch-sizes 16,64,128] [--torch-threads 2,1] [--rounds 4] [--changed 0.01]
        [--limit N] [--seed 0]

Item texts are the ml-latest-small catalog rendered by ``item_texts`` (default template).
Throughput encodes every text once per batch size (models loaded and warmed up first), in
interleaved slices.
Re-indexing embeds the catalog through a ``CachedEmbedder`` and builds the default index:
cold (empty cache in a temp folder), warm (same texts: nothing may be computed), and with a
fraction of the texts changed. Wall-clock figures are printed, never asserted; the cache
counts are checked (exit status 1 when the warm run computes anything).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ragrec.data import load_movielens
from ragrec.retrieval import (
    CachedEmbedder,
    EmbedderConfig,
    EmbeddingCache,
    SentenceTransformerEmbedder,
    item_texts,
    make_index,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/ml-latest-small"


def throughput(
    texts: list[str], batch_sizes: list[int], threads: list[int], *, rounds: int, seed: int
) -> dict[tuple[int, int], float]:
    """Seconds to encode ``texts`` once per (batch size, torch threads).

    The texts are shuffled and cut into ``rounds`` slices; each slice is encoded by every
    setting in turn, so that drifting load from other processes hits all settings alike.
    """
    import torch

    default_threads = torch.get_num_threads()
    embedders = [SentenceTransformerEmbedder(EmbedderConfig(batch_size=b)) for b in batch_sizes]
    for embedder in embedders:
        embedder.encode(texts[: 2 * embedder.config.batch_size])  # load and warm up
    order = np.random.default_rng(seed).permutation(len(texts))
    seconds = {(b, t): 0.0 for b in batch_sizes for t in threads}
    try:
        for r, part in enumerate(np.array_split(order, rounds)):
            chunk = [texts[i] for i in part]
            for t in threads:
                torch.set_num_threads(t)
                for embedder in embedders:
                    start = time.perf_counter()
                    vectors = embedder.encode(chunk)
                    seconds[embedder.config.batch_size, t] += time.perf_counter() - start
                    if vectors.shape != (len(chunk), embedder.dim):
                        raise SystemExit(f"got vectors {vectors.shape} for {len(chunk)} texts")
            print(f"  throughput round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(default_threads)
    return seconds


def reindex(
    cached: CachedEmbedder, texts: list[str], ids: np.ndarray
) -> tuple[np.ndarray, int, float, float]:
    """Embed through the cache and build the default index: vectors, texts computed,
    embedding seconds, index seconds."""
    before = cached.computed
    start = time.perf_counter()
    vectors = cached.encode(texts)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    index = make_index(cached.dim, embedder=cached.name, expected_items=len(texts))
    index.add(ids, vectors)
    index_s = time.perf_counter() - start
    return vectors, cached.computed - before, embed_s, index_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens folder.")
    parser.add_argument("--batch-sizes", default="16,64,128")
    parser.add_argument(
        "--changed", type=float, default=0.01, help="Fraction of texts changed in the last run."
    )
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N items.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds", type=int, default=4, help="Interleaved slices for the throughput runs."
    )
    parser.add_argument(
        "--torch-threads",
        default="",
        help="Torch thread counts to compare in the throughput table, e.g. 2,1 "
        "(default: torch's own setting only; re-indexing always uses it).",
    )
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]

    import torch

    ml = load_movielens(args.data)
    texts = item_texts(ml.catalog)
    ids = ml.catalog.item_ids
    if args.limit is not None:
        texts, ids = texts[: args.limit], ids[: args.limit]
    lengths = np.array([len(t) for t in texts])
    probe = SentenceTransformerEmbedder()
    model = probe._load()
    tokens = [len(t) for t in model.tokenizer(texts[:2000], verbose=False)["input_ids"]]
    print(
        f"{probe.name} on {probe.device} (torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}); "
        f"{len(texts)} ml-latest-small item texts ({len(set(texts))} distinct), "
        f"{lengths.mean():.0f} chars mean, {lengths.max()} max, ~{np.mean(tokens):.0f} tokens mean "
        f"(first 2000), max_seq_length {probe.config.max_seq_length}"
    )
    del probe, model

    print(
        f"\n## Embedding throughput ({len(texts)} texts in {args.rounds} interleaved slices "
        "per setting)"
    )
    print(f"{'batch':>6} {'threads':>8} {'seconds':>9} {'texts/s':>9}")
    print("-" * 35)
    threads = [int(t) for t in args.torch_threads.split(",") if t] or [torch.get_num_threads()]
    timings = throughput(texts, batch_sizes, threads, rounds=args.rounds, seed=args.seed)
    for (batch, n_threads), seconds in timings.items():
        print(f"{batch:>6} {n_threads:>8} {seconds:9.2f} {len(texts) / seconds:9.1f}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()

    rng = np.random.default_rng(args.seed)
    n_changed = max(1, round(args.changed * len(texts)))
    changed_at = set(rng.choice(len(texts), n_changed, replace=False).tolist())
    edited = [f"{t} (edited)" if i in changed_at else t for i, t in enumerate(texts)]
    inner = SentenceTransformerEmbedder()  # batch 64, the default
    inner.encode(texts[:128])  # load and warm up outside the timings
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedEmbedder(inner, EmbeddingCache(Path(tmp) / "embeddings.sqlite"))
        runs = [("cold (empty cache)", texts), ("warm (same texts)", texts)]
        runs.append((f"{100 * args.changed:g}% changed ({n_changed} texts)", edited))
        results = []
        first: np.ndarray | None = None
        for label, batch_texts in runs:
            print(f"  re-index: {label}", file=sys.stderr, flush=True)
            vectors, computed, embed_s, index_s = reindex(cached, batch_texts, ids)
            if first is None:
                first = vectors
            same = [i for i in range(len(texts)) if batch_texts[i] == texts[i]]
            identical = bool(np.array_equal(vectors[same], first[same]))
            results.append((label, len(batch_texts), computed, embed_s, index_s, identical))
        db_bytes = (Path(tmp) / "embeddings.sqlite").stat().st_size

    print(
        f"\n## Re-indexing: CachedEmbedder ({inner.name}, batch {inner.config.batch_size}) + "
        f"default index build ({len(texts)} items)"
    )
    header = (
        f"{'run':28} {'texts':>6} {'computed':>9} {'embed s':>8} {'index s':>8} {'total s':>8} "
        f"{'unchanged rows identical':>25}"
    )
    print(header)
    print("-" * len(header))
    for label, n, computed, embed_s, index_s, identical in results:
        print(
            f"{label:28} {n:6d} {computed:9d} {embed_s:8.2f} {index_s:8.3f} "
            f"{embed_s + index_s:8.2f} {'yes' if identical else 'NO':>25}"
        )
        if not identical:
            failures.append(f"{label}: vectors of unchanged texts differ from the cold run")
    print(
        f"cache file {db_bytes / (1 << 20):.1f} MB after all runs; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    warm_computed = results[1][2]
    if warm_computed:
        failures.append(f"warm run computed {warm_computed} texts; expected 0")
    distinct_changed = len({edited[i] for i in changed_at})
    if results[2][2] != distinct_changed:
        failures.append(f"changed run computed {results[2][2]}, expected {distinct_changed}")
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
