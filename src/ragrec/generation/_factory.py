"""The string-keyed backend factory; backends are imported when chosen."""

from __future__ import annotations

import importlib.util
import logging

from ragrec.errors import ConfigError
from ragrec.generation._base import Generator, GeneratorConfig

__all__ = ["make_generator"]

logger = logging.getLogger(__name__)


def _wants_cuda(config: GeneratorConfig) -> bool:
    if config.device == "cuda":
        return True
    if config.device == "cpu":
        return False
    import torch

    return bool(torch.cuda.is_available())


def make_generator(config: GeneratorConfig | None = None) -> Generator:
    """The generator for ``config.backend``.

    Raises:
        ConfigError: The backend is not available here (with an install hint).
    """
    cfg = config or GeneratorConfig()
    if cfg.backend == "llamacpp" and (cfg.adapter is not None or _wants_cuda(cfg)):
        # llama.cpp runs GGUF files on CPU here; peft adapters and GPUs need transformers
        why = "a peft adapter" if cfg.adapter is not None else "a CUDA device"
        logger.info("generator: %s runs on the transformers backend, not llamacpp", why)
        cfg = cfg.model_copy(update={"backend": "transformers"})
    if cfg.backend == "llamacpp":
        from ragrec.generation._llamacpp import INSTALL_HINT, LlamaCppGenerator

        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(INSTALL_HINT)
        return LlamaCppGenerator(cfg)
    if cfg.backend == "transformers":
        from ragrec.generation._transformers import TransformersGenerator

        return TransformersGenerator(cfg)
    if cfg.backend == "vllm":
        from ragrec.generation._vllm import INSTALL_HINT, VLLMGenerator

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(INSTALL_HINT)
        return VLLMGenerator(cfg)
    if cfg.backend == "openai":
        if importlib.util.find_spec("httpx") is None:
            raise ConfigError("the openai backend needs httpx: pip install httpx")
        from ragrec.generation._openai import OpenAIGenerator

        return OpenAIGenerator(cfg)
    raise ConfigError(
        f"generation backend {cfg.backend!r} is unknown; use llamacpp, transformers, vllm or openai"
    )
