"""Fine-tuning the ranking LLM (``ragrec.tuning``): training cost and the 20-candidate
protocol before and after.

    python benchmarks/tuning.py train --method lora --out /tmp/tune-lora [--max-minutes 20]
        [--max-examples 2000] [--random-negatives 6] [--threads 2] [--resume]
        [--train-layers 8] [--order shuffled|retrieval] [--holdout-last 4]
        [--show-rank none|inline|order] [--item-text title|id|id_title]
    python benchmarks/tuning.py eval [--run /tmp/tune-lora ...] [--users 200] [--threads 2]
        [--order shuffled|retrieval] [--show-rank none|inline|order]
        [--item-text title|id|id_title]

``train`` builds examples from the llamarec protocol's training rows of ml-latest-small
(sliding targets, the retriever's hard negatives, optionally random ones mixed in; a
retriever fit on the training rows) and tunes the bundled SmolLM2-135M-Instruct.

``eval`` scores the 20-candidate protocol: for each of --users test users (seed 0), the
test target and 19 random items the user never saw, shuffled under labels A..T; the
prompt shows the user's history (train + validation items) within the tuning prompt's
budgets. It prints NDCG@1/5/10/20 of the base model and of each --run, the distribution
of the top label against that of the targets (and their total-variation distance),
popularity's NDCG as a reference, and seconds per prompt. ``--order retrieval`` lists
the candidates in the order of a retriever fit on the test split's fit rows (and prints
that retriever's NDCG on the same cases); ``shuffled`` keeps the random order.
``--show-rank inline|order`` shows the candidates' ranks under that retriever in the
prompt (train with the same ``--show-rank``), whatever the label order.
``--item-text id`` names items by catalog id instead of title (``id_title``: both).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ragrec.data import load_movielens
from ragrec.eval import ProtocolData, llamarec_protocol
from ragrec.generation import GeneratorConfig, content_free_prior
from ragrec.generation._transformers import TransformersGenerator
from ragrec.prompting import LABELS, PromptBuilder
from ragrec.retrieval import RetrievalQuery, Retriever, RetrieverConfig
from ragrec.tuning import TUNE_PROMPT, TuneConfig, Tuner, build_examples, holdout_rows

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"


def protocol(data_path: str) -> ProtocolData:
    ml = load_movielens(data_path)
    return llamarec_protocol(ml.catalog, ml.interactions)


def train(args: argparse.Namespace) -> None:
    data = protocol(args.data)
    cfg = TuneConfig(
        method=args.method,
        max_minutes=args.max_minutes,
        max_examples=args.max_examples,
        random_negatives=args.random_negatives,
        candidate_order=args.order,
        holdout_last=args.holdout_last,
        train_layers=args.train_layers,
        examples_per_user=args.examples_per_user,
        learning_rate=args.lr,
        grad_accum=args.grad_accum,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        threads=args.threads,
        checkpoint_every=args.checkpoint_every,
        log_every=2,
        prompt=TUNE_PROMPT.model_copy(
            update={"show_rank": args.show_rank, "item_text": args.item_text}
        ),
    )
    examples: list[Any] = []
    t0 = time.perf_counter()
    if not args.resume:
        # with --holdout-last, a retriever that never saw the targets ranks them
        rows = holdout_rows(data.catalog, data.train, args.holdout_last)
        retriever = Retriever(RetrieverConfig(cache_dir=args.cache_dir)).fit(data.catalog, rows)

        def candidates(user: Any, history: np.ndarray, k: int) -> list[int]:
            res = retriever.retrieve(RetrievalQuery(user, history), k=k)
            return [int(p) for p in res.positions]

        examples = build_examples(data.catalog, data.train, candidates=candidates, config=cfg)
    print(f"examples: {len(examples)} built in {time.perf_counter() - t0:.1f} s", flush=True)

    def show(p: Any) -> None:
        rate = p.examples / p.seconds if p.seconds else 0.0
        print(
            f"step {p.step:4d}  examples {p.examples:5d}  loss {p.loss:.4f}  "
            f"{p.seconds / 60:5.1f} min  {rate:.2f} ex/s",
            flush=True,
        )

    result = Tuner(cfg).fit(examples, data.catalog, args.out, resume=args.resume, progress=show)
    print(
        json.dumps(
            {
                "method": result.method,
                "examples": result.examples,
                "minutes": round(result.seconds / 60, 2),
                "examples_per_s": round(result.examples_per_second, 3),
                "loss_start": round(result.loss_start, 4),
                "loss_end": round(result.loss_end, 4),
                "finished": result.finished,
                "model_path": result.model_path,
            },
            indent=2,
        ),
        flush=True,
    )


def c20_cases(
    data: ProtocolData, n_users: int, seed: int = 0
) -> list[tuple[Any, np.ndarray, np.ndarray, int]]:
    """``(user, history, candidates in label order, target index)`` per test user."""
    cases = data.cases("test")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(cases), size=min(n_users, len(cases)), replace=False)
    n_items = len(data.catalog)
    out = []
    for row in rows.tolist():
        hist = cases.histories[row]
        target = int(cases.targets[row])
        seen = set(hist.tolist()) | {target}
        wrong: list[int] = []
        while len(wrong) < 19:
            p = int(rng.integers(n_items))
            if p not in seen:
                wrong.append(p)
                seen.add(p)
        items = np.asarray([target, *wrong])
        order = rng.permutation(20)
        out.append((cases.user_ids[row], hist, items[order], int(np.flatnonzero(order == 0)[0])))
    return out


def retrieval_ranks(data: ProtocolData, cases: list[Any], cache_dir: str) -> list[np.ndarray]:
    """Per case, each candidate's rank among the 20 (1: best) under a retriever fit on
    the test split's fit rows."""
    retriever = Retriever(RetrieverConfig(cache_dir=cache_dir)).fit(
        data.catalog, data.fit_rows("test")
    )
    n_items = len(data.catalog)
    out = []
    for user, hist, cands, _ in cases:
        ranking = retriever.retrieve(RetrievalQuery(user, hist), k=n_items).positions
        rank = {int(p): i for i, p in enumerate(ranking)}
        order = np.argsort([rank.get(int(p), n_items) for p in cands], kind="stable")
        among = np.empty(len(cands), dtype=np.int64)
        among[order] = np.arange(1, len(cands) + 1)
        out.append(among)
    return out


def retrieval_order(
    cases: list[Any], ranks: list[np.ndarray]
) -> tuple[list[Any], list[np.ndarray]]:
    """``cases`` with each candidate list in retrieval order (label A: the retriever's
    best guess), and the ranks in that order (1..20)."""
    out = []
    for (user, hist, cands, t), among in zip(cases, ranks, strict=True):
        order = np.argsort(among, kind="stable")
        out.append((user, hist, cands[order], int(np.flatnonzero(order == t)[0])))
    return out, [np.arange(1, len(c) + 1) for _, _, c, _ in out]


def ndcg(ranks: np.ndarray, k: int) -> float:
    return float(np.mean(np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)))


def _rank_stats(logprobs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    ranks = 1 + (logprobs > logprobs[np.arange(len(targets)), targets][:, None]).sum(axis=1)
    top = Counter(LABELS[int(i)] for i in logprobs.argmax(axis=1))
    where = Counter(LABELS[int(t)] for t in targets)
    return {
        **{f"ndcg@{k}": round(ndcg(ranks, k), 4) for k in (1, 5, 10, 20)},
        "top_label": dict(sorted(top.items())),
        "target_label": dict(sorted(where.items())),
        "top_label_max_share": round(max(top.values()) / len(targets), 3),
        "top_label_tv_distance": round(
            0.5 * sum(abs(top[x] - where[x]) for x in LABELS[:20]) / len(targets), 3
        ),
        "distinct_top_labels": len(top),
    }


def evaluate(
    name: str,
    gen_cfg: GeneratorConfig,
    data: ProtocolData,
    cases: list[Any],
    ranks: list[np.ndarray] | None = None,
    item_text: str = "title",
    show_rank: str = "inline",
) -> dict:
    """Scores of one model on the cases; ``ranks`` (per case, each candidate's retrieval
    rank) are shown in the prompt when given; ``item_text`` names the items."""
    gen = TransformersGenerator(gen_cfg)
    prompt_cfg = TUNE_PROMPT.model_copy(
        update={"show_rank": show_rank if ranks is not None else "none", "item_text": item_text}
    )
    builder = PromptBuilder(gen.tokenizer, prompt_cfg)
    cat = data.catalog
    prompts = [
        builder.render(
            history=[(cat.item_ids[p], str(cat.titles[p])) for p in hist],
            candidates=[(cat.item_ids[p], str(cat.titles[p])) for p in cands],
            ranks=None if ranks is None else ranks[i].tolist(),
        )
        for i, (_, hist, cands, _) in enumerate(cases)
    ]
    gen._load()
    t0 = time.perf_counter()
    logprobs = gen.label_logprobs(prompts)
    seconds = (time.perf_counter() - t0) / len(prompts)
    targets = np.asarray([t for *_, t in cases])
    out = {"name": name, **_rank_stats(logprobs, targets)}
    # contextual calibration: the same scores less the content-free label prior
    prior = content_free_prior(gen, builder, 20)
    out["calibrated"] = _rank_stats(logprobs - prior, targets)
    out["seconds_per_prompt"] = round(seconds, 3)
    out["prompt_tokens_mean"] = round(float(np.mean([p.token_count for p in prompts])), 1)
    print(json.dumps(out), flush=True)
    return out


def popularity(data: ProtocolData, cases: list[Any]) -> float:
    counts = np.bincount(data.catalog.positions(data.train.item_ids), minlength=len(data.catalog))
    ranks = []
    for _, _, cands, t in cases:
        s = counts[cands].astype(float) - np.arange(20) * 1e-9
        ranks.append(1 + int((s > s[t]).sum()))
    return ndcg(np.asarray(ranks), 10)


def evaluate_all(args: argparse.Namespace) -> None:
    data = protocol(args.data)
    cases = c20_cases(data, args.users)
    print(f"c20: {len(cases)} test users; popularity ndcg@10 {popularity(data, cases):.4f}")
    ranks: list[np.ndarray] | None = None
    if args.order == "retrieval" or args.show_rank != "none":
        ranks = retrieval_ranks(data, cases, args.cache_dir)
        alone = np.asarray([r[t] for (*_, t), r in zip(cases, ranks, strict=True)])
        print(f"retrieval alone ndcg@10 {ndcg(alone, 10):.4f}", flush=True)
        if args.order == "retrieval":
            cases, ranks = retrieval_order(cases, ranks)
        if args.show_rank == "none":
            ranks = None
    rows = []
    base = GeneratorConfig(device="cpu", threads=args.threads)
    if not args.skip_base:
        rows.append(
            evaluate("base (zero-shot)", base, data, cases, ranks, args.item_text, args.show_rank)
        )
    for run in args.run:
        info = json.loads((Path(run) / "tune.json").read_text())
        if info["method"] == "lora":
            cfg = base.model_copy(update={"adapter": info["model_path"]})
        else:
            cfg = base.model_copy(update={"model": info["model_path"]})
        name = f"{info['method']} {run}"
        rows.append(evaluate(name, cfg, data, cases, ranks, args.item_text, args.show_rank))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--method", default="lora", choices=["lora", "full"])
    t.add_argument("--out", required=True)
    t.add_argument("--max-minutes", type=float, default=20.0)
    t.add_argument("--max-examples", type=int, default=2000)
    t.add_argument("--examples-per-user", type=int, default=4)
    t.add_argument("--random-negatives", type=int, default=6)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--grad-accum", type=int, default=8)
    t.add_argument("--lora-r", type=int, default=8)
    t.add_argument("--checkpoint-every", type=int, default=25)
    t.add_argument("--train-layers", type=int, default=None)
    t.add_argument("--holdout-last", type=int, default=0)
    t.add_argument("--resume", action="store_true")
    e = sub.add_parser("eval")
    e.add_argument("--run", action="append", default=[])
    e.add_argument("--users", type=int, default=200)
    e.add_argument("--skip-base", action="store_true")
    e.add_argument("--json", default=None)
    for p in (t, e):
        p.add_argument("--data", default=str(DEFAULT_DATA))
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--order", default="shuffled", choices=["shuffled", "retrieval"])
        p.add_argument("--show-rank", default="none", choices=["none", "inline", "order"])
        p.add_argument("--item-text", default="title", choices=["title", "id", "id_title"])
        p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ragrec"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.cmd == "train":
        train(args)
    else:
        evaluate_all(args)


if __name__ == "__main__":
    main()
