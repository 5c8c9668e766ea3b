"""CPU generation backends side by side on the bundled SmolLM2 GGUF: transformers
(dequantised to fp32, the former default), transformers with torch dynamic int8
quantisation of the linear layers, and llama.cpp on the GGUF as shipped (Q4_1).

For the same ranking prompts (ml-latest-small users, 20 candidates, the default
template) it prints per backend: load time, median seconds per ranking prompt, whether
the winning label matches fp32's, the largest absolute difference of the label
log-probabilities from fp32's, and generation speed (tokens/s) on explanation rewrites.

    .venv/bin/python benchmarks/generation_backends.py --users 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from ragrec.data import load_movielens
from ragrec.generation import GeneratorConfig, make_generator
from ragrec.generation._transformers import TransformersGenerator
from ragrec.prompting import Message, PromptBuilder


class Int8Generator(TransformersGenerator):
    """The transformers backend with ``torch.ao.quantization.quantize_dynamic`` applied to
    every Linear layer (int8 weights, fp32 activations)."""

    def _load(self) -> Any:
        if self._model is None:
            import torch

            model = super()._load()
            self._model = torch.ao.quantization.quantize_dynamic(
                model, {torch.nn.Linear}, dtype=torch.qint8
            )
            self._dtype = "int8-dynamic"
        return self._model


def prompts_for(tokenizer: Any, data_dir: str, users: int, candidates: int) -> list[Any]:
    data = load_movielens(data_dir)
    builder = PromptBuilder(tokenizer)
    titles = dict(zip(data.catalog.item_ids.tolist(), data.catalog.titles.tolist(), strict=True))
    inter = data.interactions
    rng = np.random.default_rng(0)
    all_items = data.catalog.item_ids
    out = []
    for user in np.unique(inter.user_ids)[:users]:
        rows = np.flatnonzero(inter.user_ids == user)
        rows = rows[np.argsort(inter.timestamps[rows], kind="stable")]
        hist = [(i, titles[i]) for i in inter.item_ids[rows].tolist()[-20:]]
        cands = [(i, titles[i]) for i in rng.choice(all_items, candidates, replace=False)]
        out.append(builder.render(history=hist, candidates=cands))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/ml-latest-small")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--rewrites", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    makers = {
        "transformers fp32": lambda: make_generator(
            GeneratorConfig(backend="transformers", threads=args.threads)
        ),
        "transformers int8 (dynamic)": lambda: Int8Generator(
            GeneratorConfig(backend="transformers", threads=args.threads)
        ),
        "llamacpp Q4_1": lambda: make_generator(
            GeneratorConfig(backend="llamacpp", threads=args.threads)
        ),
    }
    reference: np.ndarray | None = None
    prompts = None
    rows = []
    for name, make in makers.items():
        t0 = time.perf_counter()
        gen = make()
        gen.tokenizer.count_tokens("warm up")
        if prompts is None:
            prompts = prompts_for(gen.tokenizer, args.data, args.users, args.candidates)
        gen.label_logprobs(prompts[:1])  # load
        load = time.perf_counter() - t0
        times, lps = [], []
        for p in prompts:
            t = time.perf_counter()
            lps.append(gen.label_logprobs([p])[0])
            times.append(time.perf_counter() - t)
        lp = np.vstack(lps)
        if reference is None:
            reference = lp
        same = float(np.mean(lp.argmax(1) == reference.argmax(1)))
        diff = float(np.max(np.abs(lp - reference)))
        ask = [
            gen.tokenizer.chat_text(
                [
                    Message("system", "You explain movie recommendations in one sentence."),
                    Message("user", f"Recommended: {p.candidate_ids[0]}\nExplain why."),
                ]
            )
            for p in prompts[: args.rewrites]
        ]
        t = time.perf_counter()
        outs = gen.generate(ask, max_tokens=32)
        gen_s = time.perf_counter() - t
        n_tok = sum(len(gen.tokenizer.encode(o)) for o in outs)  # type: ignore[attr-defined]
        rows.append((name, load, statistics.median(times), same, diff, n_tok / gen_s))
        print(f"done: {name}", flush=True)
        del gen

    n_tok_prompt = statistics.median(p.token_count for p in prompts or [])
    print(
        f"\n{args.users} ranking prompts ({args.candidates} candidates, median "
        f"{n_tok_prompt:.0f} tokens), {args.threads} threads"
    )
    print(
        "| backend | load s | s / ranking prompt (median) | speed-up | same winner as fp32 "
        "| max abs label log-prob diff | generation tokens/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    base = rows[0][2]
    for name, load, med, same, diff, tps in rows:
        print(
            f"| {name} | {load:.1f} | {med:.3f} | {base / med:.1f}x | {same:.0%} "
            f"| {diff:.3f} | {tps:.0f} |"
        )


if __name__ == "__main__":
    main()
