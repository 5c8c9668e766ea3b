"""Feedback events: validation, idempotent storage, atomic batches, queries; on SQLite and
on a real PostgreSQL server."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from ragrec.errors import ConfigError, DataValidationError, RagrecError
from ragrec.feedback import (
    EventKind,
    FeedbackConflictError,
    FeedbackEvent,
    FeedbackStore,
    InvalidFeedbackError,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event(event_id: str = "e1", **overrides: Any) -> dict[str, Any]:
    """The fields of a valid like, with overrides."""
    fields: dict[str, Any] = {
        "event_id": event_id,
        "user_id": "alice",
        "item_id": 318,
        "kind": "like",
        "timestamp": T0,
    }
    fields.update(overrides)
    return fields


# -- the model --------------------------------------------------------------------------


def test_event_normalises_without_altering_content() -> None:
    ev = FeedbackEvent(
        **event(
            user_id=np.int64(7),
            kind="rating",
            value=4,
            timestamp=datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        )
    )
    assert ev.user_id == 7
    assert type(ev.user_id) is int
    assert ev.kind is EventKind.RATING
    assert ev.value == 4.0
    assert ev.timestamp == T0
    assert ev.timestamp.tzinfo is UTC
    with pytest.raises(ValueError, match="frozen"):
        ev.item_id = 1  # type: ignore[misc]


def test_unix_time_is_accepted_as_utc() -> None:
    assert FeedbackEvent(**event(timestamp=T0.timestamp())).timestamp == T0


@pytest.mark.parametrize(
    ("kind", "value", "positive"),
    [
        ("click", None, True),
        ("like", None, True),
        ("purchase", 2.0, True),
        ("impression", None, False),
        ("skip", None, False),
        ("dislike", None, False),
        ("rating", 4.0, True),
        ("rating", 3.5, False),
    ],
)
def test_is_positive(kind: str, value: float | None, positive: bool) -> None:
    assert FeedbackEvent(**event(kind=kind, value=value)).is_positive() is positive


# Each malformed field: the error must name the field, show the value and say the fix.
MALFORMED = [
    ("event_id", {"event_id": ""}, ["'event_id'", "''", "empty", "fix:"]),
    ("event_id", {"event_id": 17}, ["'event_id'", "17", "must be text", "uuid4"]),
    ("event_id", {"event_id": "e 1 "}, ["'event_id'", "whitespace", "strip"]),
    ("user_id", {"user_id": True}, ["'user_id'", "True", "boolean", "integer or as text"]),
    ("user_id", {"user_id": None}, ["'user_id'", "None", "ids are integers or text"]),
    ("item_id", {"item_id": 1.5}, ["'item_id'", "1.5", "got float", "pass an int"]),
    ("item_id", {"item_id": "a\x00b"}, ["'item_id'", "control characters", "printable"]),
    ("kind", {"kind": "clik"}, ["'kind'", "'clik'", "use one of impression, click"]),
    (
        "value",
        {"kind": "rating", "value": 9.0},
        ["'value'", "9.0", "within [0.5, 5.0]", "does not clamp"],
    ),
    ("value", {"kind": "rating"}, ["'value'", "rating events need a value", "value=<rating"]),
    ("value", {"kind": "click", "value": math.nan}, ["'value'", "nan", "finite", "not NaN"]),
    ("value", {"value": "4"}, ["'value'", "'4'", "must be a number", "pass a float"]),
    (
        "timestamp",
        {"timestamp": datetime(2024, 5, 1)},
        ["'timestamp'", "datetime.datetime(2024, 5, 1, 0, 0)", "no time zone", "now(UTC)"],
    ),
    ("timestamp", {"timestamp": "yesterday"}, ["'timestamp'", "'yesterday'", "timezone-aware"]),
    ("rec_id", {"rec_id": "  "}, ["'rec_id'", "'  '", "blank", "fix:"]),
    ("context", {"context": ["a"]}, ["'context'", "['a']", "JSON object"]),
    ("context", {"context": {"x": math.inf}}, ["'context'", "inf", "NaN or infinity"]),
    ("context", {"context": {"x": "y" * 70000}}, ["'context'", "bytes", "at most 65536"]),
    ("userid", {"userid": "alice"}, ["'userid'", "unknown field", "remove it", "user_id"]),
]


@pytest.mark.parametrize(("field", "overrides", "expected"), MALFORMED)
def test_malformed_event_is_explained(
    field: str, overrides: dict[str, Any], expected: list[str]
) -> None:
    fields = event(**overrides)
    with pytest.raises(InvalidFeedbackError) as info:
        FeedbackEvent(**fields)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert [i.field for i in info.value.issues] == [field]
    assert isinstance(info.value, DataValidationError | RagrecError)


def test_missing_fields_are_each_named() -> None:
    with pytest.raises(InvalidFeedbackError) as info:
        FeedbackEvent.parse({"event_id": "e1", "kind": "like"})
    assert {i.field for i in info.value.issues} == {"user_id", "item_id", "timestamp"}
    assert "Field required" in str(info.value)


def test_parse_rejects_what_is_not_a_mapping() -> None:
    with pytest.raises(InvalidFeedbackError, match=r"expected a FeedbackEvent or a mapping"):
        FeedbackEvent.parse(["e1", "alice"])  # type: ignore[arg-type]


# -- storing ----------------------------------------------------------------------------


def test_round_trip_keeps_every_field_and_id_type(store: FeedbackStore) -> None:
    sent = [
        FeedbackEvent(**event("a", user_id=1, item_id="318")),
        FeedbackEvent(**event("b", user_id="1", item_id=318, kind="rating", value=0.5)),
        FeedbackEvent(
            **event(
                "c",
                kind="purchase",
                value=-2.25,
                rec_id="r-9",
                context={"query": "funny", "nested": {"list": [1, 2.5, None, True]}},
                timestamp=T0 + timedelta(microseconds=123457),
            )
        ),
    ]
    assert store.add_many(sent) == 3
    assert store.events() == sent
    assert store.events(user_id=1) == [sent[0]]
    assert store.events(user_id="1") == [sent[1]]


def test_repeated_event_is_stored_once(store: FeedbackStore) -> None:
    assert store.add(event("e1")) is True
    assert store.add(event("e1")) is False
    assert store.add(FeedbackEvent(**event("e1"))) is False
    assert store.add_many([event("e1"), event("e2"), event("e2")]) == 1
    assert store.count() == 2


def test_add_each_tells_which_events_are_new(store: FeedbackStore) -> None:
    store.add(event("e1"))
    assert store.add_each([event("e1"), event("e2"), event("e2"), event("e3")]) == [
        False,
        True,
        False,
        True,
    ]
    assert store.add_each([]) == []
    assert store.count() == 3
    # a conflict anywhere in the batch: nothing of it is written
    with pytest.raises(FeedbackConflictError):
        store.add_each([event("e4"), event("e1", item_id=999)])
    assert store.event("e4") is None
    assert store.count() == 3


def test_event_by_id(store: FeedbackStore) -> None:
    sent = FeedbackEvent(**event("e1", user_id="u1", kind="rating", value=4.5))
    store.add(sent)
    assert store.event("e1") == sent
    assert store.event("missing") is None
    with pytest.raises(ConfigError, match="event ids are text"):
        store.event(1)  # type: ignore[arg-type]


def test_conflicting_duplicate_is_rejected_and_stored_event_kept(store: FeedbackStore) -> None:
    store.add(event("e1"))
    with pytest.raises(FeedbackConflictError) as info:
        store.add(event("e1", item_id=999, timestamp=T0 + timedelta(seconds=1)))
    message = str(info.value)
    assert "feedback event 'e1'" in message
    assert "'item_id' stored 318, received 999" in message
    assert "'timestamp'" in message
    assert "same timestamp too" in message
    assert "new event_id" in message
    assert store.events() == [FeedbackEvent(**event("e1"))]


@pytest.mark.parametrize(("field", "overrides", "expected"), MALFORMED)
def test_malformed_event_is_rejected_and_nothing_lost(
    store: FeedbackStore, field: str, overrides: dict[str, Any], expected: list[str]
) -> None:
    kept = [FeedbackEvent(**event("kept-1")), FeedbackEvent(**event("kept-2", kind="skip"))]
    store.add_many(kept)
    with pytest.raises(InvalidFeedbackError) as info:
        store.add({**event("new"), **overrides})
    assert info.value.issues[0].field == field
    assert store.events() == kept


def test_add_many_is_all_or_nothing(store: FeedbackStore) -> None:
    stored = FeedbackEvent(**event("stored"))
    store.add(stored)
    # a malformed event anywhere: nothing of the batch is written
    with pytest.raises(InvalidFeedbackError, match="'kind'"):
        store.add_many([event("n1"), event("n2"), event("n3", kind="wink")])
    # a conflict with a stored event, found after other inserts ran: rolled back
    with pytest.raises(FeedbackConflictError, match="'stored'"):
        store.add_many([event("n1"), event("n2"), event("stored", user_id="bob")])
    # a conflict inside the batch itself
    with pytest.raises(FeedbackConflictError, match="'n1'"):
        store.add_many([event("n1"), event("n1", kind="dislike")])
    assert store.events() == [stored]
    assert store.add_many([]) == 0
    batch: list[FeedbackEvent | dict[str, Any]] = [event("n1"), stored, event("n1")]
    assert store.add_many(iter(batch)) == 1
    assert store.count() == 2


# -- queries ----------------------------------------------------------------------------


def test_queries(store: FeedbackStore) -> None:
    later = T0 + timedelta(hours=1)
    store.add_many(
        [
            event("1", user_id="bob", kind="impression", timestamp=later),
            event("2", user_id="bob", kind="click", timestamp=T0),
            event("3", user_id="bob", kind="rating", value=4.5, timestamp=later),
            event("4", user_id="bob", kind="rating", value=2.0, timestamp=later),
            event("5", user_id="bob", kind="dislike", timestamp=later),
            event("6", user_id="bob", kind="purchase", timestamp=later),
            event("7", user_id=10, kind="like"),
            event("8", user_id=9, kind="skip"),
            event("9", user_id="alice", kind="like"),
        ]
    )
    assert store.count() == 9
    assert store.users() == [9, 10, "alice", "bob"]
    # oldest first; the same time in the order stored
    assert [e.event_id for e in store.events(user_id="bob")] == ["2", "1", "3", "4", "5", "6"]
    assert [e.event_id for e in store.events(kinds=["rating", EventKind.SKIP])] == ["8", "3", "4"]
    assert [e.event_id for e in store.events(kinds="like")] == ["7", "9"]
    assert store.events(kinds=[]) == []
    assert [e.event_id for e in store.events(user_id="bob", since=later)] == [
        "1",
        "3",
        "4",
        "5",
        "6",
    ]
    assert [e.event_id for e in store.history("bob")] == ["2", "3", "6"]
    assert [e.event_id for e in store.history("bob", min_rating=2.0)] == ["2", "3", "4", "6"]
    assert store.history("nobody") == []
    with pytest.raises(ConfigError, match="unknown event kind 'wink'"):
        store.events(kinds=["wink"])
    with pytest.raises(ConfigError, match="timezone-aware"):
        store.events(since=datetime(2024, 1, 1))
    with pytest.raises(ConfigError, match="user_id=True"):
        store.events(user_id=True)
