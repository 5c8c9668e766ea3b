"""Feedback: the durable event store the learners read.

Events (impression, click, like, dislike, rating, skip, purchase) are validated
:class:`FeedbackEvent` records, stored idempotently by id and committed before
:meth:`FeedbackStore.add` returns. The store also keeps the recommendations served
(with the channels that proposed each item, so feedback can be credited to them),
per-user and global channel weights, and per-user profile values, and forgets a user
on request.

Backends: SQLite (one file in the store directory; the default) and PostgreSQL (a
URL; needs ``psycopg``). :func:`open_store` picks one from the location::

    from datetime import UTC, datetime
    from ragrec.feedback import FeedbackEvent, open_store

    with open_store("my-store") as store:  # my-store/feedback.sqlite
        store.add(FeedbackEvent(event_id="e1", user_id=1, item_id=318, kind="like",
                                timestamp=datetime.now(UTC)))
        store.history(1)
"""

from ragrec.feedback._errors import (
    FeedbackConflictError,
    FeedbackStoreError,
    FieldIssue,
    InvalidFeedbackError,
    StoreVersionError,
)
from ragrec.feedback._factory import DEFAULT_DB_NAME, open_store
from ragrec.feedback._learners import (
    ChannelCredit,
    WeightLearner,
    WeightLearnerConfig,
    event_reward,
)
from ragrec.feedback._loop import (
    NEGATIVE_KINDS,
    FeedbackLearner,
    FeedbackOutcome,
    LearningConfig,
    Profile,
    check_events,
    parse_event,
)
from ragrec.feedback._models import (
    DEFAULT_MIN_RATING,
    MAX_CONTEXT_BYTES,
    MAX_ID_LENGTH,
    POSITIVE_KINDS,
    RATING_RANGE,
    EventKind,
    FeedbackEvent,
    ItemProvenance,
    RecommendationRecord,
    ServedItem,
)
from ragrec.feedback._postgres import PostgresFeedbackStore
from ragrec.feedback._sql_rows import SCHEMA_VERSION, TABLES
from ragrec.feedback._sqlite import SQLiteFeedbackStore
from ragrec.feedback._store import FeedbackStore

__all__ = [
    "DEFAULT_DB_NAME",
    "DEFAULT_MIN_RATING",
    "MAX_CONTEXT_BYTES",
    "MAX_ID_LENGTH",
    "NEGATIVE_KINDS",
    "POSITIVE_KINDS",
    "RATING_RANGE",
    "SCHEMA_VERSION",
    "TABLES",
    "ChannelCredit",
    "EventKind",
    "FeedbackConflictError",
    "FeedbackEvent",
    "FeedbackLearner",
    "FeedbackOutcome",
    "FeedbackStore",
    "FeedbackStoreError",
    "FieldIssue",
    "InvalidFeedbackError",
    "ItemProvenance",
    "LearningConfig",
    "PostgresFeedbackStore",
    "Profile",
    "RecommendationRecord",
    "SQLiteFeedbackStore",
    "ServedItem",
    "StoreVersionError",
    "WeightLearner",
    "WeightLearnerConfig",
    "check_events",
    "event_reward",
    "open_store",
    "parse_event",
]
