"""The openai backend against a real ``vllm serve`` on loopback: the shared generator
contract, and the same label scores as the offline engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tests.generation.conformance import GeneratorConformance

from ragrec.generation import GeneratorConfig, make_generator

from .conftest import SERVED_NAME
from .test_vllm_backend import _prompts, check_structured_explanations

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


@pytest.fixture(scope="module")
def client(vllm_server: str) -> Iterator[Any]:
    """A client asking for exact label log-probabilities, 4 requests in flight."""
    gen = _client(vllm_server, vllm_server=True, concurrency=4)
    yield gen
    gen.close()


class TestOpenAIConformance(GeneratorConformance):
    """The shared generator contract through the server (concurrent requests keep the
    prompts' order)."""

    backend = "openai"

    @pytest.fixture
    def generator(self, client: Any) -> Any:
        return client


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
