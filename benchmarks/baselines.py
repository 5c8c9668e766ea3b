"""Non-learned baselines on the llamarec protocol, validation and test side by side.

    python benchmarks/baselines.py [--data ../shared/data/ml-latest-small]

Prints NDCG/Recall/MRR for random and popularity (all-time and recent) next to the
published rows of the LlamaRec paper, and the seconds each run took.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ragrec.data import load_movielens
from ragrec.eval import evaluate, llamarec_protocol, make_ranker

METRICS = ("ndcg@10", "recall@10", "recall@20", "mrr@10")
PUBLISHED = {  # LlamaRec paper, Table 1 (test split): ndcg@10, recall@10
    "SASRec (published)": (0.0522, 0.0993),
    "LRURec (published)": (0.0705, 0.1426),
    "LlamaRec (published)": (0.0759, 0.1524),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
    parser.add_argument("--data", default=str(default))
    args = parser.parse_args()
    ml = load_movielens(args.data)
    data = llamarec_protocol(ml.catalog, ml.interactions)
    systems = {
        "random": ("random", {"seed": 0}),
        "popularity": ("popularity", {}),
        "popularity (last 365 days)": ("popularity", {"window_days": 365}),
    }
    header = f"{'system':32} {'split':10} " + " ".join(f"{m:>10}" for m in METRICS) + "  seconds"
    print(header)
    print("-" * len(header))
    for label, (name, config) in systems.items():
        for split in ("validation", "test"):
            result = evaluate(data, make_ranker(name, config), split=split, metrics=METRICS)
            values = " ".join(f"{result.metrics[m]:>10.4f}" for m in METRICS)
            print(f"{label:32} {split:10} {values} {result.seconds['total']:8.2f}")
    for label, (ndcg, recall) in PUBLISHED.items():
        print(f"{label:32} {'test':10} {ndcg:>10.4f} {recall:>10.4f}")


if __name__ == "__main__":
    main()
