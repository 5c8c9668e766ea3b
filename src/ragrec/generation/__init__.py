"""Generation: LLM backends behind one protocol, verbalizer ranking and the blend."""

from ragrec.generation._base import (
    BUNDLED_MODEL,
    BackendError,
    GenerationInfo,
    Generator,
    GeneratorConfig,
    renormalise,
)
from ragrec.generation._factory import make_generator

__all__ = [
    "BUNDLED_MODEL",
    "BackendError",
    "GenerationInfo",
    "Generator",
    "GeneratorConfig",
    "make_generator",
    "renormalise",
]
