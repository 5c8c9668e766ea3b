"""The string-keyed backend factory; backends are imported when chosen."""

from __future__ import annotations

import importlib.util

from ragrec.errors import ConfigError
from ragrec.generation._base import Generator, GeneratorConfig

__all__ = ["make_generator"]


def make_generator(config: GeneratorConfig | None = None) -> Generator:
    """The generator for ``config.backend``.

    Raises:
        ConfigError: The backend is not available here (with an install hint).
    """
    cfg = config or GeneratorConfig()
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
