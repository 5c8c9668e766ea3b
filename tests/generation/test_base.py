"""The shared half of every backend (BaseGenerator's template methods, BaseTokenizer) on a
scripted stand-in backend: what it checks, cuts, renormalises and refuses, without a
model."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from ragrec.errors import ConfigError
from ragrec.generation import (
    BackendError,
    BaseGenerator,
    BaseTokenizer,
    GenerationInfo,
    GenerationRequest,
    GeneratorConfig,
)
from ragrec.prompting import Message, PromptBuilder, PromptConfig, RenderedPrompt


class CharTokenizer(BaseTokenizer):
    """One token per character; no chat template."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)

    def chat_text(self, messages: Sequence[Message], *, generation_prompt: bool = True) -> str:
        return self.plain_chat(messages, generation_prompt)


class Scripted(BaseGenerator):
    """Answers from scripts: ``outputs(request)`` and ``scores(prompts, label_ids)``."""

    def __init__(self) -> None:
        self.config = GeneratorConfig()
        self._tokenizer = CharTokenizer()
        self.lock = threading.RLock()
        self.prepared = 0
        self.requests: list[GenerationRequest] = []
        self.outputs: Any = lambda request: [f"echo {p}" for p in request.prompts]
        self.scores: Any = lambda prompts, ids: [
            np.arange(len(p.labels), dtype=np.float64) for p in prompts
        ]

    @property
    def info(self) -> GenerationInfo:
        return GenerationInfo("scripted", "none", "cpu", "float32")

    @property
    def tokenizer(self) -> CharTokenizer:
        return self._tokenizer

    def _prepare(self) -> None:
        self.prepared += 1

    def _guard(self) -> Any:
        return self.lock

    def _label_scores(
        self, prompts: Sequence[RenderedPrompt], label_ids: Sequence[int]
    ) -> Sequence[np.ndarray]:
        assert self.lock._is_owned()  # type: ignore[attr-defined]
        return list(self.scores(prompts, label_ids))

    def _generate(self, request: GenerationRequest) -> list[str]:
        assert self.lock._is_owned()  # type: ignore[attr-defined]
        self.requests.append(request)
        return list(self.outputs(request))


def _prompts(gen: Scripted, sizes: tuple[int, ...]) -> list[RenderedPrompt]:
    builder = PromptBuilder(gen.tokenizer, PromptConfig(shuffle=False))
    return [
        builder.render(history=[(0, "Heat (1995)")], candidates=[(i, f"T{i}") for i in range(n)])
        for n in sizes
    ]


class TestGenerate:
    def test_the_backend_gets_a_checked_request(self) -> None:
        gen = Scripted()
        assert gen.generate(("a", "b"), max_tokens=5, stop=("!",)) == ["echo a", "echo b"]
        assert gen.requests == [GenerationRequest(["a", "b"], 5, None, ["!"])]

    def test_completions_end_before_the_first_stop_string(self) -> None:
        gen = Scripted()
        gen.outputs = lambda request: ["one. two\nthree.", "no stop here"]
        out = gen.generate(["a", "b"], stop=["\n", "."])
        assert out == ["one", "no stop here"]

    def test_a_wrong_number_of_completions_is_a_backend_error(self) -> None:
        gen = Scripted()
        gen.outputs = lambda request: ["only one"]
        with pytest.raises(BackendError, match="scripted returned 1 completions for 2 prompts"):
            gen.generate(["a", "b"])

    def test_bad_input_never_reaches_the_backend(self) -> None:
        gen = Scripted()
        with pytest.raises(ConfigError, match="max_tokens=0 must be >= 1"):
            gen.generate(["a"], max_tokens=0)
        with pytest.raises(ConfigError, match=r"prompts='a long prompt text that goes on and"):
            gen.generate("a long prompt text that goes on and on and on")
        assert gen.requests == []


class TestLabelLogprobs:
    def test_renormalised_and_padded(self) -> None:
        gen = Scripted()
        prompts = _prompts(gen, (3, 1))
        out = gen.label_logprobs(prompts)
        assert out.shape == (2, 3)
        expected = np.arange(3) - np.log(np.exp(np.arange(3)).sum())
        np.testing.assert_allclose(out[0], expected)
        assert out[1, 0] == 0.0
        assert np.isneginf(out[1, 1:]).all()

    def test_no_prompts_still_prepare(self) -> None:
        gen = Scripted()
        assert gen.label_logprobs([]).shape == (0, 0)
        assert gen.prepared == 1

    def test_a_wrong_number_of_rows_is_a_backend_error(self) -> None:
        gen = Scripted()
        gen.scores = lambda prompts, ids: [np.zeros(3)]
        with pytest.raises(BackendError, match="label scores for 1 of 2 prompts"):
            gen.label_logprobs(_prompts(gen, (3, 2)))

    def test_a_wrong_number_of_labels_is_a_backend_error(self) -> None:
        gen = Scripted()
        gen.scores = lambda prompts, ids: [np.zeros(2) for _ in prompts]
        with pytest.raises(BackendError, match=r"\(2,\) label scores for a prompt with 3 labels"):
            gen.label_logprobs(_prompts(gen, (3,)))


class TestBaseTokenizer:
    def test_count_and_truncate_are_built_on_encode_and_decode(self) -> None:
        tok = CharTokenizer()
        assert tok.count_tokens("Heat") == 4
        assert tok.truncate("Heat", 4) == "Heat"
        assert tok.truncate("Heat (1995)", 5) == "Heat..."  # the cut is stripped
        assert tok.label_ids(["A", "B"]) == [65, 66]
        with pytest.raises(ConfigError, match="'AB' is 2 tokens"):
            tok.label_ids(["AB"])

    def test_plain_chat_without_a_template(self) -> None:
        tok = CharTokenizer()
        messages = [Message("system", "Rank."), Message("user", "Heat?")]
        assert tok.chat_text(messages) == "Rank.\n\nHeat?\nAnswer: "
        assert tok.chat_text(messages, generation_prompt=False) == "Rank.\n\nHeat?\n\n"
