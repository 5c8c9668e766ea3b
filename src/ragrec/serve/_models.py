"""Request and response bodies of the HTTP service (pydantic; shown at ``/docs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    Discriminator,
    Field,
    JsonValue,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
    WithJsonSchema,
)

from ragrec._settings import Settings
from ragrec.feedback import MAX_ID_LENGTH, EventKind
from ragrec.retrieval import Filters

__all__ = [
    "MAX_BATCH",
    "ChannelScore",
    "Explanation",
    "FeedbackBatch",
    "FeedbackBatchResult",
    "FeedbackBody",
    "FeedbackIn",
    "FeedbackResult",
    "ForgetResponse",
    "HealthResponse",
    "RecommendRequest",
    "RecommendResponse",
    "RecommendedItemOut",
]

MAX_BATCH = 1000
"""Most events one ``POST /feedback`` takes."""

_Text = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]


def _check_id(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
        return value
    raise ValueError(
        f"an id is an integer or text of 1-{MAX_ID_LENGTH} characters, got "
        f"{type(value).__name__}; send the id as the store keeps it (1 and '1' differ)"
    )


Id = Annotated[
    int | str,
    PlainValidator(_check_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
            ],
            "description": "An integer or text id; the type is kept (1 and '1' differ).",
        }
    ),
]


_Body = Settings


class RecommendRequest(_Body):
    """``POST /recommend``: the arguments of :meth:`ragrec.Recommender.recommend`."""

    user_id: Id
    k: StrictInt = Field(default=10, ge=1, le=100, description="How many items (1-100).")
    query: str | None = Field(
        default=None, min_length=1, max_length=2000, description="Free-text request."
    )
    filters: Filters | None = Field(
        default=None, description="Business filters (ragrec.retrieval.Filters)."
    )
    explain: StrictBool = Field(
        default=False,
        description="Explain every item from its retrieval evidence; the LLM rewrites the "
        "top explain_top of them (off by default).",
    )


class FeedbackIn(_Body):
    """One event; see :class:`ragrec.feedback.FeedbackEvent` for the rules."""

    event_id: _Text = Field(
        description="Unique, stable id chosen by the sender; a resend with the same id is "
        "stored once."
    )
    user_id: Id
    item_id: Id
    kind: EventKind
    value: float | None = Field(
        default=None, description="The rating for rating events (0.5-5); optional otherwise."
    )
    timestamp: AwareDatetime | None = Field(
        default=None,
        description="When it happened (ISO 8601 with an offset). Omitted: the time the "
        "server first received this event id.",
    )
    rec_id: _Text | None = Field(
        default=None, description="The recommendation this event answers (its rec_id)."
    )
    context: dict[str, JsonValue] | None = Field(
        default=None, description="Optional JSON object (device, page, ...)."
    )


class FeedbackBatch(_Body):
    """Several events, stored in one transaction: all of them or, on any error, none."""

    events: list[FeedbackIn] = Field(min_length=1, max_length=MAX_BATCH)


def _feedback_form(value: Any) -> str:
    if isinstance(value, dict) and "events" in value:
        return "batch"
    return "batch" if isinstance(value, FeedbackBatch) else "event"


FeedbackBody = Annotated[
    Annotated[FeedbackIn, Tag("event")] | Annotated[FeedbackBatch, Tag("batch")],
    Discriminator(_feedback_form),
]
"""``POST /feedback`` takes one event, or ``{"events": [...]}``."""


class FeedbackResult(BaseModel):
    """What happened to one event."""

    event_id: str
    stored: bool = Field(description="False when this event id was already stored.")


class FeedbackBatchResult(BaseModel):
    """What happened to a batch."""

    events: list[FeedbackResult]
    stored: int = Field(description="Events stored by this request (repeats not counted).")


class ChannelScore(BaseModel):
    """A retrieval channel that proposed the item."""

    channel: str
    rank: int
    score: float


class EvidenceShare(BaseModel):
    """One channel's share of the item's fused score."""

    channel: str
    share: float
    rank: int


class EvidenceItem(BaseModel):
    """A history item that raises the item's score, with its share."""

    item_id: int | str
    title: str
    share: float
    channels: list[str]


class Explanation(BaseModel):
    """Why the item was recommended (:class:`ragrec.generation.ExplanationResult`): the
    sentence shown, and the retrieval evidence it was built from."""

    text: str = Field(description="The sentence shown to the user (never empty).")
    source: str = Field(description="'llm' (a checked LLM rewrite) or 'template'.")
    template: str = Field(description="The sentence built from the evidence.")
    cited: list[int | str] = Field(description="Ids of the history items the sentence names.")
    rejected: str | None = Field(
        default=None, description="Why the LLM's rewrite was not used (None when it was)."
    )
    channels: list[EvidenceShare] = Field(default_factory=list)
    history: list[EvidenceItem] = Field(default_factory=list)
    genres: list[str] = Field(default_factory=list)


class RecommendedItemOut(BaseModel):
    """One recommended item (:class:`ragrec.RecommendedItem`)."""

    item_id: int | str
    title: str
    rank: int
    score: float
    retrieval_score: float
    llm_logprob: float | None
    label: str | None
    channels: list[ChannelScore]
    explanation: Explanation | None


class RecommendResponse(BaseModel):
    """A recommendation (:class:`ragrec.Recommendation`); send its ``rec_id`` with the
    feedback on its items."""

    rec_id: str
    user_id: int | str
    items: list[RecommendedItemOut]
    query: str | None
    cold_start: bool
    degraded: bool
    reason: str | None
    llm_ranked: bool
    blend_weight: float
    model: str
    backend: str
    prompt_id: str | None
    prompt_hash: str | None
    exemplar_ids: list[str]
    weights: dict[str, float]
    timings: dict[str, float]
    llm_note: str | None = Field(
        default=None, description="Why the LLM did not rank, and how to turn it on."
    )


class ForgetResponse(BaseModel):
    """What ``DELETE /users/{user_id}`` removed, by kind."""

    user_id: int | str
    removed: dict[str, int]


class HealthResponse(BaseModel):
    """``GET /health``."""

    status: str
    version: str
    items: int
    users: int
    model: str
    backend: str
    feedback_store: str
    started: datetime
