"""Fixtures for the prompting tests: the real model's tokenizer (loaded once per session,
shared with the generation tests)."""

from __future__ import annotations

import pytest

from generation.conftest import real_generator
from ragrec.generation._transformers import HFTokenizer


@pytest.fixture(scope="session")
def tokenizer() -> HFTokenizer:
    """The bundled SmolLM2 tokenizer, as the generator exposes it."""
    return real_generator().tokenizer
