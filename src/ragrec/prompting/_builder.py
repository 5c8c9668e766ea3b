"""Rendering prompts within a token budget, as inspectable objects."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field, field_validator

from ragrec._settings import Settings
from ragrec.errors import ConfigError, RagrecError
from ragrec.prompting._templates import DEFAULT_RANK_TEMPLATE, PromptTemplate, load_template

__all__ = [
    "LABELS",
    "Message",
    "PromptBuilder",
    "PromptConfig",
    "PromptTooLongError",
    "RenderedPrompt",
    "TokenizerLike",
    "sanitize",
]

LABELS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class PromptTooLongError(RagrecError):
    """A prompt cannot fit the token budget even with history and titles cut."""


class TokenizerLike(Protocol):
    """What the builder needs from the generator's tokenizer."""

    def count_tokens(self, text: str) -> int:
        """Number of tokens in ``text``."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to at most ``max_tokens`` tokens."""
        ...

    def chat_text(self, messages: Sequence[Message], *, generation_prompt: bool = True) -> str:
        """The model's chat template applied; with ``generation_prompt`` it ends where the
        assistant's reply starts."""
        ...


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt exactly as the model sees it.

    Attributes:
        messages: The chat messages.
        text: The messages with the model's chat template applied.
        token_count: Tokens in ``text`` by the generator's tokenizer.
        template_id: Template identifier.
        template_hash: Template content hash.
        exemplar_ids: Ids of the few-shot exemplars included.
        candidate_ids: Item ids in label order (``labels[i]`` is ``candidate_ids[i]``).
        labels: The labels shown, ``A``, ``B``, ...
        history_ids: Item ids of the history shown (after truncation), oldest first.
        prefix: The leading part of ``text`` shared by every prompt with the same system
            message and exemplars (its KV cache can be reused).
    """

    messages: tuple[Message, ...]
    text: str
    token_count: int
    template_id: str
    template_hash: str
    exemplar_ids: tuple[str, ...]
    candidate_ids: tuple[Any, ...]
    labels: tuple[str, ...]
    history_ids: tuple[Any, ...]
    prefix: str = ""

    @property
    def hash(self) -> str:
        """sha256 of ``text`` (first 16 hex digits): identifies the exact prompt."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def label_of(self, item_id: Any) -> str:
        """The label an item was shown under."""
        return self.labels[self.candidate_ids.index(item_id)]


class PromptConfig(Settings):
    """Configuration of :class:`PromptBuilder`."""

    template: str | None = Field(
        default=None, description="A .toml template file or a user-message string; None: default."
    )
    max_candidates: int = Field(default=20, ge=2, le=26, description="Labels A.. up to this.")
    max_history: int = Field(default=20, ge=0, description="Most recent history items shown.")
    max_title_tokens: int = Field(default=24, ge=2, description="Tokens kept per title.")
    max_prompt_tokens: int = Field(
        default=1024, ge=64, description="Budget for the whole prompt, by the model's tokenizer."
    )
    item_text: Literal["title", "id", "id_title"] = Field(
        default="title",
        description="How history items and candidates are named: title; id ('item 42', "
        "no text about the item at all); id_title ('item 42: Heat (1995)'). Few-shot "
        "exemplars keep their titles.",
    )
    show_genres: bool = Field(default=False, description="Show candidates' genres.")
    show_rank: Literal["none", "inline", "order"] = Field(
        default="none",
        description="Show the retriever's opinion while the labels stay shuffled (no "
        "position bias to learn): inline, each candidate's rank among the candidates after "
        "its title ('[rank 3]'); order, one line after the candidates with their labels in "
        "retrieval order ('Retrieval order, best first: C, A, ...'). The caller passes the "
        "ranks; the re-ranker does (its candidates come in retrieval order). true reads as "
        "inline, false as none. Few-shot exemplars are shown without ranks.",
    )
    shuffle: bool = Field(
        default=True, description="Shuffle candidate order (seeded per user) against position bias."
    )
    seed: int = Field(default=0, description="Seed of the candidate shuffles.")

    @field_validator("show_rank", mode="before")
    @classmethod
    def _rank_flag(cls, value: Any) -> Any:
        if value is True:
            return "inline"
        if value is False:
            return "none"
        return value


_SPACE = re.compile(r"\s+")
_TAGS = re.compile(r"</?\s*data\s*>", re.IGNORECASE)
# Chat-control markers (<|im_start|>, <|eot_id|>, ...) tokenize as special tokens: left in
# item text they would end the data block's chat turn. Bare-tag special tokens are read
# from plain text too: SmolLM2's <file_sep>, <filename>, <repo_name>, ... (its pretraining
# document boundaries), Gemma's <start_of_turn>, Llama 2's </s>.
_CONTROL = re.compile(r"<\|[^<>|]*\|>|</?[A-Za-z_][A-Za-z0-9_]*>")


def sanitize(text: str) -> str:
    """Item text as a one-line data value: no newlines, no ``<data>`` delimiters, no
    ``<|...|>`` chat-control markers and no bare ``<name>``/``</name>`` tags (the form of
    other special tokens, and of HTML tags)."""
    text = str(text)
    # Repeat: removing one tag can join its neighbours into another ("<</data>/data>").
    while (cleaned := _TAGS.sub("", _CONTROL.sub("", text))) != text:
        text = cleaned
    return _SPACE.sub(" ", text).strip()


class PromptBuilder:
    """Renders ranking prompts: history and labelled candidates within a token budget.

    Args:
        tokenizer: The generator's tokenizer (counts tokens, applies the chat template).
        config: Budgets, template, shuffling.
    """

    def __init__(self, tokenizer: TokenizerLike, config: PromptConfig | None = None) -> None:
        self.config = config or PromptConfig()
        self.tokenizer = tokenizer
        self.template: PromptTemplate = (
            load_template(self.config.template, kind="rank")
            if self.config.template is not None
            else DEFAULT_RANK_TEMPLATE
        )

    def order(self, user_key: Any, n: int, permutation: int = 0) -> np.ndarray:
        """The candidate order for a user (identity when shuffling is off)."""
        if not self.config.shuffle and permutation == 0:
            return np.arange(n)
        key = int(hashlib.sha256(repr(user_key).encode()).hexdigest()[:12], 16)
        rng = np.random.default_rng([self.config.seed, key, permutation])
        return rng.permutation(n)

    def _name(self, item_id: Any, title: str) -> str:
        """An item as the prompt names it (``item_text``), the title within its budget."""
        kind = self.config.item_text
        if kind == "id":
            return f"item {sanitize(str(item_id))}"
        text = self.tokenizer.truncate(sanitize(title), self.config.max_title_tokens)
        return f"item {sanitize(str(item_id))}: {text}" if kind == "id_title" else text

    def render(
        self,
        *,
        history: Sequence[tuple[Any, str]],
        candidates: Sequence[tuple[Any, str]],
        query: str | None = None,
        genres: Sequence[str] | None = None,
        exemplars: Sequence[tuple[str, Sequence[Message]]] = (),
        ranks: Sequence[int] | None = None,
    ) -> RenderedPrompt:
        """Render one ranking prompt.

        Args:
            history: ``(item id, title)`` pairs, oldest first.
            candidates: ``(item id, title)`` pairs in the order to label them A, B, ...
            query: Optional free-text request.
            genres: Per candidate, a genre string (shown when ``show_genres``).
            exemplars: ``(id, messages)`` few-shot turns placed before the request.
            ranks: Per candidate, its retrieval rank among the candidates (1 = best);
                shown when ``show_rank``, which requires them.

        Raises:
            ConfigError: Too many or no candidates; ``show_rank`` without one rank per
                candidate.
            PromptTooLongError: The prompt exceeds the budget with no history left.
        """
        cfg = self.config
        if not 1 <= len(candidates) <= cfg.max_candidates:
            raise ConfigError(
                f"{len(candidates)} candidates; a prompt takes 1 to {cfg.max_candidates} "
                "(set prompting max_candidates, at most 26)"
            )
        if cfg.show_rank != "none" and (ranks is None or len(ranks) != len(candidates)):
            got = "none" if ranks is None else len(ranks)
            raise ConfigError(
                f"prompting show_rank={cfg.show_rank!r} needs one retrieval rank per candidate "
                f"({len(candidates)}), got {got}; pass ranks= or set show_rank='none'"
            )
        labels = LABELS[: len(candidates)]
        tok = self.tokenizer
        titles = [self._name(i, t) for i, t in candidates]
        lines = []
        for i, (label, title) in enumerate(zip(labels, titles, strict=True)):
            extra = f" ({sanitize(genres[i])})" if cfg.show_genres and genres else ""
            if cfg.show_rank == "inline" and ranks is not None:
                extra += f" [rank {int(ranks[i])}]"
            lines.append(f"{label}. {title}{extra}")
        if cfg.show_rank == "order" and ranks is not None:
            best_first = sorted(range(len(labels)), key=lambda i: (int(ranks[i]), i))
            lines.append("Retrieval order, best first: " + ", ".join(labels[i] for i in best_first))
        shown = list(history)[-cfg.max_history :] if cfg.max_history else []
        hist_titles = [self._name(i, t) for i, t in shown]
        query_text = f"Request: <data>{sanitize(query)}</data>\n\n" if query else ""
        system_msgs = [Message("system", self.template.system)] if self.template.system else []
        ex_msgs = [m for _, msgs in exemplars for m in msgs]
        prefix_messages = [*system_msgs, *ex_msgs]
        while True:
            values = {
                "history": "\n".join(f"- {t}" for t in hist_titles) or "(none)",
                "candidates": "\n".join(lines),
                "query": query_text,
                "n_candidates": str(len(candidates)),
                "first_label": labels[0],
                "last_label": labels[-1],
            }
            used = {k: v for k, v in values.items() if k in self.template.variables}
            system = [Message("system", self.template.system.format(**used))] if system_msgs else []
            messages = (*system, *ex_msgs, Message("user", self.template.user.format(**used)))
            text = tok.chat_text(messages)
            count = tok.count_tokens(text)
            if count <= cfg.max_prompt_tokens:
                break
            if hist_titles:
                hist_titles = hist_titles[1:]
                shown = shown[1:]
                continue
            raise PromptTooLongError(
                f"prompt has {count} tokens with no history left, over max_prompt_tokens="
                f"{cfg.max_prompt_tokens}; raise the budget, lower max_title_tokens "
                f"({cfg.max_title_tokens}) or pass fewer candidates ({len(candidates)})"
            )
        n_prefix = len(prefix_messages)
        prefix = tok.chat_text(messages[:n_prefix], generation_prompt=False) if n_prefix else ""
        if not text.startswith(prefix):
            prefix = ""
        return RenderedPrompt(
            messages=tuple(messages),
            text=text,
            token_count=count,
            template_id=self.template.id,
            template_hash=self.template.hash,
            exemplar_ids=tuple(e for e, _ in exemplars),
            candidate_ids=tuple(i for i, _ in candidates),
            labels=labels,
            history_ids=tuple(i for i, _ in shown),
            prefix=prefix,
        )
