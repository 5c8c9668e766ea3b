"""The llamacpp backend on the bundled GGUF as shipped: its tokenizer and chat template
match the transformers tokenizer's, its label log-probabilities agree with the
transformers backend's (fp32, the same weights dequantised) within a stated tolerance
and rank the labels alike, the KV cache of a shared prefix changes nothing; and the
shared generator contract (conformance.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ragrec.errors import ConfigError
from ragrec.generation import BackendError, GeneratorConfig, make_generator
from ragrec.generation._transformers import HFTokenizer, TransformersGenerator
from ragrec.prompting import LABELS, Message, PromptBuilder, PromptConfig, RenderedPrompt

from .conformance import GeneratorConformance
from .test_transformers import _prompts

pytest.importorskip("llama_cpp")
from ragrec.generation._llamacpp import LlamaCppGenerator

# Q4_1 weights with llama.cpp's int8 activations against the same weights dequantised to
# fp32 in torch: measured max difference 0.33 over 20 ml-latest-small prompts
# (benchmarks/generation_backends.py); 0.5 leaves room for other CPUs' kernels.
TOLERANCE = 0.5


@pytest.fixture(scope="module")
def llama() -> LlamaCppGenerator:
    gen = make_generator(GeneratorConfig(backend="llamacpp", threads=1))
    assert isinstance(gen, LlamaCppGenerator)
    return gen


@pytest.fixture(scope="module")
def prompts(tokenizer: HFTokenizer) -> list[RenderedPrompt]:
    return _prompts(tokenizer)


class TestLlamaCppConformance(GeneratorConformance):
    """The shared generator contract, on the GGUF as shipped."""

    backend = "llamacpp"

    @pytest.fixture
    def generator(self, llama: LlamaCppGenerator) -> LlamaCppGenerator:
        return llama


class TestTokenizer:
    def test_same_ids_and_chat_text_as_transformers(
        self, llama: LlamaCppGenerator, tokenizer: HFTokenizer, prompts: list[RenderedPrompt]
    ) -> None:
        messages = [Message("system", "You rank movies."), Message("user", "Alien (1979)?")]
        assert llama.tokenizer.chat_text(messages) == tokenizer.chat_text(messages)
        assert llama.tokenizer.chat_text(messages, generation_prompt=False) == (
            tokenizer.chat_text(messages, generation_prompt=False)
        )
        for prompt in prompts:
            assert llama.tokenizer.encode(prompt.text) == tokenizer.encode(prompt.text)
        assert llama.tokenizer.label_ids(LABELS[:20]) == tokenizer.label_ids(LABELS[:20])
        with pytest.raises(ConfigError, match="single-token labels"):
            llama.tokenizer.label_ids(["Zanzibar quux"])

    def test_prompts_render_with_the_chatml_template(self, llama: LlamaCppGenerator) -> None:
        builder = PromptBuilder(llama.tokenizer, PromptConfig(shuffle=False))
        prompt = builder.render(history=[(1, "Heat (1995)")], candidates=[(2, "Up (2009)")])
        assert prompt.text.startswith("<|im_start|>system")


class TestLabelLogprobs:
    def test_agrees_with_transformers(
        self,
        llama: LlamaCppGenerator,
        generator: TransformersGenerator,
        prompts: list[RenderedPrompt],
    ) -> None:
        got = llama.label_logprobs(prompts)
        reference = generator.label_logprobs(prompts)
        assert got.shape == reference.shape
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(reference))
        for row, prompt in enumerate(prompts):
            n = len(prompt.labels)
            assert np.exp(got[row, :n]).sum() == pytest.approx(1.0, abs=1e-6)
            np.testing.assert_allclose(got[row, :n], reference[row, :n], atol=TOLERANCE)
            assert int(np.argmax(got[row, :n])) == int(np.argmax(reference[row, :n]))

    def test_prefix_reuse_changes_nothing(
        self, llama: LlamaCppGenerator, prompts: list[RenderedPrompt]
    ) -> None:
        cold = LlamaCppGenerator(GeneratorConfig(backend="llamacpp", threads=1, prefix_cache=False))
        cold._llm, cold._tokenizer = llama._load(), llama.tokenizer  # the same weights
        fresh = cold.label_logprobs(prompts)
        reused = llama.label_logprobs([*prompts, *prompts])
        np.testing.assert_allclose(reused[: len(prompts)], fresh, atol=1e-4)
        np.testing.assert_allclose(reused[len(prompts) :], fresh, atol=1e-4)

    def test_a_prompt_longer_than_the_context_is_an_error(
        self, llama: LlamaCppGenerator, prompts: list[RenderedPrompt]
    ) -> None:
        small = LlamaCppGenerator(GeneratorConfig(backend="llamacpp", max_model_len=64))
        with pytest.raises(BackendError, match=r"exceeds the llama\.cpp context of 64"):
            small.label_logprobs(prompts[:1])


class TestConfig:
    def test_the_default_cpu_backend(self) -> None:
        gen = make_generator(GeneratorConfig(device="cpu"))
        assert isinstance(gen, LlamaCppGenerator)
        assert gen._llm is None  # nothing loads until first use

    def test_adapters_and_cuda_run_on_transformers(self, tmp_path: Path) -> None:
        adapted = make_generator(GeneratorConfig(adapter=str(tmp_path)))
        assert isinstance(adapted, TransformersGenerator)
        assert make_generator(GeneratorConfig(device="cuda")).info.backend == "transformers"

    def test_info_names_the_quantisation(self, llama: LlamaCppGenerator) -> None:
        assert llama.info.dtype == "Q4_1"

    def test_settings_it_cannot_honour_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="peft adapters"):
            LlamaCppGenerator(GeneratorConfig(backend="llamacpp", adapter=str(tmp_path)))
        with pytest.raises(ConfigError, match="runs on CPU"):
            LlamaCppGenerator(GeneratorConfig(backend="llamacpp", device="cuda"))
        with pytest.raises(ConfigError, match="not a GGUF file"):
            LlamaCppGenerator(GeneratorConfig(backend="llamacpp", model=str(tmp_path)))

    def test_missing_package_names_the_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "llama_cpp" else real(name, *a),
        )
        with pytest.raises(ConfigError, match="pip install 'llama-cpp-python"):
            make_generator(GeneratorConfig(backend="llamacpp"))
