"""The records the feedback store keeps: events, served recommendations, their provenance."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    Field,
    JsonValue,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ragrec._settings import Settings
from ragrec.feedback._errors import FieldIssue, InvalidFeedbackError, from_validation_error

__all__ = [
    "DEFAULT_MIN_RATING",
    "MAX_CONTEXT_BYTES",
    "MAX_ID_LENGTH",
    "POSITIVE_KINDS",
    "RATING_RANGE",
    "EventKind",
    "FeedbackEvent",
    "Id",
    "ItemProvenance",
    "RecommendationRecord",
    "ServedItem",
    "canonical_json",
    "check_weights",
]

RATING_RANGE: tuple[float, float] = (0.5, 5.0)
"""Allowed rating values, inclusive (the MovieLens scale; ml-100k's 1-5 fits inside)."""

DEFAULT_MIN_RATING = 4.0
"""Ratings at or above this count as positive in :meth:`FeedbackEvent.is_positive`."""

MAX_ID_LENGTH = 256
"""Longest text id accepted (event, recommendation, user and item ids)."""

MAX_CONTEXT_BYTES = 65536
"""Largest ``context`` accepted, as compact UTF-8 JSON."""


class EventKind(StrEnum):
    """What the user did with an item."""

    IMPRESSION = "impression"
    CLICK = "click"
    LIKE = "like"
    DISLIKE = "dislike"
    RATING = "rating"
    SKIP = "skip"
    PURCHASE = "purchase"


POSITIVE_KINDS: frozenset[EventKind] = frozenset(
    {EventKind.CLICK, EventKind.LIKE, EventKind.PURCHASE}
)
"""Kinds that always count as positive; ratings count from a threshold."""

_KINDS = ", ".join(k.value for k in EventKind)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal text (used for comparison)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check_id(value: Any) -> int | str:
    if isinstance(value, bool):
        raise ValueError("a boolean is not an id -- fix: pass the id as an integer or as text")
    if isinstance(value, numbers.Integral):
        number = int(value)
        if not -(2**63) <= number < 2**63:
            raise ValueError("integer id outside the 64-bit range -- fix: pass it as text")
        return number
    if isinstance(value, str):
        return _check_text(value)
    raise ValueError(
        f"ids are integers or text, got {type(value).__name__} -- fix: pass an int "
        "(e.g. a MovieLens id) or a str"
    )


def _check_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"must be text, got {type(value).__name__} -- fix: pass a str (e.g. uuid4().hex)"
        )
    if not value.strip():
        raise ValueError("must not be empty or blank -- fix: pass a non-empty id")
    if value != value.strip():
        raise ValueError(
            "has leading or trailing whitespace -- fix: strip it before sending "
            "(ragrec does not alter ids)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(
            "contains control characters -- fix: use printable text (PostgreSQL cannot "
            "store NUL, and ids must read back unchanged)"
        )
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"is {len(value)} characters long, at most {MAX_ID_LENGTH} are allowed "
            "-- fix: use a shorter id, such as a hash of this one"
        )
    return value


def _check_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"must be a number, got {type(value).__name__} -- fix: pass a float (or None)"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("must be finite -- fix: pass a real number (not NaN or infinity)")
    return number


def _check_optional_number(value: Any) -> float | None:
    return None if value is None else _check_number(value)


Id = Annotated[int | str, PlainValidator(_check_id)]
"""A user or item id: an int (as in the catalog's int64 ids) or non-empty text. The type
is kept: ``1`` and ``"1"`` are different ids."""

_TextId = Annotated[str, PlainValidator(_check_text)]
_OptionalTextId = Annotated[
    str | None, PlainValidator(lambda v: None if v is None else _check_text(v))
]
_Number = Annotated[float, PlainValidator(_check_number)]
_OptionalNumber = Annotated[float | None, PlainValidator(_check_optional_number)]


def _check_timestamp(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "has no time zone -- fix: pass a timezone-aware datetime such as "
            "datetime.now(UTC), an ISO string with an offset, or a Unix time in seconds"
        )
    return value.astimezone(UTC)


def _check_context(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        text = canonical_json(value)
    except ValueError:
        raise ValueError(
            "contains NaN or infinity, which JSON cannot hold -- fix: replace them (e.g. with None)"
        ) from None
    size = len(text.encode())
    if size > MAX_CONTEXT_BYTES:
        raise ValueError(
            f"is {size} bytes as JSON, at most {MAX_CONTEXT_BYTES} are allowed -- fix: "
            "keep large payloads elsewhere and store a reference"
        )
    return value


class _Record(Settings):
    """Frozen, closed model whose validation errors are :class:`InvalidFeedbackError`."""

    _what: ClassVar[str] = "record"
    _id_field: ClassVar[str] = ""
    _fixes: ClassVar[dict[str, str]] = {}

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self._invalid(exc, data) from None

    @classmethod
    def parse(cls, data: Self | Mapping[str, Any]) -> Self:
        """Validate a mapping (a JSON object, a request body) into this model.

        Args:
            data: The fields, or an instance (returned as is).

        Raises:
            InvalidFeedbackError: A field is missing, unknown or invalid; names each.
        """
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise InvalidFeedbackError(
                cls._what,
                [
                    FieldIssue(
                        "(whole record)",
                        data,
                        f"expected a {cls.__name__} or a mapping of its fields, "
                        f"got {type(data).__name__}",
                        f"pass {cls.__name__}(...) or a dict with the fields "
                        + ", ".join(cls.model_fields),
                    )
                ],
            )
        bad_keys = [k for k in data if not isinstance(k, str)]
        if bad_keys:
            raise InvalidFeedbackError(
                cls._what,
                [
                    FieldIssue(repr(k), k, "field names must be text", "use the str field names")
                    for k in bad_keys
                ],
            )
        # The overridden __init__ turns pydantic's errors into InvalidFeedbackError.
        return cls(**data)

    @classmethod
    def _invalid(cls, exc: ValidationError, data: Mapping[str, Any]) -> InvalidFeedbackError:
        ident = data.get(cls._id_field) if isinstance(data, Mapping) else None
        source = f"{cls._what} {ident!r}" if isinstance(ident, str) else cls._what
        return from_validation_error(
            exc, source=source, fields=list(cls.model_fields), fixes=cls._fixes
        )


class _Stamped(_Record):
    """A record with a timezone-aware ``timestamp`` and an optional JSON ``context``
    (the subclass declares both fields)."""

    @field_validator("timestamp", check_fields=False)
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _check_timestamp(value)

    @field_validator("context", check_fields=False)
    @classmethod
    def _json_context(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_context(value)


class FeedbackEvent(_Stamped):
    """One thing a user did with an item, as stored by a feedback store.

    Events are idempotent by ``event_id``: storing the same event again is a no-op,
    storing a different event under a stored id is a
    :class:`~ragrec.feedback.FeedbackConflictError`. A client that retries must
    therefore resend the same id *and* the same timestamp, which is why neither has
    a default.

    Attributes:
        event_id: Unique, stable id chosen by the sender (e.g. ``uuid4().hex``).
        user_id: The user (int or text; the type is kept).
        item_id: The item (int or text; the type is kept).
        kind: What happened.
        value: The rating for ``rating`` events (required, within :data:`RATING_RANGE`);
            an optional finite number for other kinds (a dwell time, a quantity).
        timestamp: When it happened; timezone-aware, stored in UTC to the microsecond.
        rec_id: The id of the recommendation this event answers, if any (see
            :meth:`FeedbackStore.recommendation`).
        context: Optional JSON object (device, query, ...), at most
            :data:`MAX_CONTEXT_BYTES` as JSON.
    """

    _what: ClassVar[str] = "feedback event"
    _id_field: ClassVar[str] = "event_id"
    _fixes: ClassVar[dict[str, str]] = {
        "event_id": "pass a unique, stable text id (e.g. uuid4().hex) and reuse it on retries",
        "user_id": "pass the user's id as an int or a non-empty str",
        "item_id": "pass the item's id as an int or a non-empty str",
        "kind": f"use one of {_KINDS}",
        "value": f"ratings need a number in [{RATING_RANGE[0]}, {RATING_RANGE[1]}]; "
        "other kinds take a finite number or None",
        "timestamp": "pass a timezone-aware datetime, e.g. datetime.now(UTC)",
        "rec_id": "pass the rec_id of the recommendation answered, or None",
        "context": "pass a JSON object: a dict with str keys and JSON values, or None",
    }

    event_id: _TextId
    user_id: Id
    item_id: Id
    kind: EventKind
    # validate_default: a rating without a value must fail, not pass as the default.
    value: _OptionalNumber = Field(default=None, validate_default=True)
    timestamp: datetime
    rec_id: _OptionalTextId = None
    context: dict[str, JsonValue] | None = None

    @field_validator("value")
    @classmethod
    def _value_fits_kind(cls, value: float | None, info: ValidationInfo) -> float | None:
        if info.data.get("kind") is not EventKind.RATING:
            return value
        low, high = RATING_RANGE
        if value is None:
            raise ValueError(
                f"rating events need a value -- fix: pass value=<rating in [{low}, {high}]>"
            )
        if not low <= value <= high:
            raise ValueError(
                f"a rating must be within [{low}, {high}] -- fix: rescale the rating to "
                f"that scale (ragrec does not clamp)"
            )
        return value

    def is_positive(self, *, min_rating: float = DEFAULT_MIN_RATING) -> bool:
        """True for clicks, likes, purchases, and ratings of at least ``min_rating``."""
        if self.kind is EventKind.RATING:
            return self.value is not None and self.value >= min_rating
        return self.kind in POSITIVE_KINDS


class ItemProvenance(_Record):
    """How one retrieval channel proposed a served item (mirrors retrieval's
    ``Provenance``).

    Attributes:
        channel: Channel name (``"semantic"``, ``"collaborative"``, ...).
        rank: 1-based rank of the item within the channel's list.
        score: The channel's score for the item.
    """

    _what: ClassVar[str] = "item provenance"
    _fixes: ClassVar[dict[str, str]] = {
        "channel": "pass the channel's name as a non-empty str",
        "rank": "pass the item's 1-based rank in the channel's list",
        "score": "pass the channel's finite score",
    }

    channel: _TextId
    rank: int = Field(ge=1)
    score: _Number


class ServedItem(_Record):
    """One item of a served recommendation.

    Attributes:
        item_id: The item.
        score: Its final score, if any.
        provenance: Every channel that proposed it.
    """

    _what: ClassVar[str] = "served item"
    _fixes: ClassVar[dict[str, str]] = {
        "item_id": "pass the item's id as an int or a non-empty str",
        "score": "pass a finite number or None",
        "provenance": "pass a list of ItemProvenance(channel=..., rank=..., score=...)",
    }

    item_id: Id
    score: _OptionalNumber = None
    provenance: tuple[ItemProvenance, ...] = ()

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the channels that proposed the item."""
        return tuple(p.channel for p in self.provenance)


def check_weights(weights: Any) -> dict[str, float]:
    """Channel weights as a fresh dict; raises ``ValueError`` with a fix when invalid."""
    if not isinstance(weights, Mapping):
        raise ValueError(
            f"must be a mapping of channel name to weight, got {type(weights).__name__} "
            "-- fix: pass e.g. {'semantic': 1.0, 'popularity': 0.2}"
        )
    checked: dict[str, float] = {}
    for name, weight in weights.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"channel name {name!r} is not a non-empty str -- fix: name channels as "
                "retrieval does ('semantic', 'collaborative', 'popularity')"
            )
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValueError(
                f"weight of {name!r} is {weight!r}, not a number -- fix: pass a float >= 0"
            )
        number = float(weight)
        if not math.isfinite(number) or number < 0:
            raise ValueError(
                f"weight of {name!r} is {number!r}; weights must be finite and >= 0 -- fix: "
                "pass 0 to switch a channel off, never a negative or NaN weight"
            )
        checked[name] = number
    return checked


class RecommendationRecord(_Stamped):
    """A recommendation as served, kept so later events can be credited to the channels
    that proposed the item (idempotent by ``rec_id``, like events).

    Attributes:
        rec_id: Unique id of the recommendation (events refer to it).
        user_id: The user it was served to.
        items: The served items, best first (item ids unique).
        weights: The channel weights used for this user.
        prompt_hash: Hash of the rendered prompt, if an LLM ranked the items.
        model: The model (and backend) that ranked them, if any.
        timestamp: When it was served; timezone-aware, stored in UTC.
        context: Optional JSON object (query text, timings, ...).
    """

    _what: ClassVar[str] = "recommendation"
    _id_field: ClassVar[str] = "rec_id"
    _fixes: ClassVar[dict[str, str]] = {
        "rec_id": "pass a unique, stable text id (e.g. uuid4().hex) and reuse it on retries",
        "user_id": "pass the user's id as an int or a non-empty str",
        "items": "pass a list of ServedItem(item_id=..., score=..., provenance=...)",
        "weights": "pass a mapping of channel name to a finite weight >= 0",
        "prompt_hash": "pass the prompt's hash as a str, or None",
        "model": "pass the model's name as a str, or None",
        "timestamp": "pass a timezone-aware datetime, e.g. datetime.now(UTC)",
        "context": "pass a JSON object: a dict with str keys and JSON values, or None",
        **ItemProvenance._fixes,
        "item_id": ServedItem._fixes["item_id"],
        "score": "pass a finite number (or None for an item's final score)",
        "provenance": ServedItem._fixes["provenance"],
    }

    rec_id: _TextId
    user_id: Id
    items: tuple[ServedItem, ...]
    weights: dict[str, float] = Field(default_factory=dict)
    prompt_hash: _OptionalTextId = None
    model: _OptionalTextId = None
    timestamp: datetime
    context: dict[str, JsonValue] | None = None

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> dict[str, float]:
        return check_weights(value)

    @field_validator("items")
    @classmethod
    def _unique_items(cls, items: tuple[ServedItem, ...]) -> tuple[ServedItem, ...]:
        seen: set[tuple[type, int | str]] = set()
        for item in items:
            key = (type(item.item_id), item.item_id)
            if key in seen:
                raise ValueError(
                    f"item {item.item_id!r} is served twice -- fix: list each item once, "
                    "with every channel that proposed it in its provenance"
                )
            seen.add(key)
        return items

    def item(self, item_id: int | str) -> ServedItem | None:
        """The served item with this id, or ``None`` when it was not served."""
        for item in self.items:
            if item.item_id == item_id and type(item.item_id) is type(item_id):
                return item
        return None

    def channels_for(self, item_id: int | str) -> tuple[str, ...]:
        """The channels that proposed ``item_id`` (empty when it was not served)."""
        item = self.item(item_id)
        return item.channels if item is not None else ()
