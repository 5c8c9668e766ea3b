"""The feedback store protocol that every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from pydantic import JsonValue

from ragrec.feedback._models import (
    DEFAULT_MIN_RATING,
    EventKind,
    FeedbackEvent,
    RecommendationRecord,
)

__all__ = ["FeedbackStore"]


class FeedbackStore(ABC):
    """Durable storage of feedback events and of what the learners need.

    Every write is one transaction, committed before the method returns; a write that
    raises leaves the store as it was. Events and recommendations are idempotent by
    id. A store may be used from several threads at once, and several processes may
    open the same location.

    Use it as a context manager, or call :meth:`close`.
    """

    #: Backend name, ``"sqlite"`` or ``"postgresql"``.
    backend: str

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lives: a file path, or a URL with the password hidden."""

    @property
    @abstractmethod
    def schema_version(self) -> int:
        """Schema version of the opened store."""

    # events
    @abstractmethod
    def add(self, event: FeedbackEvent | Mapping[str, Any]) -> bool:
        """Store one event, durably, before returning.

        Args:
            event: The event, or a mapping of its fields (validated).

        Returns:
            True when stored now; False when this exact event was already stored.

        Raises:
            InvalidFeedbackError: The event is malformed (names field, value, fix).
            FeedbackConflictError: Its ``event_id`` is stored with different content.
        """

    @abstractmethod
    def add_many(self, events: Iterable[FeedbackEvent | Mapping[str, Any]]) -> int:
        """Store several events in one transaction: all of them or, on any error, none.

        Args:
            events: Events or mappings of their fields; repeated identical events are
                stored once.

        Returns:
            How many were stored now (those already stored are not counted).

        Raises:
            InvalidFeedbackError: An event is malformed; nothing is written.
            FeedbackConflictError: An ``event_id`` is stored (or repeated in the batch)
                with different content; nothing is written.
        """

    @abstractmethod
    def add_each(self, events: Iterable[FeedbackEvent | Mapping[str, Any]]) -> list[bool]:
        """:meth:`add_many`, telling for each event whether it was stored now.

        Args:
            events: Events or mappings of their fields.

        Returns:
            Per event, in order: True when stored by this call; False when it was already
            stored (earlier, or earlier in the same batch).

        Raises:
            InvalidFeedbackError: An event is malformed; nothing is written.
            FeedbackConflictError: An ``event_id`` is stored (or repeated in the batch)
                with different content; nothing is written.
        """

    @abstractmethod
    def event(self, event_id: str) -> FeedbackEvent | None:
        """The stored event with this id, or ``None``."""

    @abstractmethod
    def events(
        self,
        user_id: int | str | None = None,
        *,
        kinds: Iterable[EventKind | str] | None = None,
        since: datetime | None = None,
    ) -> list[FeedbackEvent]:
        """Stored events, oldest first (ties in the order they were stored).

        Args:
            user_id: Only this user's events (``None``: every user's).
            kinds: Only these kinds (``None``: all).
            since: Only events at or after this timezone-aware time.
        """

    @abstractmethod
    def count(self) -> int:
        """Number of stored events."""

    @abstractmethod
    def users(self) -> list[int | str]:
        """Users with at least one event: int ids ascending, then text ids ascending."""

    @abstractmethod
    def history(
        self, user_id: int | str, *, min_rating: float = DEFAULT_MIN_RATING
    ) -> list[FeedbackEvent]:
        """The user's positive events, oldest first: clicks, likes, purchases and ratings
        of at least ``min_rating`` (see :meth:`FeedbackEvent.is_positive`)."""

    # recommendations
    @abstractmethod
    def log_recommendation(
        self, record: RecommendationRecord | Mapping[str, Any] | None = None, /, **fields: Any
    ) -> bool:
        """Store a served recommendation with its provenance, durably.

        Args:
            record: The record, or a mapping of its fields.
            **fields: Instead of ``record``: the fields of a
                :class:`RecommendationRecord` as keywords (``rec_id``, ``user_id``,
                ``items``, ``weights``, ``prompt_hash``, ``model``, ``timestamp``,
                ``context``).

        Returns:
            True when stored now; False when this exact record was already stored.

        Raises:
            InvalidFeedbackError: The record is malformed.
            FeedbackConflictError: Its ``rec_id`` is stored with different content.
        """

    @abstractmethod
    def recommendation(self, rec_id: str) -> RecommendationRecord | None:
        """The recommendation logged under ``rec_id``, or ``None``."""

    @abstractmethod
    def recommendations(
        self, user_id: int | str | None = None, *, since: datetime | None = None
    ) -> list[RecommendationRecord]:
        """Logged recommendations, oldest first, optionally for one user or from a time."""

    # channel weights and profiles
    @abstractmethod
    def get_weights(self, user_id: int | str | None) -> dict[str, float]:
        """Channel weights of a user, or the global prior for ``None``.

        Returns an empty dict when none were set; the caller decides the fallback
        (typically: the user's weights over the global prior over the config's).
        """

    @abstractmethod
    def set_weights(self, user_id: int | str | None, weights: Mapping[str, float]) -> None:
        """Replace the channel weights of a user (``None``: the global prior).

        Args:
            user_id: The user, or ``None`` for the global prior.
            weights: Channel name -> finite weight >= 0. An empty mapping clears them.

        Raises:
            InvalidFeedbackError: A name or weight is invalid; nothing is written.
        """

    @abstractmethod
    def profile(self, user_id: int | str) -> dict[str, JsonValue]:
        """The user's profile: key -> JSON value (empty when none)."""

    @abstractmethod
    def update_profile(self, user_id: int | str, values: Mapping[str, JsonValue]) -> None:
        """Set profile keys of a user in one transaction; a value of ``None`` deletes
        its key (as in a JSON merge patch)."""

    # privacy
    @abstractmethod
    def forget_user(self, user_id: int | str) -> dict[str, int]:
        """Delete everything stored about a user in one transaction.

        Returns:
            Rows deleted per table: ``events``, ``recommendations``, ``user_weights``,
            ``profiles``.
        """

    @abstractmethod
    def close(self) -> None:
        """Close every connection. Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"
