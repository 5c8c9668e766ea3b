"""Does the feedback loop work? Simulated users react to recommendations over rounds.

    python benchmarks/feedback_loop.py [--data PATH] [--cache-dir DIR] [--users 100]
        [--rounds 5] [--future 20] [--skip-prob 0.0] [--seed 0]

Per user, the chronologically last ``--future`` rated items are held out as the "future"
(users need ``--min-history`` earlier rows too); a :class:`ragrec.Recommender` is built
on everything before, retrieval only (``llm_candidates=0``: the LLM does not run, so this
measures how retrieval adapts to feedback). Each round every sampled user gets
``recommend(k=10)``; the items of the list that are in the user's future are "liked"
(feedback with the recommendation id) and leave the future, the others are "skipped"
with probability ``--skip-prob``. Three variants run side by side on the same users:

* off: ``learning.weights.enabled=false``, ``learning.profile=false``
* profile: weights off, profile on (liked items join the user's history at once)
* on: channel-weight learning and profile both on (the defaults)

Items a user already liked are excluded from later lists in every variant (through
``Filters.exclude_ids``; ``--repeat-consumed`` turns that off), so "off" is not
penalised for showing a consumed item again and the variants differ only in what the
recommender learns. Prints hit@10, hits per user and future items found per round, the
channel-weight trajectory (learning on), what the channels proposed, paired
comparisons at the last round, and timings.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragrec import Recommender
from ragrec.data import Catalog, Interactions, load_movielens
from ragrec.retrieval import Filters

VARIANTS: dict[str, dict[str, Any]] = {
    "off": {"weights": {"enabled": False}, "profile": False},
    "profile": {"weights": {"enabled": False}, "profile": True},
    "on": {"weights": {"enabled": True}, "profile": True},
}


@dataclass(frozen=True)
class Split:
    """Training rows and each eligible user's held-out future (item ids)."""

    train: Interactions
    futures: dict[int, frozenset[int]]


@dataclass
class RoundStats:
    """What one variant saw in one round."""

    hits: list[int] = field(default_factory=list)  # per user, aligned with the sample
    slots: dict[str, int] = field(default_factory=dict)  # list items proposed by channel
    hit_slots: dict[str, int] = field(default_factory=dict)  # hits proposed by channel
    weights: dict[str, list[float]] = field(default_factory=dict)  # per user, after round
    global_weights: dict[str, float] = field(default_factory=dict)  # after the round


@dataclass
class VariantRun:
    """One variant's rounds and timings."""

    name: str
    rounds: list[RoundStats]
    found: np.ndarray  # (users, rounds): cumulative future items found
    build_seconds: float
    prior: dict[str, float]  # global channel weights before any feedback
    recommend_seconds: list[float]
    feedback_seconds: list[float]


def future_split(interactions: Interactions, *, future: int, min_history: int) -> Split:
    """Hold out each user's last ``future`` rows (by timestamp, then item id).

    Users with fewer than ``future + min_history`` rows keep all rows in training and
    get no future.
    """
    frame = pd.DataFrame(
        {
            "u": interactions.user_ids,
            "t": interactions.timestamps,
            "i": interactions.item_ids,
        }
    )
    frame = frame.sort_values(["u", "t", "i"], kind="stable")
    from_end = frame.groupby("u", sort=False).cumcount(ascending=False).to_numpy()
    size = frame.groupby("u", sort=False)["i"].transform("size").to_numpy()
    held = (from_end < future) & (size >= future + min_history)
    held_rows = frame.index.to_numpy()[held]
    mask = np.ones(len(interactions), dtype=bool)
    mask[held_rows] = False
    futures: dict[int, set[int]] = {}
    for u, i in zip(frame["u"].to_numpy()[held], frame["i"].to_numpy()[held], strict=True):
        futures.setdefault(int(u), set()).add(int(i))
    return Split(interactions.select(mask), {u: frozenset(s) for u, s in futures.items()})


def restrict_catalog(
    catalog: Catalog, interactions: Interactions, min_ratings: int
) -> tuple[Catalog, Interactions]:
    """Items with at least ``min_ratings`` rows (0: the whole catalog)."""
    if min_ratings <= 0:
        return catalog, interactions
    pos = catalog.positions(interactions.item_ids)
    counts = np.bincount(pos[pos >= 0], minlength=len(catalog))
    kept = catalog.subset(np.flatnonzero(counts >= min_ratings))
    return kept, interactions.restrict_items(kept)


def run_variant(
    name: str,
    catalog: Catalog,
    split: Split,
    users: Sequence[int],
    args: argparse.Namespace,
) -> VariantRun:
    """Build one recommender and play ``args.rounds`` rounds with every sampled user."""
    config = {
        "llm_candidates": 0,
        "exemplars": {"k": 0},
        "retriever": {"cache_dir": args.cache_dir},
        "learning": VARIANTS[name],
    }
    t0 = time.perf_counter()
    rec = Recommender.build(catalog, split.train, config)
    build_seconds = time.perf_counter() - t0
    prior = rec.weights(None)
    rng = np.random.default_rng(args.seed)  # each variant draws skips from the same stream
    future = {u: set(split.futures[u]) for u in users}
    consumed: dict[int, list[int]] = {u: [] for u in users}
    found = np.zeros((len(users), args.rounds), dtype=np.int64)
    rounds = []
    rec_seconds: list[float] = []
    fb_seconds: list[float] = []
    for r in range(args.rounds):
        stats = RoundStats()
        for row, user in enumerate(users):
            filters = (
                Filters(exclude_ids=list(consumed[user]))
                if consumed[user] and not args.repeat_consumed
                else None
            )
            t = time.perf_counter()
            result = rec.recommend(user, k=args.k, explain=False, filters=filters)
            rec_seconds.append(time.perf_counter() - t)
            n_hits = 0
            for item in result.items:
                hit = item.item_id in future[user]
                for channel, _, _ in item.channels:
                    stats.slots[channel] = stats.slots.get(channel, 0) + 1
                    if hit:
                        stats.hit_slots[channel] = stats.hit_slots.get(channel, 0) + 1
                if hit:
                    kind = "like"
                    n_hits += 1
                    future[user].discard(item.item_id)
                    consumed[user].append(item.item_id)
                elif args.skip_prob > 0 and rng.random() < args.skip_prob:
                    kind = "skip"
                else:
                    continue
                t = time.perf_counter()
                rec.feedback(
                    {"user_id": user, "item_id": item.item_id, "kind": kind, "rec_id": result.id}
                )
                fb_seconds.append(time.perf_counter() - t)
            stats.hits.append(n_hits)
            found[row, r] = len(consumed[user])
        for user in users:
            for channel, w in rec.weights(user).items():
                stats.weights.setdefault(channel, []).append(w)
        stats.global_weights = rec.weights(None)
        rounds.append(stats)
        print(
            f"  [{name}] round {r + 1}: hit@{args.k} {np.mean(np.asarray(stats.hits) > 0):.3f}",
            flush=True,
        )
    del rec
    gc.collect()
    return VariantRun(name, rounds, found, build_seconds, prior, rec_seconds, fb_seconds)


def _bootstrap_ci(diff: np.ndarray, seed: int, n: int = 10_000) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of paired differences."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def report(runs: dict[str, VariantRun], args: argparse.Namespace, n_users: int) -> None:
    """Print the per-round tables, the weight trajectory and the paired comparisons."""
    names = list(runs)
    k = args.k
    total_future = n_users * args.future
    print(
        f"\nper round, {n_users} users each (hit@{k}: share with >= 1 held-out item in the "
        f"list, +- binomial SE; hits: mean per user; found: cumulative of {total_future})"
    )
    header = ["round"]
    header += [f"hit@{k} {n}" for n in names]
    header += [f"hits/user {n}" for n in names]
    header += [f"found {n}" for n in names]
    widths = [5] + [max(len(h), 13) for h in header[1:]]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in range(args.rounds):
        hit_cells, mean_cells, found_cells = [], [], []
        for n in names:
            hits = np.asarray(runs[n].rounds[r].hits)
            p = float(np.mean(hits > 0))
            se = (p * (1 - p) / len(hits)) ** 0.5
            hit_cells.append(f"{p:.3f} +-{se:.3f}")
            mean_cells.append(f"{hits.mean():.3f}")
            found_cells.append(f"{int(runs[n].found[:, r].sum())}")
        cells = [str(r + 1), *hit_cells, *mean_cells, *found_cells]
        print(" | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))

    if "on" in runs:
        on = runs["on"]
        channels = list(on.rounds[0].weights)
        print(
            f"\nchannel weights, learning on: mean (median) over the {n_users} users after "
            "each round's feedback; global prior last"
        )
        head = f"{'round':>5} | " + " | ".join(f"{c:>17}" for c in channels)
        print(head + " | global prior")
        print("-" * (len(head) + 15))
        cells = " | ".join(f"{on.prior[c]:>17.3f}" for c in channels)
        print(f"{'start':>5} | {cells} |")
        for r, stats in enumerate(on.rounds):
            cells = " | ".join(
                f"{statistics.mean(ws):.3f} ({statistics.median(ws):.3f})".rjust(17)
                for ws in (stats.weights[c] for c in channels)
            )
            glob = " ".join(f"{c[:5]}={stats.global_weights[c]:.3f}" for c in channels)
            print(f"{r + 1:>5} | {cells} | {glob}")

    channels = sorted({c for run in runs.values() for s in run.rounds for c in s.slots})
    print(
        f"\nlist slots proposed by each channel per round (of {n_users * k}; an item can "
        "have several proposers), and hits proposed by each channel"
    )
    for n in names:
        print(f"  {n}:")
        for r, stats in enumerate(runs[n].rounds):
            slots = " ".join(f"{c}={stats.slots.get(c, 0):4d}" for c in channels)
            hits = " ".join(f"{c}={stats.hit_slots.get(c, 0):3d}" for c in channels)
            print(f"    round {r + 1}: slots {slots} | hits {hits}")

    print(
        f"\npaired by user, future items found after {args.rounds} rounds "
        f"(mean of the difference, 95% bootstrap CI, users better/equal/worse; n={n_users})"
    )
    pairs = [("profile", "off"), ("on", "off"), ("on", "profile")]
    for a, b in pairs:
        if a not in runs or b not in runs:
            continue
        diff = (runs[a].found[:, -1] - runs[b].found[:, -1]).astype(np.float64)
        lo, hi = _bootstrap_ci(diff, args.seed)
        better, same, worse = int((diff > 0).sum()), int((diff == 0).sum()), int((diff < 0).sum())
        print(
            f"  {a:>7} - {b:<7}: {diff.mean():+.3f} items/user [{lo:+.3f}, {hi:+.3f}]  "
            f"{better}/{same}/{worse}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
    parser.add_argument("--data", default=str(default))
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ragrec"))
    parser.add_argument("--users", type=int, default=100, help="simulated users (sampled)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=10, help="list length")
    parser.add_argument("--future", type=int, default=20, help="held-out items per user")
    parser.add_argument(
        "--min-history", type=int, default=20, help="training rows a user needs to be eligible"
    )
    parser.add_argument(
        "--skip-prob", type=float, default=0.0, help="chance a non-future item gets a skip"
    )
    parser.add_argument(
        "--min-item-ratings",
        type=int,
        default=0,
        help="keep only items with this many ratings (0: the whole catalog; smaller is faster)",
    )
    parser.add_argument(
        "--repeat-consumed",
        action="store_true",
        help="do not exclude already-liked items from later lists",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, value, low in (("--users", args.users, 1), ("--rounds", args.rounds, 1)):
        if value < low:
            parser.error(f"{name} must be >= {low}, got {value}")
    if not 0.0 <= args.skip_prob <= 1.0:
        parser.error(f"--skip-prob must be in [0, 1], got {args.skip_prob}")
    logging.basicConfig(level=logging.WARNING)

    start = time.perf_counter()
    ml = load_movielens(args.data)
    catalog, interactions = restrict_catalog(ml.catalog, ml.interactions, args.min_item_ratings)
    split = future_split(interactions, future=args.future, min_history=args.min_history)
    eligible = sorted(split.futures)
    rng = np.random.default_rng(args.seed)
    n_users = min(args.users, len(eligible))
    users = sorted(int(u) for u in rng.choice(eligible, size=n_users, replace=False))
    print(
        "feedback loop, retrieval only: llm_candidates=0, so the LLM does not run; this "
        "measures how retrieval (channel weights, profile) adapts to feedback"
    )
    print(
        f"data {args.data}: {len(catalog)} items, {len(interactions)} rows; "
        f"{len(split.train)} training rows after holding out the last {args.future} rows of "
        f"{len(eligible)} users with >= {args.future + args.min_history} rows"
    )
    print(
        f"simulated users: {n_users} sampled (seed {args.seed}); k={args.k}, "
        f"rounds={args.rounds}, skip-prob={args.skip_prob}, consumed items "
        f"{'may repeat' if args.repeat_consumed else 'excluded in every variant'}"
    )
    print("variants: " + "; ".join(f"{n}: learning={VARIANTS[n]}" for n in args.variants))
    runs = {}
    for name in args.variants:
        runs[name] = run_variant(name, catalog, split, users, args)
    report(runs, args, n_users)

    print("\ntimings")
    for name, run in runs.items():
        rec_s = run.recommend_seconds
        fb_s = run.feedback_seconds
        fb = (
            f"feedback mean {statistics.mean(fb_s) * 1000:.1f} ms over {len(fb_s)} events"
            if fb_s
            else "no feedback events"
        )
        print(
            f"  {name:>7}: build {run.build_seconds:.1f} s; recommend mean "
            f"{statistics.mean(rec_s) * 1000:.1f} ms, median "
            f"{statistics.median(rec_s) * 1000:.1f} ms over {len(rec_s)} calls; {fb}"
        )
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
