"""Fixtures for the generation tests: the real bundled model, loaded once per session,
and a stand-in generator whose backend is down (for the error paths only)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from ragrec.generation import BackendError, GenerationInfo, GeneratorConfig
from ragrec.generation._transformers import HFTokenizer, TransformersGenerator
from ragrec.prompting import RenderedPrompt

# the shared conformance tests' asserts report their values, as in test modules
pytest.register_assert_rewrite("generation.conformance", "tests.generation.conformance")

# One torch thread: on a 2-core machine shared with other CPU-bound work, two OpenMP
# threads made a forward pass ~15x slower (9 s instead of 0.6 s); one is ~1.5x slower
# only when the machine is idle. torch applies this process-wide once the model loads.
TEST_CONFIG = GeneratorConfig(device="cpu", threads=1)


@functools.cache
def real_generator() -> TransformersGenerator:
    """The default generator (bundled SmolLM2-135M-Instruct GGUF) on CPU, float32.

    One instance per process: test modules outside this package import this function,
    so the model loads once. The weights load on first scoring; the tokenizer alone is
    enough for the prompting tests.
    """
    return TransformersGenerator(TEST_CONFIG)


def sharing_weights(**options: Any) -> TransformersGenerator:
    """A fresh generator with other settings (``prefix_cache``, ``batch_size``) that
    reuses the real generator's loaded weights and tokenizer instead of loading again.
    Its prefix cache starts empty."""
    base = real_generator()
    base._load()
    gen = TransformersGenerator(
        GeneratorConfig.model_validate({**TEST_CONFIG.model_dump(), **options})
    )
    gen._model, gen._tokenizer = base._model, base._tokenizer
    gen._device, gen._dtype = base._device, base._dtype
    return gen


class FailingGenerator:
    """A backend that is down: the real tokenizer, but every model call raises.

    Args:
        tokenizer: The tokenizer prompts are rendered with.
        error: The exception ``label_logprobs`` and ``generate`` raise.
    """

    def __init__(self, tokenizer: HFTokenizer, error: Exception | None = None) -> None:
        self._tokenizer = tokenizer
        self.error = error or BackendError("server at 127.0.0.1:9 refused the connection")
        self.calls = 0

    @property
    def info(self) -> GenerationInfo:
        return GenerationInfo("failing", "down", "cpu", "float32")

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    def label_logprobs(self, prompts: Sequence[RenderedPrompt]) -> np.ndarray:
        self.calls += 1
        raise self.error

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 64,
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        self.calls += 1
        raise self.error


@pytest.fixture(scope="session")
def generator() -> TransformersGenerator:
    """The real generator with its weights loaded."""
    gen = real_generator()
    gen._load()
    return gen


@pytest.fixture(scope="session")
def tokenizer() -> HFTokenizer:
    """The real model's tokenizer."""
    return real_generator().tokenizer
