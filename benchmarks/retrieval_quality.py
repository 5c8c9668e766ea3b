"""Retrieval quality on the llamarec protocol: every channel alone and the fused retriever,
side by side, on the validation and test splits, with fit time and memory.

    python benchmarks/retrieval_quality.py [--data PATH | --dataset NAME] [--cache-dir DIR]
        [--channels sasrec,ease,...] [--no-fused] [--threads N]

Datasets: ``ml-latest-small`` (the folder given by --data, default ../shared/data/...),
``ml-short`` (the same users, each cut to their newest 20 rows: short sequences on real
data) and ``synthetic-shop`` (a seeded e-commerce-like log: short sessions driven by
item-to-item complements, category taste and popularity).

Channels are fit once on the training rows (both splits fit on them under this protocol)
and scored on both splits. The fused retriever (the default RetrieverConfig) is scored
with its prior weights, then with the fusion fit on the validation targets (test only:
the validation figure of a fit fusion is in-sample). Memory is the peak rise of the
process's resident set while a channel fits (sampled every 20 ms), and the size of what
it keeps (its saved state).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragrec.data import Catalog, Interactions, load_movielens
from ragrec.eval import (
    ProtocolData,
    RetrievalRanker,
    RetrievalRankerConfig,
    evaluate,
    llamarec_protocol,
)
from ragrec.retrieval import ChannelSpec, RetrieverConfig

METRICS = ("ndcg@10", "recall@10", "recall@20", "recall@50", "recall@100")
PUBLISHED = {  # LlamaRec paper, Table 1, test split: ndcg@10, recall@10
    "SASRec (LlamaRec paper)": (0.0522, 0.0993, None),
    "LRURec (LlamaRec paper)": (0.0705, 0.1426, None),
    "LlamaRec (LlamaRec paper, LLM re-ranked)": (0.0759, 0.1524, None),
}
INDEPENDENT = {  # issue 15: independent implementations, same protocol, test split
    "EASE(recency), independent": (0.0763, 0.1344, 0.1869),
    "EASE(recency)+transition, independent": (0.0866, 0.1459, 0.1984),
    "SASRec (plain torch, CE), independent": (0.0685, 0.1213, 0.1672),
}


class _PeakRss:
    """Peak rise of this process's resident set inside the block (sampled)."""

    def __enter__(self) -> _PeakRss:
        import psutil

        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def synthetic_shop(seed: int = 0, users: int = 6000, items: int = 3000) -> tuple[Catalog, Any]:
    """A short-sequence shop log: each item has 3 complements (mostly in its category);
    a user with one or two favourite categories moves to a complement of the last item
    (50%), a popular item of a favourite category (35%) or any popular item (15%)."""
    rng = np.random.default_rng(seed)
    cats = rng.integers(0, 40, items)
    popularity = rng.zipf(1.6, items).astype(float)
    by_cat = [np.flatnonzero(cats == c) for c in range(40)]
    complements = np.empty((items, 3), dtype=np.int64)
    for i in range(items):
        same = by_cat[cats[i]]
        complements[i] = np.where(
            rng.random(3) < 0.8, rng.choice(same, 3), rng.integers(0, items, 3)
        )
    p_all = popularity / popularity.sum()
    rows = []
    t = 1_600_000_000
    for u in range(users):
        fav = rng.choice(40, rng.integers(1, 3), replace=False)
        pool = np.concatenate([by_cat[c] for c in fav])
        p_fav = popularity[pool] / popularity[pool].sum()
        length = 5 + rng.geometric(1 / 5)
        item = int(rng.choice(pool, p=p_fav))
        for _ in range(length):
            rows.append((u, item, t))
            t += int(rng.integers(30, 3000))
            r = rng.random()
            if r < 0.5:
                item = int(complements[item, rng.integers(0, 3)])
            elif r < 0.85:
                item = int(rng.choice(pool, p=p_fav))
            else:
                item = int(rng.choice(items, p=p_all))
    catalog = Catalog.from_frame(
        pd.DataFrame(
            {
                "item_id": np.arange(items),
                "title": [f"product {i} (category {cats[i]})" for i in range(items)],
                "genres": [f"c{c}" for c in cats],
            }
        )
    )
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return catalog, Interactions.from_frame(frame, catalog=catalog)


def load_dataset(name: str, path: str) -> ProtocolData:
    if name == "synthetic-shop":
        catalog, rows = synthetic_shop()
        return llamarec_protocol(catalog, rows)
    ml = load_movielens(path)
    rows = ml.interactions
    if name == "ml-short":
        frame = pd.DataFrame(
            {"u": rows.user_ids, "t": rows.timestamps, "i": rows.item_ids}
        ).sort_values(["u", "t", "i"], kind="stable")
        keep = frame.groupby("u").tail(20).index.to_numpy()
        mask = np.zeros(len(rows), dtype=bool)
        mask[keep] = True
        rows = rows.select(mask)
    return llamarec_protocol(ml.catalog, rows)


def _row(label: str, split: str, metrics: dict[str, float], extra: str = "") -> str:
    values = " ".join(f"{metrics[m]:>10.4f}" for m in METRICS)
    return f"{label:42} {split:10} {values} {extra}"


def _scores(data: ProtocolData, ranker: RetrievalRanker, split: str) -> dict[str, float]:
    result = evaluate(data, ranker, split=split, metrics=METRICS, fit=False)  # type: ignore[arg-type]
    return dict(result.metrics)


def _state_mb(ranker: RetrievalRanker) -> float:
    total = 0
    for channel in ranker.retriever.channels:
        state = getattr(channel, "state", None)
        if state is not None:
            total += sum(np.asarray(v).nbytes for v in state().values())
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
    parser.add_argument("--data", default=str(default))
    parser.add_argument(
        "--dataset",
        default="ml-latest-small",
        choices=["ml-latest-small", "ml-short", "synthetic-shop"],
    )
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ragrec"))
    parser.add_argument("--channels", default="", help="comma-separated kinds (default: all)")
    parser.add_argument("--no-fused", action="store_true", help="skip the fused retriever")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for sasrec")
    args = parser.parse_args()
    data = load_dataset(args.dataset, args.data)
    print(
        f"{args.dataset}: {len(data.catalog)} items, {data.train.n_users} users, "
        f"{len(data.train)} training rows"
    )
    base = RetrieverConfig(cache_dir=args.cache_dir)
    if args.dataset != "ml-latest-small":  # item texts carry no meaning there
        base = base.model_copy(
            update={"channels": [c for c in base.channels if c.kind != "semantic"]}
        )
    options = {"sasrec": {"threads": args.threads}} if args.threads else {}
    kinds = args.channels.split(",") if args.channels else [c.kind for c in base.channels]
    header = (
        f"{'system':42} {'split':10} "
        + " ".join(f"{m:>10}" for m in METRICS)
        + "  fit s / peak MB / state MB"
    )
    print(header)
    print("-" * len(header))
    for kind in kinds:
        spec = ChannelSpec(kind=kind, options=options.get(kind, {}))
        config = base.model_copy(update={"channels": [spec]})
        ranker = RetrievalRanker(RetrievalRankerConfig(retriever=config), name=kind)
        start = time.perf_counter()
        with _PeakRss() as mem:
            ranker.fit(data.catalog, data.fit_rows("test"))
        seconds = time.perf_counter() - start
        cost = f"{seconds:7.1f} / {mem.rise_mb:7.0f} / {_state_mb(ranker):7.1f}"
        for split in ("validation", "test"):
            print(_row(f"{kind} alone", split, _scores(data, ranker, split), cost), flush=True)
            cost = ""
    if not args.no_fused:
        channels = [
            c.model_copy(update={"options": options.get(c.kind, {})}) for c in base.channels
        ]
        config = base.model_copy(update={"channels": channels})
        ranker = RetrievalRanker(RetrievalRankerConfig(retriever=config))
        start = time.perf_counter()
        with _PeakRss() as mem:
            ranker.fit(data.catalog, data.fit_rows("test"))
        seconds = time.perf_counter() - start
        cost = f"{seconds:7.1f} / {mem.rise_mb:7.0f} / {_state_mb(ranker):7.1f}"
        for split in ("validation", "test"):
            print(_row("fused, prior weights", split, _scores(data, ranker, split), cost))
            cost = ""
        start = time.perf_counter()
        ranker.tune(data)
        assert ranker.fusion is not None
        fit = ranker.fusion
        print(_row("fused, fusion fit on validation", "test", _scores(data, ranker, "test")))
        print(
            f"  fusion fit in {time.perf_counter() - start:.1f} s on {fit.users} users: "
            f"method {fit.method}, weights {dict(fit.weights)}; validation {fit.metric} "
            f"{fit.value:.4f} (in-sample; prior {fit.prior_value:.4f})"
        )
    if args.dataset == "ml-latest-small":
        for label, (ndcg, recall, r20) in {**PUBLISHED, **INDEPENDENT}.items():
            tail = f" {r20:>10.4f}" if r20 is not None else ""
            print(f"{label:42} {'test':10} {ndcg:>10.4f} {recall:>10.4f}{tail}")


if __name__ == "__main__":
    main()
