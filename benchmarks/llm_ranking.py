"""LLM re-ranking speed, quality and explanations side by side, on the llamarec test split.

    python benchmarks/llm_ranking.py [--users 32] [--backend transformers] [--model NAME]
        [--device auto] [--threads 1] [--matmul-threads 2] [--explain-users 2]
        [--repeats 1] [--data PATH] [--cache-dir DIR]

For test users whose target is in the retriever's top 20 it compares, in one run:
- verbalizer ranking (label log-probabilities, one forward pass per prompt) at batch 1
  with the shared-prefix KV cache on and off, and at batch 8 and 32 without it: latency
  per user (wall time of the call that scores it), throughput (users/s), the tokens
  computed with left padding over the prompts' tokens, NDCG@10 within the 20 candidates,
  and the largest log-probability difference from batch 1 uncached; --repeats rounds of
  all four, back to back (latencies pooled, the median round for throughput);
- generative listwise ranking (the model writes the ranked letters, parsed back);
- grounded explanations (ragrec.generation.Explainer) of the top 3 of a few users, with
  and without the JSON-schema constraint: seconds per item and validity rate;
- the compute floor: 2 x parameters x prompt tokens FLOPs over this machine's float32
  matrix-multiply rate (torch, --matmul-threads threads: the machine's capacity), and the
  achieved time over it.

The model runs on --threads torch threads (default 1): on a 2-core machine shared with
other jobs, two OpenMP threads made a forward pass 3 to 15 times slower than one.

Every generator comes from ragrec.generation.make_generator(GeneratorConfig(...)), so
``--backend vllm --model FOLDER`` runs the same code once that backend is installed.
Figures are medians (p50) and ratios; the machine may be shared, so its load average is
printed with them.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from ragrec.data import Catalog, load_movielens
from ragrec.errors import RagrecError
from ragrec.eval import llamarec_protocol
from ragrec.generation import (
    BUNDLED_MODEL,
    ExplainConfig,
    Explainer,
    Generator,
    GeneratorConfig,
    make_generator,
)
from ragrec.generation._transformers import TransformersGenerator, bundled_model_path
from ragrec.prompting import Message, PromptBuilder, RenderedPrompt
from ragrec.retrieval import RetrievalQuery, Retriever, RetrieverConfig

N_CANDIDATES = 20
EXPLAIN_TOP = 3
# (name, batch size, prefix cache): GeneratorConfig allows the cache only at batch 1.
VARIANTS = (
    ("batch 1, prefix cache", 1, True),
    ("batch 1, no prefix cache", 1, False),
    ("batch 8, no prefix cache", 8, False),
    ("batch 32, no prefix cache", 32, False),
)
REFERENCE = "batch 1, no prefix cache"


@dataclass(frozen=True)
class Case:
    """One test user: history, the retriever's top 20 and where the target is in it."""

    user_id: Any
    history: list[tuple[Any, str]]
    candidates: list[tuple[Any, str]]
    target: int


@dataclass
class VariantRun:
    """Verbalizer ranking of every user with one generator configuration, over rounds."""

    name: str
    batch: int
    prefix: bool
    latencies: list[float]  # per user and round: wall time of the call that scored it
    totals: list[float]  # per round: wall time for all users
    logprobs: np.ndarray  # (users, labels) in each prompt's label order; nan past its labels
    ndcg: float

    @property
    def total(self) -> float:
        """Median wall time of a round."""
        return statistics.median(self.totals)


def _ndcg_at_10(order: Sequence[int], target: int) -> float:
    rank = list(order).index(target) + 1
    return 1.0 / float(np.log2(rank + 1)) if rank <= 10 else 0.0


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _matmul_gflops(threads: int, size: int = 2048, runs: int = 7) -> float:
    """float32 ``size``^3 matrix-multiply rate in GFLOP/s (median of ``runs``) at
    ``threads``; torch's thread count is restored afterwards (the model's setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size)
        b = torch.randn(size, size)
        a @ b
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 2 * size**3 / statistics.median(times) / 1e9


def _param_counts(cfg: GeneratorConfig) -> tuple[int, int] | None:
    """Total and non-embedding parameters of ``cfg.model``, from its config alone (the
    model is built on the meta device: no weights load, whatever the backend)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.model == BUNDLED_MODEL:
        path, gguf = bundled_model_path()
    else:
        path, gguf = cfg.model, cfg.gguf_file
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError) as exc:
        print(f"parameters of {cfg.model!r} unknown ({exc}); no compute floor")
        return None
    total = sum(p.numel() for p in model.parameters())  # tied weights count once
    embedding = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    untied = out.weight.numel() if out is not None and out.weight is not embedding else 0
    return total, total - embedding.numel() - untied


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _pick_users(args: argparse.Namespace) -> tuple[list[Case], int]:
    ml = load_movielens(args.data)
    data = llamarec_protocol(ml.catalog, ml.interactions)
    config = RetrieverConfig(cache_dir=args.cache_dir, n_candidates=N_CANDIDATES)
    retriever = Retriever(config).fit(data.catalog, data.train)
    catalog: Catalog = data.catalog
    cases = data.cases("test")
    picked: list[Case] = []
    scanned = 0
    for uid, hist, target in zip(cases.user_ids, cases.histories, cases.targets, strict=True):
        scanned += 1
        res = retriever.retrieve(RetrievalQuery(uid, hist))
        if target in res.positions:
            picked.append(
                Case(
                    user_id=uid,
                    history=[(catalog.item_ids[p], str(catalog.titles[p])) for p in hist],
                    candidates=[(c.item_id, c.title) for c in res.candidates],
                    target=int(np.flatnonzero(res.positions == target)[0]),
                )
            )
        if len(picked) == args.users:
            break
    return picked, scanned


def _generator(cfg: GeneratorConfig, weights_from: Generator | None) -> Generator:
    """A generator for ``cfg``; a transformers one reuses ``weights_from``'s loaded weights
    (loading is not what is timed, and the weights are the same)."""
    gen = make_generator(cfg)
    if isinstance(gen, TransformersGenerator) and isinstance(weights_from, TransformersGenerator):
        weights_from._load()
        gen._model, gen._tokenizer = weights_from._model, weights_from._tokenizer
        gen._device, gen._dtype = weights_from._device, weights_from._dtype
    return gen


def _release(gen: Generator) -> None:
    close = getattr(gen, "close", None)
    if callable(close):
        close()
    gc.collect()


def _run_variant(
    run: VariantRun,
    gen: Generator,
    prompts: Sequence[tuple[RenderedPrompt, np.ndarray]],
    cases: Sequence[Case],
) -> None:
    """Score every user in calls of ``run.batch`` prompts; adds one round to ``run``."""
    gen.label_logprobs([prompts[0][0]])  # warm: first-call allocations, the prefix cache
    width = max(len(p.labels) for p, _ in prompts)
    rows = np.full((len(prompts), width), np.nan)
    ndcgs = []
    start_all = time.perf_counter()
    for lo in range(0, len(prompts), run.batch):
        chunk = prompts[lo : lo + run.batch]
        start = time.perf_counter()
        lp = gen.label_logprobs([p for p, _ in chunk])
        run.latencies += [time.perf_counter() - start] * len(chunk)
        for j, ((p, order), case) in enumerate(zip(chunk, cases[lo : lo + run.batch], strict=True)):
            n = len(p.labels)
            rows[lo + j, :n] = lp[j, :n]
            scores = np.zeros(n)
            scores[order] = lp[j, :n]  # label k shows candidates[order[k]]
            ranked = [int(i) for i in np.argsort(-scores, kind="stable")]
            ndcgs.append(_ndcg_at_10(ranked, case.target))
    run.totals.append(time.perf_counter() - start_all)
    run.logprobs = rows
    run.ndcg = float(np.mean(ndcgs))


def _padding(tokens: Sequence[int], batch: int) -> float:
    """Tokens computed with left padding over tokens in the prompts, in calls of ``batch``."""
    chunks = [tokens[lo : lo + batch] for lo in range(0, len(tokens), batch)]
    return sum(max(c) * len(c) for c in chunks) / sum(tokens)


_LETTERS = re.compile(r"\b([A-Z])\b")


def _listwise_prompt(gen: Generator, prompt: RenderedPrompt) -> str:
    messages = list(prompt.messages[:-1])
    user = prompt.messages[-1].content.rsplit("\n\n", 1)[0]
    user += (
        f"\n\nRank all {len(prompt.labels)} candidates from most to least likely. "
        "Answer with the letters only, separated by commas."
    )
    return gen.tokenizer.chat_text([*messages, Message("user", user)])


def _listwise(
    gen: Generator, prompts: Sequence[tuple[RenderedPrompt, np.ndarray]], cases: Sequence[Case]
) -> dict[str, Any]:
    times, ndcgs, invalid, parseable = [], [], 0, 0
    for (p, order), case in zip(prompts, cases, strict=True):
        text = _listwise_prompt(gen, p)
        start = time.perf_counter()
        out = gen.generate([text], max_tokens=70)[0]
        times.append(time.perf_counter() - start)
        seen = list(dict.fromkeys(m for m in _LETTERS.findall(out) if m in p.labels))
        parseable += bool(seen)
        invalid += sorted(seen) != sorted(p.labels)
        shown = [int(order[p.labels.index(x)]) for x in seen]
        ranked = shown + [i for i in range(len(p.labels)) if i not in shown]
        ndcgs.append(_ndcg_at_10(ranked, case.target))
    return {
        "times": times,
        "ndcg": float(np.mean(ndcgs)),
        "invalid": invalid / len(prompts),
        "note": f"parseable {parseable}/{len(prompts)}",
    }


def _explanations(
    gen: Generator,
    prompts: Sequence[tuple[RenderedPrompt, np.ndarray]],
    cases: Sequence[Case],
    scored: VariantRun,
    *,
    users: int,
    constrained: bool,
) -> dict[str, Any]:
    """Explain each of the first ``users`` users' top 3 by ``scored``'s log-probabilities."""
    explainer = Explainer(gen, ExplainConfig(constrained=constrained))
    results = []
    for (p, _), case, lp in zip(prompts[:users], cases[:users], scored.logprobs, strict=False):
        top = np.argsort(-lp[: len(p.labels)], kind="stable")[:EXPLAIN_TOP]
        titles = dict(case.candidates)
        items = [(p.candidate_ids[j], p.labels[j], titles[p.candidate_ids[j]]) for j in top]
        results += explainer.explain(
            history=[t for _, t in case.history], items=items, candidate_labels=p.labels
        )
    errors = Counter((r.error or "").split(" (")[0][:40] for r in results if not r.valid)
    return {
        "seconds": [r.seconds for r in results],
        "valid": sum(r.valid for r in results),
        "items": len(results),
        "attempts": [r.attempts for r in results],
        "note": "; ".join(f"{n}x {e}" for e, n in errors.most_common(2)) or "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
    parser.add_argument("--data", default=str(default))
    parser.add_argument("--users", type=int, default=32, help="test users (target in top 20)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the ranking variants")
    parser.add_argument("--explain-users", type=int, default=2, help="users whose top 3 to explain")
    parser.add_argument(
        "--backend", default="transformers", choices=["transformers", "vllm", "openai"]
    )
    parser.add_argument("--model", default=BUNDLED_MODEL, help="model name or local folder")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the model")
    parser.add_argument("--matmul-threads", type=int, default=2, help="threads of the matmul rate")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ragrec"))
    args = parser.parse_args()
    if min(args.users, args.repeats, args.threads, args.matmul_threads) < 1:
        parser.error("--users, --repeats, --threads and --matmul-threads must be >= 1")
    if args.explain_users < 0:
        parser.error("--explain-users must be >= 0")
    transformers.utils.logging.disable_progress_bar()

    def config(batch: int, prefix: bool) -> GeneratorConfig:
        return GeneratorConfig(
            backend=args.backend,
            model=args.model,
            device=args.device,
            threads=args.threads,
            batch_size=batch,
            prefix_cache=prefix,
        )

    try:
        first = make_generator(config(1, True))
        tokenizer = first.tokenizer
    except (RagrecError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        sys.exit(f"backend {args.backend!r}: {exc}")

    _progress("fitting the retriever, picking users")
    cases, scanned = _pick_users(args)
    if not cases:
        sys.exit(f"no test user has the target in the top {N_CANDIDATES}")
    builder = PromptBuilder(tokenizer)
    prompts = []
    for case in cases:
        order = builder.order(case.user_id, len(case.candidates))
        rendered = builder.render(
            history=case.history, candidates=[case.candidates[i] for i in order]
        )
        prompts.append((rendered, order))
    tokens = [p.token_count for p, _ in prompts]
    prefix_tokens = statistics.median(tokenizer.count_tokens(p.prefix) for p, _ in prompts)

    _progress(f"{len(cases)} users; loading the model")
    load_start = time.perf_counter()
    first.label_logprobs([prompts[0][0]])
    load = time.perf_counter() - load_start
    info = first.info
    # transformers variants share the loaded weights; other backends start one at a time
    weights_from = first if isinstance(first, TransformersGenerator) else None
    gflops = [_matmul_gflops(args.matmul_threads)]
    model_gflops = _matmul_gflops(args.threads)
    load_avg = [os.getloadavg()[0]]

    runs = [
        VariantRun(name, batch, prefix, [], [], np.empty(0), 0.0)
        for name, batch, prefix in VARIANTS
    ]
    for rnd in range(args.repeats):
        for i, run in enumerate(runs):
            _progress(f"round {rnd + 1}/{args.repeats}: verbalizer, {run.name}")
            if rnd == 0 and i == 0:
                gen = first
            else:
                gen = _generator(config(run.batch, run.prefix), weights_from)
            _run_variant(run, gen, prompts, cases)
            if weights_from is None:
                _release(gen)
            del gen
    del first
    gflops.append(_matmul_gflops(args.matmul_threads))
    rate = max(gflops) * 1e9  # the floor is a lower bound: take the faster measurement

    gen = weights_from or _generator(config(1, True), None)
    _progress("listwise generation")
    listwise = _listwise(gen, prompts, cases)
    explained = {}
    for mode in ("json", "free"):
        _progress(f"explanations ({mode})")
        explained[mode] = _explanations(
            gen, prompts, cases, runs[0], users=args.explain_users, constrained=mode == "json"
        )
    load_avg.append(os.getloadavg()[0])

    print(
        f"backend {info.backend}, model {info.model}, device {info.device}, dtype {info.dtype}, "
        f"torch threads {args.threads}; load average {load_avg[0]:.1f} at start, "
        f"{load_avg[1]:.1f} at end, on {os.cpu_count()} CPUs"
    )
    print(
        f"{len(cases)} users with the target in the top {N_CANDIDATES} ({scanned} test users "
        f"scanned); {args.repeats} round(s); model load + first prompt {load:.1f} s"
    )
    print(
        f"prompt tokens: median {statistics.median(tokens):.0f} "
        f"(min {min(tokens)}, max {max(tokens)}), shared prefix {prefix_tokens:.0f}"
    )
    print(
        f"float32 2048^3 matmul on {args.matmul_threads} threads: "
        + ", ".join(f"{g:.1f}" for g in gflops)
        + f" GFLOP/s (before, after the ranking runs; the floor uses the faster); on the "
        f"model's {args.threads}: {model_gflops:.1f}"
    )
    floor_user = float("nan")
    counts = _param_counts(config(1, True))
    if counts is not None:
        total_params, non_embedding = counts
        floor_user = 2 * non_embedding * float(np.mean(tokens)) / rate
        floor_total = 2 * total_params * float(np.mean(tokens)) / rate
        print(
            f"parameters: {total_params / 1e6:.1f} M total, {non_embedding / 1e6:.1f} M "
            f"non-embedding; floor per user {floor_user:.3f} s (non-embedding), "
            f"{floor_total:.3f} s (total)"
        )

    n = len(cases)
    by_name = {r.name: r for r in runs}
    ref = by_name[REFERENCE]
    print(
        f"\n{'verbalizer ranking':26} {'p50 s/user':>10} {'p90 s/user':>10} {'amort s/user':>12} "
        f"{'users/s':>8} {'x b1':>5} {'x floor':>7} {'padded':>6} {'ndcg@10':>7} {'max|dlp|':>8}"
    )
    for r in runs:
        amort = r.total / n
        diff = float(np.nanmax(np.abs(r.logprobs - ref.logprobs)))
        print(
            f"{r.name:26} {_pct(r.latencies, 50):10.3f} {_pct(r.latencies, 90):10.3f} "
            f"{amort:12.3f} {n / r.total:8.3f} {ref.total / r.total:5.2f} "
            f"{amort / floor_user:7.2f} {_padding(tokens, r.batch):6.2f} {r.ndcg:7.4f} "
            f"{diff:8.1e}"
        )
    lw = listwise["times"]
    print(
        f"{'listwise generation':26} {_pct(lw, 50):10.3f} {_pct(lw, 90):10.3f} "
        f"{sum(lw) / n:12.3f} {n / sum(lw):8.3f} {ref.total / sum(lw):5.2f} {'':7} {'':6} "
        f"{listwise['ndcg']:7.4f} invalid {listwise['invalid']:.0%}, {listwise['note']}"
    )
    retrieval = float(np.mean([_ndcg_at_10(range(N_CANDIDATES), c.target) for c in cases]))
    print(f"{'retrieval order (no LLM)':26} {'':62} {retrieval:7.4f}")

    print(
        f"\n{'explanations (top 3)':26} {'items':>5} {'valid':>6} {'p50 s/item':>10} "
        f"{'p90 s/item':>10} {'attempts p50':>12}  rejected because"
    )
    for mode, e in explained.items():
        label = "JSON-schema constrained" if mode == "json" else "unconstrained"
        valid = e["valid"] / e["items"] if e["items"] else float("nan")
        attempts = statistics.median(e["attempts"]) if e["attempts"] else float("nan")
        print(
            f"{label:26} {e['items']:5d} {valid:6.0%} {_pct(e['seconds'], 50):10.3f} "
            f"{_pct(e['seconds'], 90):10.3f} {attempts:12.1f}  {e['note']}"
        )

    cached = by_name[VARIANTS[0][0]]
    best = max((r for r in runs if r.batch > 1), key=lambda r: n / r.total)
    print(
        f"\nachieved / floor (non-embedding): batch 1 {ref.total / n / floor_user:.2f}x "
        f"(with prefix cache {cached.total / n / floor_user:.2f}x), best batch "
        f"({best.batch}) {best.total / n / floor_user:.2f}x"
    )
    if best.batch > n:
        print(f"(batch {best.batch} ran as one call of {n} users: raise --users to fill it)")
    print(
        f"throughput: best batch ({best.batch}) {ref.total / best.total:.2f}x batch 1; prefix "
        f"cache {ref.total / cached.total:.2f}x without; verbalizer (batch 1, prefix cache) "
        f"{_pct(lw, 50) / _pct(cached.latencies, 50):.1f}x faster per user than listwise "
        "generation (p50)"
    )


if __name__ == "__main__":
    main()
