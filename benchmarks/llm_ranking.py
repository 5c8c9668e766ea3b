"""LLM re-ranking speed and quality side by side, on the llamarec test split.

    python benchmarks/llm_ranking.py [--users 30] [--data PATH] [--cache-dir DIR]

For users whose test target is in the retriever's top 20 it compares
- verbalizer ranking (label log-probabilities, one forward pass) with the shared-prefix
  KV cache on and off, and in batches of 8 without it;
- generative listwise ranking (the model writes the ranked letters, parsed back);
and prints NDCG@10 within the 20 candidates, the invalid-output rate, seconds per user,
and the compute floor: 2 x parameters x prompt tokens FLOPs over this machine's measured
matrix-multiply rate.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ragrec.data import load_movielens
from ragrec.eval import llamarec_protocol
from ragrec.generation import GeneratorConfig
from ragrec.generation._transformers import TransformersGenerator
from ragrec.prompting import Message, PromptBuilder, RenderedPrompt
from ragrec.retrieval import RetrievalQuery, Retriever, RetrieverConfig


def _ndcg_at_10(order: list[int], target: int) -> float:
    rank = order.index(target) + 1
    return 1.0 / float(np.log2(rank + 1)) if rank <= 10 else 0.0


def _matmul_gflops() -> float:
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        runs.append(time.perf_counter() - start)
    return 2 * 2048**3 / statistics.median(runs) / 1e9


_LETTERS = re.compile(r"\b([A-T])\b")


def _listwise_prompt(gen: TransformersGenerator, prompt: RenderedPrompt) -> str:
    messages = list(prompt.messages[:-1])
    user = prompt.messages[-1].content.rsplit("\n\n", 1)[0]
    user += (
        f"\n\nRank all {len(prompt.labels)} candidates from most to least likely. "
        "Answer with the letters only, separated by commas."
    )
    return gen.tokenizer.chat_text([*messages, Message("user", user)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
    parser.add_argument("--data", default=str(default))
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ragrec"))
    args = parser.parse_args()

    ml = load_movielens(args.data)
    data = llamarec_protocol(ml.catalog, ml.interactions)
    retriever = Retriever(RetrieverConfig(cache_dir=args.cache_dir)).fit(data.catalog, data.train)
    cases = data.cases("test")
    catalog = data.catalog
    picked = []
    for uid, hist, target in zip(cases.user_ids, cases.histories, cases.targets, strict=True):
        res = retriever.retrieve(RetrievalQuery(uid, hist))
        if target in res.positions:
            picked.append((uid, hist, res, int(np.flatnonzero(res.positions == target)[0])))
        if len(picked) == args.users:
            break
    print(f"{len(picked)} users with the target in the top 20 (of {len(cases)} scanned at most)")

    cached = TransformersGenerator(GeneratorConfig(prefix_cache=True))
    builder = PromptBuilder(cached.tokenizer)
    prompts = []
    for uid, hist, res, _ in picked:
        history = [(catalog.item_ids[p], str(catalog.titles[p])) for p in hist]
        cands = [(c.item_id, c.title) for c in res.candidates]
        order = builder.order(uid, len(cands))
        prompts.append(
            (builder.render(history=history, candidates=[cands[i] for i in order]), order)
        )
    load_start = time.perf_counter()
    cached.label_logprobs([prompts[0][0]])  # load + warm the prefix cache
    print(f"model load + first prompt: {time.perf_counter() - load_start:.1f} s")
    tokens = [p.token_count for p, _ in prompts]
    params = sum(p.numel() for p in cached._model.parameters())
    gflops = _matmul_gflops()
    print(f"prompt tokens: median {statistics.median(tokens):.0f}; parameters {params / 1e6:.1f} M")
    print(f"float32 2048^3 matmul: {gflops:.0f} GFLOP/s on {torch.get_num_threads()} threads")

    rows = []

    def verbalizer(label: str, gen: TransformersGenerator, batch: int) -> None:
        times, ndcgs, top_labels = [], [], []
        for lo in range(0, len(prompts), batch):
            chunk = prompts[lo : lo + batch]
            start = time.perf_counter()
            lp = gen.label_logprobs([p for p, _ in chunk])
            times.append((time.perf_counter() - start) / len(chunk))
            for (p, order), row, (_, _, _, t) in zip(
                chunk, lp, picked[lo : lo + batch], strict=True
            ):
                n = len(p.labels)
                scores = np.zeros(n)
                scores[order] = row[:n]
                ranked = list(np.argsort(-scores, kind="stable"))
                ndcgs.append(_ndcg_at_10([int(i) for i in ranked], t))
                top_labels.append(p.labels[int(np.argmax(row[:n]))])
        floor = 2 * params * statistics.median(tokens) / (gflops * 1e9)
        p50 = statistics.median(times)
        share = max(set(top_labels), key=top_labels.count)
        rows.append(
            (
                label,
                float(np.mean(ndcgs)),
                0.0,
                p50,
                floor / p50,
                f"top label {share} in {top_labels.count(share)}/{len(top_labels)}",
            )
        )

    verbalizer("verbalizer, prefix cache, batch 1", cached, 1)
    plain = TransformersGenerator(GeneratorConfig(prefix_cache=False))
    plain._model, plain._tokenizer = cached._model, cached._tokenizer  # same weights
    verbalizer("verbalizer, no prefix cache, batch 1", plain, 1)
    batched = TransformersGenerator(GeneratorConfig(prefix_cache=False, batch_size=8))
    batched._model, batched._tokenizer = cached._model, cached._tokenizer
    verbalizer("verbalizer, no prefix cache, batch 8", batched, 8)

    times, ndcgs, invalid, parseable = [], [], 0, 0
    for (p, order), (_, _, _, t) in zip(prompts, picked, strict=True):
        text = _listwise_prompt(cached, p)
        start = time.perf_counter()
        out = cached.generate([text], max_tokens=70)[0]
        times.append(time.perf_counter() - start)
        letters = [m for m in _LETTERS.findall(out) if m in p.labels]
        seen = list(dict.fromkeys(letters))
        parseable += bool(seen)
        if sorted(seen) != sorted(p.labels):
            invalid += 1
        shown = [int(order[p.labels.index(x)]) for x in seen]
        ranked = shown + [i for i in range(len(p.labels)) if i not in shown]
        ndcgs.append(_ndcg_at_10(ranked, t))
    rows.append(
        (
            "generative listwise (parsed letters)",
            float(np.mean(ndcgs)),
            invalid / len(prompts),
            statistics.median(times),
            float("nan"),
            f"parseable {parseable}/{len(prompts)}",
        )
    )
    retrieval_ndcg = float(np.mean([_ndcg_at_10(list(range(20)), t) for *_, t in picked]))
    rows.append(("retrieval order (no LLM)", retrieval_ndcg, 0.0, 0.0, float("nan"), ""))

    head = f"{'system':38} {'ndcg@10':>8} {'invalid':>8} {'s/user p50':>10} {'floor/actual':>12}"
    print(f"\n{head} notes")
    for label, ndcg, inv, sec, frac, note in rows:
        print(f"{label:38} {ndcg:8.4f} {inv:8.2%} {sec:10.3f} {frac:12.2%} {note}")
    speedup = rows[3][3] / rows[0][3] if rows[0][3] else float("nan")
    print(f"\nverbalizer (prefix cache) is {speedup:.1f}x faster per user than listwise generation")


if __name__ == "__main__":
    main()
