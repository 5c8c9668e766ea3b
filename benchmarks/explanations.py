"""Explanations as a user gets them from a store, measured over many users.

For a seeded sample of the store's users it runs ``Recommender.recommend(user, k,
explain=True)`` and prints:

- coverage: the share of recommended items with an explanation, and how many show
  anything like "(dropped ...)";
- counterfactual faithfulness: for every history item an explanation cites, the item
  is removed from the user's history (every occurrence), retrieval runs again, and the
  recommended item's fused score must drop (or the item leave the candidate list);
- LLM rewrites (on a sub-sample): the share accepted, generated tokens and seconds per
  explanation, and why rejected ones were;
- latency: warm p50/p95 of ``recommend`` with evidence sentences only, with LLM
  rewrites, and without explanations, and a cold ``ragrec recommend`` process.

    .venv/bin/python benchmarks/explanations.py runs/store --users 200 --llm-users 40
"""

from __future__ import annotations

import argparse
import collections
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragrec import Recommender
from ragrec.generation import GeneratorConfig, make_generator
from ragrec.retrieval import RetrievalQuery


def _with(rec: Recommender, **explain: Any) -> None:
    rec.config = rec.config.model_copy(
        update={"explain": rec.config.explain.model_copy(update=explain)}
    )


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def counterfactual(rec: Recommender, user: Any, item_id: Any, cited: Any) -> tuple[float, float]:
    """The item's fused score with the full history and without ``cited`` (-inf when it
    leaves the candidate list)."""
    depth = max(rec.config.llm_candidates, 50)
    query = rec._query(user, None)
    cited_pos = rec.catalog.positions([cited])[0]
    reduced = RetrievalQuery(
        query.user_id,
        query.history[query.history != cited_pos],
        None if query.ratings is None else query.ratings[query.history != cited_pos],
    )
    scores = []
    for q in (query, reduced):
        res = rec.retriever.retrieve(q, k=depth)
        found = {c.item_id: c.score for c in res.candidates}
        scores.append(float(found.get(item_id, -np.inf)))
    return scores[0], scores[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", nargs="?", default="runs/store")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--llm-users", type=int, default=40)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--backend", default="llamacpp")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cold", type=int, default=2, help="cold `ragrec recommend` runs")
    args = parser.parse_args()

    t0 = time.perf_counter()
    generator = make_generator(GeneratorConfig(backend=args.backend, threads=args.threads))
    rec = Recommender.load(args.store, generator=generator)
    print(f"store loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    users = sorted({u for u in rec.interactions.user_ids.tolist()})
    rng = np.random.default_rng(args.seed)
    sample = [users[i] for i in rng.choice(len(users), min(args.users, len(users)), False)]

    # evidence sentences only ----------------------------------------------------------
    _with(rec, rewrite=False)
    for u in sample[:3]:
        rec.recommend(u, k=args.k, explain=True)  # warm up
    template_s, plain_s = [], []
    items = explained = dropped = 0
    checks = lowered = 0
    by_channel: collections.Counter[str] = collections.Counter()
    unfaithful: collections.Counter[str] = collections.Counter()
    cited_per_item = []
    for u in sample:
        t = time.perf_counter()
        rec.recommend(u, k=args.k, explain=False)
        plain_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        result = rec.recommend(u, k=args.k, explain=True)
        template_s.append(time.perf_counter() - t)
        for it in result.items:
            items += 1
            exp = it.explanation
            if exp is None or not exp.text:
                continue
            explained += 1
            dropped += int("dropped" in exp.text.lower())
            cited_per_item.append(len(exp.cited))
            main = exp.evidence.main_channel if exp.evidence else None
            for cited in exp.cited:
                full, without = counterfactual(rec, u, it.item_id, cited)
                checks += 1
                ok = without < full
                lowered += int(ok)
                by_channel[str(main)] += 1
                if not ok:
                    unfaithful[str(main)] += 1
    print(f"template pass done ({len(sample)} users)", flush=True)

    # LLM rewrites ----------------------------------------------------------------------
    _with(rec, rewrite=True)
    llm_users = sample[: args.llm_users]
    rec.recommend(llm_users[0], k=args.k, explain=True)  # load the model
    rewrite_s, asked, accepted, tokens, per_exp = [], 0, 0, [], []
    reasons: collections.Counter[str] = collections.Counter()
    examples = []
    for u in llm_users:
        t = time.perf_counter()
        result = rec.recommend(u, k=args.k, explain=True)
        rewrite_s.append(time.perf_counter() - t)
        for it in result.items:
            exp = it.explanation
            if exp is None or exp.llm_text is None:
                continue
            asked += 1
            accepted += int(exp.source == "llm")
            tokens.append(exp.tokens)
            per_exp.append(exp.seconds)
            if exp.source == "llm":
                if len(examples) < 4:
                    examples.append(exp.text)
            else:
                reasons[(exp.rejected or "").split(",")[0][:60]] += 1
    rec.close()

    # a cold process --------------------------------------------------------------------
    cold = []
    ragrec = Path(sys.executable).with_name("ragrec")
    for _ in range(args.cold):
        t = time.perf_counter()
        subprocess.run(
            [str(ragrec), "recommend", args.store, str(sample[0]), "--k", str(args.k), "--json"],
            check=True,
            capture_output=True,
        )
        cold.append(time.perf_counter() - t)

    print(f"\n{len(sample)} users, k={args.k}, store {args.store}")
    print(
        f"explanations: {explained}/{items} items ({explained / max(1, items):.1%}), "
        f"{dropped} shown as dropped; cited history items per item: mean "
        f"{statistics.mean(cited_per_item or [0]):.2f}"
    )
    print(
        f"counterfactual faithfulness: {lowered}/{checks} cited history items lower the "
        f"item's fused score when removed ({lowered / max(1, checks):.1%})"
    )
    for channel, n in by_channel.most_common():
        print(f"  main channel {channel}: {n - unfaithful[channel]}/{n}")
    print(
        f"LLM rewrites ({args.backend}, {len(llm_users)} users, explain_top "
        f"{rec.config.explain_top}): {accepted}/{asked} accepted ({accepted / max(1, asked):.1%}); "
        f"median {statistics.median(tokens or [0]):.0f} tokens and "
        f"{statistics.median(per_exp or [0]):.3f} s per explanation"
    )
    for reason, n in reasons.most_common(6):
        print(f"  rejected {n}x: {reason}")
    for text in examples:
        print(f"  e.g. {text}")
    print("| recommend(k=5) | p50 s | p95 s |")
    print("| --- | --- | --- |")
    for name, values in (
        ("explain=False", plain_s),
        ("evidence sentences", template_s),
        ("LLM rewrites", rewrite_s),
    ):
        print(f"| {name} | {_pct(values, 50):.3f} | {_pct(values, 95):.3f} |")
    print(f"cold `ragrec recommend --json`: {', '.join(f'{c:.1f} s' for c in cold)}")


if __name__ == "__main__":
    main()
