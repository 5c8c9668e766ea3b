"""The openai backend against a real ``vllm serve`` on loopback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ragrec.generation import GeneratorConfig, make_generator
from ragrec.prompting import PromptBuilder

from .conftest import SERVED_NAME
from .test_vllm_backend import HISTORY, TITLES, _prompts, check_structured_explanations

pytestmark = pytest.mark.vllm


def _client(base_url: str, **options: Any) -> Any:
    return make_generator(
        GeneratorConfig(
            backend="openai",
            base_url=base_url,
            model=SERVED_NAME,
            tokenizer="smollm2-135m-instruct",
            **options,
        )
    )


def test_exact_label_logprobs_match_the_offline_engine(
    vllm_server: str, vllm_generator: Any
) -> None:
    client = _client(vllm_server, vllm_server=True, concurrency=3)
    prompts = _prompts(client)
    got = client.label_logprobs(prompts)
    reference = vllm_generator.label_logprobs(prompts)
    finite = np.isfinite(reference)
    assert (np.isfinite(got) == finite).all()
    np.testing.assert_allclose(got[finite], reference[finite], atol=0.02)
    assert client.info.backend == "openai"


def test_top_logprobs_mode_keeps_the_leading_label(vllm_server: str, vllm_generator: Any) -> None:
    """Without the vLLM extension only the server's top tokens come back; the labels among
    them keep their values and order."""
    client = _client(vllm_server, vllm_server=False, top_logprobs=20)
    prompts = _prompts(client)
    got = client.label_logprobs(prompts)
    reference = vllm_generator.label_logprobs(prompts)
    for row, prompt in enumerate(prompts):
        n = len(prompt.labels)
        assert np.exp(got[row, :n]).sum() == pytest.approx(1.0, abs=1e-6)
        assert int(np.argmax(got[row, :n])) == int(np.argmax(reference[row, :n]))


def test_explanations_through_the_server(vllm_server: str) -> None:
    check_structured_explanations(_client(vllm_server))


def test_concurrent_requests_keep_prompt_order(vllm_server: str) -> None:
    client = _client(vllm_server, vllm_server=True, concurrency=4)
    builder = PromptBuilder(client.tokenizer)
    prompts = [
        builder.render(history=HISTORY[: 1 + i % 3], candidates=[(j, TITLES[j]) for j in range(6)])
        for i in range(8)
    ]
    together = client.label_logprobs(prompts)
    one_by_one = np.vstack([client.label_logprobs([p]) for p in prompts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-3)
