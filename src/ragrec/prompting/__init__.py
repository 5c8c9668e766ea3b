"""Prompting: templates, rendered prompts within token budgets, few-shot exemplars."""

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
from ragrec.prompting._exemplar_model import (
    CandidatesFn,
    Exemplar,
    ExemplarConfig,
    ExemplarSource,
    render_exemplar,
)
from ragrec.prompting._exemplars import ExemplarPool
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
    "CandidatesFn",
    "Exemplar",
    "ExemplarConfig",
    "ExemplarPool",
    "ExemplarSource",
    "Message",
    "PromptBuilder",
    "PromptConfig",
    "PromptTemplate",
    "PromptTooLongError",
    "RenderedPrompt",
    "TokenizerLike",
    "load_template",
    "render_exemplar",
    "sanitize",
]
