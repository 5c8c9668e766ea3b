"""Grounded explanations: one short reason per recommended item, generated under a JSON
schema and validated so that it cites only the item's label and the user's history."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragrec.errors import RagrecError
from ragrec.generation._base import Generator
from ragrec.prompting import DEFAULT_EXPLAIN_TEMPLATE, Message, PromptTemplate, sanitize

logger = logging.getLogger(__name__)

__all__ = ["ExplainConfig", "Explainer", "Explanation", "ExplanationResult"]

_WORD = re.compile(r"[^\W\d_]{2,}")
# The default template's example values: a reason that repeats one explains nothing.
_PLACEHOLDERS = frozenset({"a title from the history", "..."})


def _norm(text: str) -> str:
    return " ".join(text.lower().strip(" .!\"'").split())


class ExplainConfig(BaseModel):
    """Configuration of :class:`Explainer`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=80, ge=8, description="Generated tokens per explanation.")
    history_items: int = Field(default=8, ge=1, description="Recent history titles shown.")
    max_reason_chars: int = Field(default=160, ge=10, description="Longest reason accepted.")
    min_reason_words: int = Field(
        default=2,
        ge=1,
        description="Fewest words a reason may have (a bare label or title explains nothing).",
    )
    constrained: bool = Field(
        default=True, description="Constrain decoding to the JSON schema (xgrammar)."
    )


class Explanation(BaseModel):
    """The JSON an explanation must be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    reason: str = Field(min_length=1)
    because: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class ExplanationResult:
    """One item's explanation, or why there is none.

    Attributes:
        item_id: The recommended item.
        label: Its label in the ranking prompt.
        reason: The reason text (``None`` when dropped).
        because: History titles it cites (all from the prompt's history).
        valid: False when both attempts were invalid and the explanation was dropped.
        attempts: Generations tried (1 or 2).
        error: Why the last attempt was rejected.
        seconds: Wall time.
    """

    item_id: Any
    label: str
    reason: str | None
    because: tuple[str, ...]
    valid: bool
    attempts: int
    error: str | None
    seconds: float


class Explainer:
    """Writes explanations with a generator, validating each against the prompt.

    Args:
        generator: The LLM backend.
        config: Token budget and validation limits.
        template: An explain template (``{history}``, ``{item}``, ``{label}``, ``{query}``).
    """

    def __init__(
        self,
        generator: Generator,
        config: ExplainConfig | None = None,
        template: PromptTemplate | None = None,
    ) -> None:
        self.generator = generator
        self.config = config or ExplainConfig()
        self.template = template or DEFAULT_EXPLAIN_TEMPLATE

    def schema(self, label: str, history_titles: Sequence[str]) -> dict[str, Any]:
        """The JSON schema of one explanation: the label fixed, citations from history."""
        because: dict[str, Any] = {"type": "array", "maxItems": 2}
        because["items"] = {"enum": list(history_titles)} if history_titles else {"enum": [""]}
        return {
            "type": "object",
            "properties": {
                "label": {"enum": [label]},
                "reason": {
                    "type": "string",
                    "minLength": 4 * self.config.min_reason_words,
                    "maxLength": self.config.max_reason_chars,
                },
                "because": because,
            },
            "required": ["label", "reason", "because"],
            "additionalProperties": False,
        }

    def validate(
        self,
        text: str,
        *,
        label: str,
        candidate_labels: Sequence[str],
        history_titles: Sequence[str],
        item_title: str | None = None,
    ) -> Explanation:
        """Parse and check one output (``item_title``: a reason that only restates the
        item's label and title is rejected).

        Raises:
            ValueError: Not JSON, wrong shape, a label other than the item's (or outside
                the candidates), a citation not in the history, or an over-long reason.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg})") from exc
        try:
            exp = Explanation.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"wrong shape ({exc.error_count()} errors)") from exc
        if exp.label not in candidate_labels:
            raise ValueError(f"cites label {exp.label!r}, not a candidate")
        if exp.label != label:
            raise ValueError(f"cites label {exp.label!r} instead of {label!r}")
        outside = [t for t in exp.because if t not in history_titles]
        if outside:
            raise ValueError(f"cites {outside[0]!r}, which is not in the history")
        if len(exp.reason) > self.config.max_reason_chars:
            raise ValueError(f"reason longer than {self.config.max_reason_chars} characters")
        words = _WORD.findall(exp.reason)
        if len(words) < self.config.min_reason_words:
            raise ValueError(
                f"reason {exp.reason!r} has {len(words)} word(s), fewer than "
                f"{self.config.min_reason_words}"
            )
        if _norm(exp.reason) in _PLACEHOLDERS:
            raise ValueError(f"reason {exp.reason!r} copies the prompt's placeholder")
        if item_title is not None:
            title_words = {w.lower() for w in _WORD.findall(item_title)}
            if {w.lower() for w in words} <= title_words:
                raise ValueError(f"reason {exp.reason!r} only restates the item's title")
        return exp

    def explain(
        self,
        *,
        history: Sequence[str],
        items: Sequence[tuple[Any, str, str]],
        candidate_labels: Sequence[str],
        query: str | None = None,
    ) -> list[ExplanationResult]:
        """Explain each ``(item id, label, title)``; never raises for bad model output.

        An invalid output is regenerated once (with twice the token budget), then dropped
        with ``valid=False``. A backend error drops all explanations, flagged.
        """
        titles = [sanitize(t) for t in history][-self.config.history_items :]
        results = []
        for item_id, label, title in items:
            start = time.perf_counter()
            prompt = self._prompt(titles, label, title, query)
            schema = self.schema(label, titles) if self.config.constrained else None
            error: str | None = None
            exp: Explanation | None = None
            attempts = 0
            for budget in (self.config.max_tokens, 2 * self.config.max_tokens):
                attempts += 1
                try:
                    text = self.generator.generate([prompt], max_tokens=budget, json_schema=schema)[
                        0
                    ]
                except (RagrecError, RuntimeError, OSError, TimeoutError) as exc:
                    error = f"backend error: {exc}"
                    break
                try:
                    exp = self.validate(
                        text,
                        label=label,
                        candidate_labels=candidate_labels,
                        history_titles=titles,
                        item_title=sanitize(title),
                    )
                    error = None
                    break
                except ValueError as exc:
                    error = str(exc)
            results.append(
                ExplanationResult(
                    item_id=item_id,
                    label=label,
                    reason=exp.reason if exp else None,
                    because=tuple(exp.because) if exp else (),
                    valid=exp is not None,
                    attempts=attempts,
                    error=error,
                    seconds=time.perf_counter() - start,
                )
            )
        return results

    def _prompt(self, titles: Sequence[str], label: str, title: str, query: str | None) -> str:
        values = {
            "history": "\n".join(f"- {t}" for t in titles) or "(none)",
            "item": f"{label}. {sanitize(title)}",
            "label": label,
            "query": f"Request: <data>{sanitize(query)}</data>\n\n" if query else "",
            "candidates": "",
        }
        used = {k: v for k, v in values.items() if k in self.template.variables}
        messages = [Message("user", self.template.user.format(**used))]
        if self.template.system:
            messages.insert(0, Message("system", self.template.system.format(**used)))
        return self.generator.tokenizer.chat_text(messages)
