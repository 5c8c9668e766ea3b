"""Retrieval quality on the llamarec protocol: each channel alone and fused, side by side.

    python benchmarks/retrieval_quality.py [--data PATH] [--cache-dir DIR] [--grid]

Prints NDCG@10 and Recall@10/20/50/100 on the validation and test splits for every
channel alone, the fused retriever with score fusion and with reciprocal-rank fusion,
and the published SASRec / LRURec / LlamaRec rows. ``--grid`` also searches channel
weights on the validation split (the defaults in RetrieverConfig came from it).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from ragrec.data import load_movielens
from ragrec.eval import (
    ProtocolData,
    RetrievalRanker,
    RetrievalRankerConfig,
    evaluate,
    llamarec_protocol,
)
from ragrec.retrieval import ChannelSpec, ChannelWeights, FusionConfig, RetrieverConfig

METRICS = ("ndcg@10", "recall@10", "recall@20", "recall@50", "recall@100")
PUBLISHED = {  # LlamaRec paper, Table 1, test split: ndcg@10, recall@10
    "SASRec (published)": (0.0522, 0.0993),
    "LRURec (published)": (0.0705, 0.1426),
    "LlamaRec (published, LLM re-ranked)": (0.0759, 0.1524),
}


def _row(label: str, split: str, metrics: dict[str, float], seconds: float) -> str:
    values = " ".join(f"{metrics[m]:>10.4f}" for m in METRICS)
    return f"{label:38} {split:10} {values} {seconds:8.1f}"


def _run(
    data: ProtocolData, ranker: RetrievalRanker, split: str, fit: bool
) -> tuple[dict[str, float], float]:
    result = evaluate(data, ranker, split=split, metrics=METRICS, fit=fit)  # type: ignore[arg-type]
    return dict(result.metrics), result.seconds["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
    parser.add_argument("--data", default=str(default))
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ragrec"))
    parser.add_argument("--grid", action="store_true", help="search fusion weights on validation")
    args = parser.parse_args()
    ml = load_movielens(args.data)
    data = llamarec_protocol(ml.catalog, ml.interactions)
    base = RetrieverConfig(cache_dir=args.cache_dir)
    header = f"{'system':38} {'split':10} " + " ".join(f"{m:>10}" for m in METRICS) + "   seconds"
    print(header)
    print("-" * len(header))
    for spec in base.channels:
        config = base.model_copy(update={"channels": [ChannelSpec(kind=spec.kind)]})
        for split in ("validation", "test"):
            ranker = RetrievalRanker(RetrievalRankerConfig(retriever=config), name=spec.kind)
            metrics, seconds = _run(data, ranker, split, fit=True)
            print(_row(f"{spec.kind} alone", split, metrics, seconds), flush=True)
    for method in ("score", "rrf"):
        config = base.model_copy(update={"fusion": FusionConfig(method=method)})
        for split in ("validation", "test"):
            ranker = RetrievalRanker(RetrievalRankerConfig(retriever=config))
            metrics, seconds = _run(data, ranker, split, fit=True)
            print(_row(f"fused ({method} fusion)", split, metrics, seconds), flush=True)
    for label, (ndcg, recall) in PUBLISHED.items():
        print(f"{label:38} {'test':10} {ndcg:>10.4f} {recall:>10.4f}")
    if args.grid:
        _grid(data, base)


def _grid(data: ProtocolData, base: RetrieverConfig) -> None:
    """Channel weights by validation NDCG@10 (ties: Recall@20)."""
    print("\nweight grid on the validation split (score fusion)")
    ranker = RetrievalRanker(RetrievalRankerConfig(retriever=base))
    ranker.fit(data.catalog, data.fit_rows("validation"))
    results = []
    start = time.perf_counter()
    for ease, semantic, popularity in itertools.product(
        (0.25, 0.5, 1.0), (0.0, 0.1, 0.3), (0.0, 0.05, 0.2)
    ):
        weights = {"transition": 1.0, "ease": ease, "semantic": semantic, "popularity": popularity}
        ranker.retriever.weights = ChannelWeights(weights)
        metrics, _ = _run(data, ranker, "validation", fit=False)
        results.append((metrics["ndcg@10"], metrics["recall@20"], weights))
        print(
            f"  {weights} ndcg@10 {metrics['ndcg@10']:.4f} recall@20 {metrics['recall@20']:.4f}",
            flush=True,
        )
    best = max(results, key=lambda r: (r[0], r[1]))
    seconds = time.perf_counter() - start
    print(f"best on validation: {best[2]} ndcg@10 {best[0]:.4f} recall@20 {best[1]:.4f}")
    print(f"grid took {seconds:.0f} s")


if __name__ == "__main__":
    main()
