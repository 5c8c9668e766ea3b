"""Few-shot exemplars one by one: the worked ranking example, its configuration, and
how it renders as a conversation turn."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ragrec._settings import Settings
from ragrec.errors import ConfigError
from ragrec.prompting._builder import LABELS, Message, sanitize
from ragrec.prompting._templates import DEFAULT_RANK_TEMPLATE, PromptTemplate

__all__ = [
    "CandidatesFn",
    "Exemplar",
    "ExemplarConfig",
    "ExemplarSource",
    "render_exemplar",
]

ExemplarSource = Literal["train", "feedback"]
"""Where an exemplar came from: a training user's sequence, or a user's feedback."""

CandidatesFn = Callable[[Any, np.ndarray, int], Sequence[int]]
"""``(user id, history positions, k) -> catalog positions``, best first: where seeded
exemplars take their wrong candidates from (a retriever, typically)."""


class ExemplarConfig(Settings):
    """Configuration of :class:`ExemplarPool`: how many exemplars a prompt gets, how they
    are chosen, their token budget, and how a pool is seeded.

    Every exemplar costs prompt tokens (and a forward pass over them). With
    ``selection="similar"`` each user gets their own exemplars, so the shared prompt prefix
    differs per user and the generator's prefix cache cannot be reused; ``"fixed"`` gives
    every user the same exemplars, which the prefix cache computes once.
    """

    k: int = Field(
        default=2,
        ge=0,
        le=8,
        description="Exemplars per prompt (0: none). The LLM ranker's default config sets "
        "k=0 (off); giving it an [exemplars] table turns them on with this default.",
    )
    selection: Literal["similar", "fixed"] = Field(
        default="similar",
        description="similar: per user, the exemplars whose history is closest to theirs "
        "(MMR for diversity); fixed: the same seeded choice for every user (prefix-cacheable).",
    )
    max_tokens: int = Field(
        default=400,
        ge=16,
        description="Token budget of all exemplars' messages together, by the generator's "
        "tokenizer; exemplars that do not fit are dropped. Exemplars also count toward the "
        "prompt's max_prompt_tokens (the builder cuts the request's history to fit).",
    )
    fetch_k: int = Field(
        default=20, ge=1, description="Most similar exemplars that MMR re-ranks for diversity."
    )
    lambda_mult: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="MMR trade-off: 1 ranks by similarity alone, 0 by diversity alone.",
    )
    pool_size: int = Field(
        default=1000,
        ge=1,
        description="Most exemplars kept; when full, the oldest train exemplar is evicted "
        "first (feedback exemplars only when no train exemplar is left).",
    )
    n_seed: int = Field(
        default=200, ge=1, description="Training users a ranker seeds the pool from."
    )
    max_history: int = Field(
        default=5,
        ge=1,
        description="History titles per seeded exemplar (its most recent); similarity also "
        "compares only a request's most recent max_history titles.",
    )
    n_candidates: int = Field(
        default=5, ge=2, le=26, description="Candidates per seeded exemplar (labels A..)."
    )
    seed: int = Field(default=0, description="Seed of seeding and of the fixed selection.")

    @model_validator(mode="after")
    def _fetch_at_least_k(self) -> ExemplarConfig:
        if self.fetch_k < self.k:
            raise ValueError(
                f"fetch_k={self.fetch_k} is below k={self.k}: MMR picks k of the fetch_k most "
                "similar exemplars; raise fetch_k"
            )
        return self


def _json_id(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _history_text(titles: Sequence[str], max_history: int) -> str:
    """What similarity compares: the most recent titles, one per line."""
    kept = [sanitize(t) for t in titles][-max_history:]
    return "\n".join(kept) or "(none)"


@dataclass(frozen=True, kw_only=True)
class Exemplar:
    """One worked ranking example: a history, labelled candidates and the label chosen.

    The id is derived from the content the model sees (sanitized history, candidates and
    label), so identical exemplars share an id and a pool keeps one of them.

    Attributes:
        user_id: Whose data it was built from (to delete it on request).
        history: History titles, oldest first.
        candidates: Candidate titles in label order (``candidates[0]`` is ``A``).
        label: The label of the chosen candidate.
        reason: Why it was chosen, when known (kept, not shown to the model).
        source: ``"train"`` (seeded from training data) or ``"feedback"``.
        history_ids: Item ids of ``history`` (empty when unknown).
        candidate_ids: Item ids of ``candidates`` (empty when unknown).
        id: Content hash, ``ex-`` and 16 hex digits.
    """

    user_id: Any
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    label: str
    reason: str | None = None
    source: ExemplarSource = "train"
    history_ids: tuple[Any, ...] = ()
    candidate_ids: tuple[Any, ...] = ()
    id: str = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "user_id", _json_id(self.user_id))
        set_(self, "history", tuple(str(t) for t in self.history))
        set_(self, "candidates", tuple(str(t) for t in self.candidates))
        set_(self, "history_ids", tuple(_json_id(i) for i in self.history_ids))
        set_(self, "candidate_ids", tuple(_json_id(i) for i in self.candidate_ids))
        n = len(self.candidates)
        if not 2 <= n <= len(LABELS):
            raise ConfigError(
                f"an exemplar needs 2 to {len(LABELS)} candidates, got {n}; pass the chosen "
                "item and at least one other"
            )
        if self.label not in LABELS[:n]:
            raise ConfigError(
                f"exemplar label {self.label!r} is not one of its {n} candidates' labels "
                f"{LABELS[0]}..{LABELS[n - 1]}"
            )
        if self.source not in ("train", "feedback"):
            raise ConfigError(f"exemplar source {self.source!r} must be 'train' or 'feedback'")
        for name, ids, titles in (
            ("history_ids", self.history_ids, self.history),
            ("candidate_ids", self.candidate_ids, self.candidates),
        ):
            if ids and len(ids) != len(titles):
                raise ConfigError(
                    f"exemplar {name} has {len(ids)} ids for {len(titles)} titles; pass one "
                    "id per title or none"
                )
        content = json.dumps(
            [
                [sanitize(t) for t in self.history],
                [sanitize(t) for t in self.candidates],
                self.label,
            ]
        )
        set_(self, "id", "ex-" + hashlib.sha256(content.encode()).hexdigest()[:16])

    @property
    def chosen(self) -> str:
        """The chosen candidate's title."""
        return self.candidates[LABELS.index(self.label)]

    @property
    def chosen_id(self) -> Any:
        """The chosen candidate's item id (``None`` when ids are unknown)."""
        return self.candidate_ids[LABELS.index(self.label)] if self.candidate_ids else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the pool file's records)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "source": self.source,
            "history": list(self.history),
            "history_ids": list(self.history_ids),
            "candidates": list(self.candidates),
            "candidate_ids": list(self.candidate_ids),
            "label": self.label,
            "reason": self.reason,
        }


def render_exemplar(
    exemplar: Exemplar, template: PromptTemplate = DEFAULT_RANK_TEMPLATE
) -> tuple[Message, Message]:
    """An exemplar as a (user, assistant) turn: the user message in the rank template's
    format (no request text), the answer its label. All item text is sanitized.

    Raises:
        ConfigError: ``template`` is not a rank template.
    """
    if template.kind != "rank":
        raise ConfigError(
            f"exemplars render with a rank template; {template.id!r} is a {template.kind!r} "
            "template (pass the prompt builder's template)"
        )
    labels = LABELS[: len(exemplar.candidates)]
    values = {
        "history": "\n".join(f"- {sanitize(t)}" for t in exemplar.history) or "(none)",
        "candidates": "\n".join(
            f"{label}. {sanitize(t)}" for label, t in zip(labels, exemplar.candidates, strict=True)
        ),
        "query": "",
        "n_candidates": str(len(labels)),
        "first_label": labels[0],
        "last_label": labels[-1],
    }
    used = {k: v for k, v in values.items() if k in template.variables}
    return Message("user", template.user.format(**used)), Message("assistant", exemplar.label)
