"""The string-keyed backend factory; backends are imported when chosen."""

from __future__ import annotations

from ragrec.errors import ConfigError
from ragrec.generation._base import Generator, GeneratorConfig

__all__ = ["make_generator"]


def make_generator(config: GeneratorConfig | None = None) -> Generator:
    """The generator for ``config.backend``.

    Raises:
        ConfigError: The backend is not available here (with an install hint).
    """
    cfg = config or GeneratorConfig()
    if cfg.backend == "transformers":
        from ragrec.generation._transformers import TransformersGenerator

        return TransformersGenerator(cfg)
    raise ConfigError(
        f"generation backend {cfg.backend!r} is not available in this build; use "
        "'transformers' (the vllm and openai backends are planned: see the README)"
    )
