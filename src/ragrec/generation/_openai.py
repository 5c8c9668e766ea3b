"""The OpenAI-compatible backend: any server speaking the completions API (``vllm serve``,
llama.cpp's server, hosted endpoints)."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ragrec.errors import ConfigError
from ragrec.generation._base import (
    BUNDLED_MODEL,
    BackendError,
    BaseGenerator,
    GenerationInfo,
    GenerationRequest,
    GeneratorConfig,
)
from ragrec.generation._transformers import HFTokenizer, bundled_model_path
from ragrec.prompting import RenderedPrompt

logger = logging.getLogger(__name__)

__all__ = ["OpenAIGenerator"]

T = TypeVar("T")

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def load_tokenizer(config: GeneratorConfig) -> HFTokenizer:
    """The local tokenizer a remote model is measured with.

    ``config.tokenizer`` when set; else the bundled model's when ``config.model`` is the
    bundled name; else ``config.model`` when it is a local folder.

    Raises:
        ConfigError: None of those is available.
    """
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {}
    if config.tokenizer is not None:
        source = config.tokenizer
        if source == BUNDLED_MODEL:
            source, kwargs["gguf_file"] = bundled_model_path()
    elif config.model == BUNDLED_MODEL:
        source, kwargs["gguf_file"] = bundled_model_path()
    elif Path(config.model).is_dir():
        source = config.model
    else:
        raise ConfigError(
            f"generator model {config.model!r} is not a local folder, so its tokenizer is "
            "unknown; set generator tokenizer to a local folder with the served model's "
            f"tokenizer (or {BUNDLED_MODEL!r})"
        )
    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(source, **kwargs))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"generator tokenizer {source!r} could not be loaded ({exc}); set it to a local "
            "folder holding tokenizer files"
        ) from exc


class OpenAIGenerator(BaseGenerator):
    """Talks to an OpenAI-compatible server over HTTP.

    Ranking asks ``/completions`` for one token with its top log-probabilities, with a
    logit bias towards the label tokens; labels the server does not return get the lowest
    returned value. Explanations use ``response_format`` with a JSON schema (honoured by
    vLLM and llama.cpp). Requests time out, are retried with exponential backoff on
    connection errors, 408/409/429 and 5xx, and at most ``concurrency`` are in flight.

    Args:
        config: ``base_url``, ``model`` (the served name), ``timeout``, ``max_retries``,
            ``concurrency``, ``top_logprobs``, ``tokenizer``.
        sleep: Waits between retries (injectable for tests).
    """

    def __init__(
        self,
        config: GeneratorConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx

        if not config.base_url:
            raise ConfigError("backend 'openai' needs base_url, e.g. http://127.0.0.1:8000/v1")
        self.config = config
        self._sleep = sleep
        self._tokenizer: HFTokenizer | None = None
        headers = {}
        key = os.environ.get(config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/") + "/",
            timeout=config.timeout,
            headers=headers,
            limits=httpx.Limits(max_connections=config.concurrency),
        )
        self.requests = 0
        self.retries = 0

    @property
    def info(self) -> GenerationInfo:
        return GenerationInfo("openai", self.config.model, str(self.config.base_url), "server")

    @property
    def tokenizer(self) -> HFTokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.config)
        return self._tokenizer

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    # HTTP ---------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; the parsed JSON response.

        Raises:
            BackendError: The server is unreachable, keeps failing, times out, or answers
                with an error the request cannot recover from.
        """
        import httpx

        url = f"{self.config.base_url}/{path}"
        attempts = self.config.max_retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                self.retries += 1
                delay = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())
                self._sleep(delay)
            self.requests += 1
            try:
                response = self._client.post(path, json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self.config.timeout} s"
                continue
            except httpx.TransportError as exc:
                last = f"unreachable ({type(exc).__name__}: {exc})"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise BackendError(
                    f"server {url} rejected the request with HTTP {response.status_code}: "
                    f"{response.text[:300]}"
                )
            try:
                data: dict[str, Any] = response.json()
            except ValueError as exc:
                raise BackendError(f"server {url} answered with invalid JSON ({exc})") from exc
            return data
        raise BackendError(
            f"server {url} failed {attempts} time(s); last: {last}. Check that it is running "
            f"(e.g. `vllm serve MODEL_FOLDER`) and that base_url is right"
        )

    def _map(self, func: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        if len(items) <= 1 or self.config.concurrency == 1:
            return [func(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(func, items))

    # ranking ------------------------------------------------------------------------------

    def _label_scores(
        self, prompts: Sequence[RenderedPrompt], label_ids: Sequence[int]
    ) -> list[np.ndarray]:
        ids = list(label_ids)
        token_text = {i: self.tokenizer.decode([i]) for i in ids}

        def one(prompt: RenderedPrompt) -> np.ndarray:
            n = len(prompt.labels)
            body: dict[str, Any] = {
                "model": self.config.model,
                "prompt": prompt.text,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": self.config.top_logprobs,
            }
            if self.config.vllm_server:
                body["logprobs"] = n
                body["logprob_token_ids"] = ids[:n]
            else:
                body["logit_bias"] = {str(i): 100 for i in ids[:n]}
            data = self._post("completions", body)
            return self._label_values(data, ids[:n], token_text)

        return self._map(one, list(prompts))

    @staticmethod
    def _label_values(
        data: dict[str, Any], label_ids: Sequence[int], token_text: dict[int, str]
    ) -> np.ndarray:
        """Label log-probabilities from a completions response (top_logprobs are keyed by
        token text); missing labels get the lowest value returned."""
        try:
            top = data["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                "the server's completion has no top_logprobs; it must support the "
                "completions API with logprobs"
            ) from exc
        if not isinstance(top, dict) or not top:
            raise BackendError("the server returned empty top_logprobs")
        found = {str(token): float(value) for token, value in top.items()}
        floor = min(found.values())
        return np.array(
            [found.get(token_text[i], floor - 1.0) for i in label_ids], dtype=np.float64
        )

    # generation ---------------------------------------------------------------------------

    def _generate(self, request: GenerationRequest) -> list[str]:
        def one(text: str) -> str:
            body: dict[str, Any] = {
                "model": self.config.model,
                "prompt": text,
                "max_tokens": request.max_tokens,
                "temperature": 0.0,
            }
            if request.stop:
                body["stop"] = request.stop
            if request.json_schema is not None:
                schema = {"name": "output", "schema": request.json_schema, "strict": True}
                body["response_format"] = {"type": "json_schema", "json_schema": schema}
            data = self._post("completions", body)
            try:
                return str(data["choices"][0]["text"])
            except (KeyError, IndexError, TypeError) as exc:
                raise BackendError("the server's completion has no choices[0].text") from exc

        return self._map(one, request.prompts)
