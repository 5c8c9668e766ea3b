"""The llama.cpp backend: a GGUF model as shipped (no dequantisation), on CPU, through
``llama-cpp-python``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragrec.errors import ConfigError
from ragrec.generation._base import (
    BUNDLED_MODEL,
    BackendError,
    BaseGenerator,
    BaseTokenizer,
    GenerationInfo,
    GenerationRequest,
    GeneratorConfig,
)
from ragrec.generation._transformers import bundled_model_path
from ragrec.prompting import Message, RenderedPrompt

logger = logging.getLogger(__name__)

__all__ = ["INSTALL_HINT", "LlamaCppGenerator", "LlamaCppTokenizer", "gguf_path"]

INSTALL_HINT = (
    "the llamacpp backend needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36' "
    "(scripts/setup.sh builds it), or set generator.backend = 'transformers'"
)


def gguf_path(config: GeneratorConfig) -> Path:
    """The GGUF file that ``config`` names: the bundled model's, ``model`` when it is a
    ``.gguf`` file, or ``gguf_file`` inside the ``model`` folder.

    Raises:
        ConfigError: No GGUF file there.
    """
    if config.model == BUNDLED_MODEL:
        folder, name = bundled_model_path()
        return Path(folder) / name
    path = Path(config.model)
    if config.gguf_file is not None:
        path = path / config.gguf_file
    if path.is_file() and path.suffix == ".gguf":
        return path
    raise ConfigError(
        f"generator.model={config.model!r} (gguf_file={config.gguf_file!r}) is not a GGUF "
        "file; the llamacpp backend runs GGUF models: name the .gguf file, or set "
        "generator.backend = 'transformers' for a Hugging Face folder"
    )


class LlamaCppTokenizer(BaseTokenizer):
    """The GGUF's own tokenizer and chat template, as the prompt builder needs them
    (the same token ids as the Hugging Face tokenizer built from the same file)."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._template: Any = None
        source = llm.metadata.get("tokenizer.chat_template")
        if source:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            self._template = env.from_string(source)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token text (``<|im_start|>``) is one token, no
        BOS is added."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(self.llm.detokenize(list(ids))).decode("utf-8", errors="ignore")

    def chat_text(self, messages: Sequence[Message], *, generation_prompt: bool = True) -> str:
        if self._template is None:
            return self.plain_chat(messages, generation_prompt)
        return str(
            self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=generation_prompt,
                bos_token="",
                eos_token="",
            )
        )


class LlamaCppGenerator(BaseGenerator):
    """Runs a GGUF model with llama.cpp on CPU, quantised as shipped.

    The model loads on first use. The KV cache of the previous prompt is kept: a prompt
    that starts with the same tokens (system text, exemplars) evaluates only the rest.
    Calls are serialised (one llama.cpp context per generator).
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        self.config = config or GeneratorConfig(backend="llamacpp")
        if self.config.adapter is not None:
            raise ConfigError(
                f"adapter={self.config.adapter!r}: the llamacpp backend runs GGUF files "
                "without peft adapters; set generator.backend = 'transformers' for an "
                "adapter (or merge it and convert the model to GGUF)"
            )
        if self.config.device == "cuda":
            raise ConfigError(
                "generator.device = 'cuda' with backend 'llamacpp': this build runs on CPU; "
                "use backend 'vllm' or 'transformers' on a GPU"
            )
        self._path = gguf_path(self.config)
        self._llm: Any = None
        self._tokenizer: LlamaCppTokenizer | None = None
        self._lock = threading.RLock()
        self.load_seconds = 0.0

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigError(INSTALL_HINT) from exc
        start = time.perf_counter()
        threads = self.config.threads or max(1, os.cpu_count() or 1)
        try:
            llm = llama_cpp.Llama(
                model_path=str(self._path),
                n_ctx=self.config.max_model_len,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=0,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"llama.cpp could not load {str(self._path)!r} ({exc})") from exc
        self._llm = llm
        self._tokenizer = LlamaCppTokenizer(llm)
        self.load_seconds = time.perf_counter() - start
        logger.info(
            "generator: llama.cpp %s on cpu (%d threads), loaded in %.2f s",
            self._path.name,
            threads,
            self.load_seconds,
        )
        return llm

    @property
    def info(self) -> GenerationInfo:
        return GenerationInfo("llamacpp", self.config.model, "cpu", self._path.stem.split(".")[-1])

    @property
    def tokenizer(self) -> LlamaCppTokenizer:
        with self._lock:
            self._load()
        assert self._tokenizer is not None
        return self._tokenizer

    def _check_length(self, tokens: Sequence[int], extra: int = 0) -> None:
        if len(tokens) + extra > self.config.max_model_len:
            raise BackendError(
                f"prompt of {len(tokens)} tokens (+{extra} to generate) exceeds the llama.cpp "
                f"context of {self.config.max_model_len}; raise generator.max_model_len or "
                "shorten the prompt (prompt.max_tokens)"
            )

    # ranking ------------------------------------------------------------------------------

    def _guard(self) -> contextlib.AbstractContextManager[Any]:
        return self._lock

    def _prepare(self) -> None:
        self._load()

    def _label_scores(
        self, prompts: Sequence[RenderedPrompt], label_ids: Sequence[int]
    ) -> list[np.ndarray]:
        import llama_cpp

        llm = self._load()
        tok = self.tokenizer
        ids = np.asarray(label_ids, dtype=np.int64)
        n_vocab = llm.n_vocab()
        scores = []
        for prompt in prompts:
            tokens = tok.encode(prompt.text)
            if not tokens:
                raise BackendError("an empty prompt has no next-token distribution")
            self._check_length(tokens)
            keep = 0
            if self.config.prefix_cache:  # reuse the cached tokens this prompt starts with
                cached = llm.input_ids[: llm.n_tokens]
                limit = min(len(cached), len(tokens) - 1)
                while keep < limit and cached[keep] == tokens[keep]:
                    keep += 1
            llm.n_tokens = keep
            try:
                llm.eval(tokens[keep:])
            except (RuntimeError, ValueError) as exc:
                llm.reset()
                raise BackendError(f"llama.cpp failed to evaluate a prompt: {exc}") from exc
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)
            )
            # a copy: the next evaluation overwrites llama.cpp's logits buffer
            scores.append(logits[ids[: len(prompt.labels)]].astype(np.float64))
        return scores

    # generation ---------------------------------------------------------------------------

    def _generate(self, request: GenerationRequest) -> list[str]:
        llm = self._load()
        grammar = None
        if request.json_schema is not None:
            from llama_cpp import LlamaGrammar

            grammar = LlamaGrammar.from_json_schema(json.dumps(request.json_schema))
        outputs = []
        for text in request.prompts:
            tokens = self.tokenizer.encode(text)
            self._check_length(tokens, request.max_tokens)
            try:
                result = llm.create_completion(
                    tokens,
                    max_tokens=request.max_tokens,
                    temperature=0.0,
                    top_k=1,
                    repeat_penalty=1.0,
                    stop=request.stop,
                    grammar=grammar,
                )
            except (RuntimeError, ValueError) as exc:
                llm.reset()
                raise BackendError(f"llama.cpp failed to generate: {exc}") from exc
            outputs.append(str(result["choices"][0]["text"]))
        return outputs
