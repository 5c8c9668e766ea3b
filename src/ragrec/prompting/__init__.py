"""Prompting: templates, rendered prompts within token budgets."""

from ragrec.prompting._builder import (
    LABELS,
    Message,
    PromptBuilder,
    PromptConfig,
    PromptTooLongError,
    RenderedPrompt,
    TokenizerLike,
    sanitize,
)
from ragrec.prompting._templates import (
    DEFAULT_EXPLAIN_TEMPLATE,
    DEFAULT_RANK_TEMPLATE,
    PromptTemplate,
    load_template,
)

__all__ = [
    "DEFAULT_EXPLAIN_TEMPLATE",
    "DEFAULT_RANK_TEMPLATE",
    "LABELS",
    "Message",
    "PromptBuilder",
    "PromptConfig",
    "PromptTemplate",
    "PromptTooLongError",
    "RenderedPrompt",
    "TokenizerLike",
    "load_template",
    "sanitize",
]
