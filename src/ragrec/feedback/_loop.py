"""What feedback changes: channel weights (credited to the channels that proposed the
item), the user's profile (liked items join the history, disliked ones are blocked) and
the few-shot exemplar pool. The store is the durable record; :meth:`FeedbackLearner.replay`
rebuilds this state from it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import Field

from ragrec._settings import Settings
from ragrec.data import Catalog
from ragrec.feedback._errors import FieldIssue, InvalidFeedbackError
from ragrec.feedback._learners import (
    ChannelCredit,
    WeightLearner,
    WeightLearnerConfig,
    event_reward,
)
from ragrec.feedback._models import FeedbackEvent, RecommendationRecord
from ragrec.feedback._store import FeedbackStore
from ragrec.prompting import Exemplar, ExemplarPool
from ragrec.retrieval import ChannelWeights, Filters, RetrievalQuery

__all__ = [
    "NEGATIVE_KINDS",
    "FeedbackLearner",
    "FeedbackOutcome",
    "LearningConfig",
    "Profile",
    "check_events",
    "parse_event",
]

NEGATIVE_KINDS = frozenset({"dislike"})


class LearningConfig(Settings):
    """What feedback changes."""

    weights: WeightLearnerConfig = Field(default_factory=WeightLearnerConfig)
    exemplars: bool = Field(
        default=True,
        description="Liked or chosen recommendations become few-shot exemplars; disliked "
        "ones are removed.",
    )
    profile: bool = Field(
        default=True,
        description="Positive events join the user's history at once (so the next request "
        "reflects them); disliked items are not recommended to the user again.",
    )
    rating_positive: float = Field(
        default=4.0, description="A rating at or above this is a positive event."
    )


@dataclass(frozen=True)
class FeedbackOutcome:
    """What one feedback event did.

    Attributes:
        stored: False when the event id was stored before (it is learnt from once).
        event_id: The event's id.
        weights: The user's channel weights after the event.
        reward: The event's reward (None for a repeat).
        exemplar: Id of the exemplar the event added or removed, if any.
    """

    stored: bool
    event_id: str
    weights: Mapping[str, float]
    reward: float | None = None
    exemplar: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``reward`` and ``exemplar`` only when set)."""
        out: dict[str, Any] = {
            "stored": self.stored,
            "event_id": self.event_id,
            "weights": dict(self.weights),
        }
        if self.reward is not None:
            out["reward"] = self.reward
        if self.exemplar is not None:
            out["exemplar"] = self.exemplar
        return out


@dataclass
class Profile:
    """What feedback changed in a user's state since the build (the latest event about
    an item wins: a like after a dislike unblocks it, a dislike after a like removes it
    from the history)."""

    added: list[int] = field(default_factory=list)  # catalog positions, in event order
    blocked: set[int] = field(default_factory=set)

    def apply(self, position: int, *, positive: bool, negative: bool) -> None:
        if positive:
            if position not in self.added:
                self.added.append(position)
            self.blocked.discard(position)
        if negative:
            self.blocked.add(position)
            if position in self.added:
                self.added.remove(position)

    def extend(self, query: RetrievalQuery) -> RetrievalQuery:
        """``query`` with the liked items after its history (those not in it already)."""
        if not self.added:
            return query
        seen = set(query.history.tolist())
        added = np.asarray([p for p in self.added if p not in seen], dtype=np.int64)
        if not len(added):
            return query
        ratings = None
        if query.ratings is not None:
            # A liked item counts like the user's best-rated one. Never NaN: channels
            # centre ratings on their mean, and one NaN silences them for the user.
            known = query.ratings[np.isfinite(query.ratings)]
            fill = float(known.max()) if len(known) else 1.0
            ratings = np.concatenate([query.ratings, np.full(len(added), fill)])
        history = np.concatenate([query.history, added])
        return RetrievalQuery(query.user_id, history, ratings, query.text)

    def moved(self, old: Catalog, new: Catalog) -> Profile:
        """This profile over another catalog (items no longer in it dropped)."""
        added = new.positions([old.item_ids[p] for p in self.added])
        blocked = new.positions([old.item_ids[p] for p in self.blocked])
        return Profile([int(p) for p in added if p >= 0], {int(p) for p in blocked if p >= 0})


def parse_event(data: Mapping[str, Any]) -> FeedbackEvent:
    """An event from a mapping; ``event_id`` and ``timestamp`` default to a new uuid and
    now (pass both when a client may retry, so the retry is recognised)."""
    if not isinstance(data, Mapping):
        return FeedbackEvent.parse(data)  # raises, naming what was received
    fields = dict(data)
    fields.setdefault("event_id", uuid.uuid4().hex)
    fields.setdefault("timestamp", datetime.now(UTC))
    return FeedbackEvent.parse(fields)


def check_events(
    events: Iterable[FeedbackEvent | Mapping[str, Any]],
    catalog: Catalog,
    *,
    batch: str | None = "feedback batch",
) -> list[FeedbackEvent]:
    """Parse events and check that their items are in ``catalog``.

    Args:
        events: Events or their mapping form (:func:`parse_event`).
        catalog: The items events may name.
        batch: What the error calls the batch; every issue is then named with the
            event's position (``2.item_id``). None: a single event, named by its id.

    Raises:
        InvalidFeedbackError: Every malformed field and unknown item, named.
    """
    single = batch is None
    parsed: list[FeedbackEvent] = []
    issues: list[FieldIssue] = []
    for index, event in enumerate(events):
        if isinstance(event, FeedbackEvent):
            parsed.append(event)
        elif single:
            parsed.append(parse_event(event))  # raises with the event's own fields
        else:
            try:
                parsed.append(parse_event(event))
            except InvalidFeedbackError as exc:
                issues.extend(
                    FieldIssue(f"{index}.{i.field}", i.value, i.why, i.fix) for i in exc.issues
                )
    if parsed and not issues:
        missing = catalog.positions([ev.item_id for ev in parsed]) < 0
        issues.extend(
            FieldIssue(
                "item_id" if single else f"{index}.item_id",
                parsed[index].item_id,
                f"not in the catalog ({len(catalog)} items)",
                "send events for catalog items, or add_items() first",
            )
            for index in np.flatnonzero(missing).tolist()
        )
    if issues:
        where = f"feedback event {parsed[0].event_id!r}" if single else str(batch)
        raise InvalidFeedbackError(where, issues)
    return parsed


class FeedbackLearner:
    """Turns stored events into channel weights, profiles and exemplars.

    Args:
        config: What feedback changes.
        pool: The exemplar pool that liked recommendations join.
        max_history: History items an exemplar keeps.
    """

    def __init__(self, config: LearningConfig, pool: ExemplarPool, *, max_history: int) -> None:
        self.pool = pool
        self.max_history = max_history
        self.weight_learner = WeightLearner(config.weights)
        self.config = config
        self.profiles: dict[Any, Profile] = {}

    @property
    def config(self) -> LearningConfig:
        """What feedback changes (setting it applies to the next event)."""
        return self._config

    @config.setter
    def config(self, config: LearningConfig) -> None:
        self._config = config
        self.weight_learner.config = config.weights

    def filters(self, user_id: Any, filters: Filters, catalog: Catalog) -> Filters:
        """``filters`` that also exclude the items the user disliked."""
        profile = self.profiles.get(user_id)
        blocked = [catalog.item_ids[p] for p in profile.blocked] if profile else []
        if not blocked:
            return filters
        return filters.model_copy(update={"exclude_ids": [*filters.exclude_ids, *blocked]})

    def is_positive(self, event: FeedbackEvent) -> bool:
        return event.is_positive(min_rating=self.config.rating_positive)

    def learn(
        self,
        event: FeedbackEvent,
        store: FeedbackStore,
        catalog: Catalog,
        weights: ChannelWeights,
    ) -> tuple[ChannelWeights, FeedbackOutcome]:
        """React to a newly stored event (its item is in ``catalog``).

        Returns:
            The channel weights after it, and what it did.
        """
        kind = str(event.kind)
        reward = event_reward(kind, event.value)
        positive = self.is_positive(event)
        negative = kind in NEGATIVE_KINDS
        rec = store.recommendation(event.rec_id) if event.rec_id else None
        if rec is not None and rec.user_id != event.user_id:
            rec = None  # an event cannot credit another user's recommendation
        if rec is not None and reward != 0.0:
            served = rec.item(event.item_id)
            proposers = (
                [ChannelCredit(p.channel, p.rank) for p in served.provenance] if served else []
            )
            if proposers:
                weights = self.weight_learner.update(weights, event.user_id, proposers, reward)
                store.set_weights(event.user_id, weights.for_user(event.user_id))
                store.set_weights(None, weights.for_user(None))
        pos = int(catalog.positions([event.item_id])[0])
        if self.config.profile and (positive or negative):
            self.profiles.setdefault(event.user_id, Profile()).apply(
                pos, positive=positive, negative=negative
            )
        exemplar = None
        if self.config.exemplars and rec is not None and (positive or negative):
            exemplar = self.curate(event, rec, catalog, positive=positive)
        outcome = FeedbackOutcome(
            True, event.event_id, weights.for_user(event.user_id), reward, exemplar
        )
        return weights, outcome

    def curate(
        self,
        event: FeedbackEvent,
        rec: RecommendationRecord,
        catalog: Catalog,
        *,
        positive: bool,
    ) -> str | None:
        """Add the liked recommendation's prompt as an exemplar, or remove the exemplars
        of a disliked one; returns the id added or (first) removed."""
        context: Mapping[str, Any] = rec.context or {}
        cand_ids = list(context.get("candidate_ids") or [])
        labels = list(context.get("labels") or [])
        if event.item_id not in cand_ids or not labels:
            return None
        hist_ids = list(context.get("history_ids") or [])
        known = list(dict.fromkeys([*hist_ids, *cand_ids]))
        positions = catalog.positions(known) if known else np.empty(0, np.int64)
        titles = {
            i: str(catalog.titles[p])
            for i, p in zip(known, positions.tolist(), strict=True)
            if p >= 0
        }
        if any(i not in titles for i in cand_ids):
            return None  # a candidate left the catalog since: the exemplar would lie
        kept = [i for i in hist_ids if i in titles][-self.max_history :]
        exemplar = Exemplar(
            user_id=event.user_id,
            history=tuple(titles[i] for i in kept),
            candidates=tuple(titles[i] for i in cand_ids),
            label=labels[cand_ids.index(event.item_id)],
            source="feedback",
            history_ids=tuple(kept),
            candidate_ids=tuple(cand_ids),
        )
        if positive:
            self.pool.add(exemplar)
            return exemplar.id
        removed = [
            e.id
            for e in self.pool
            if e.user_id == event.user_id and e.candidate_ids == exemplar.candidate_ids
        ]
        for eid in removed:
            self.pool.remove(eid)
        return removed[0] if removed else None

    def replay(
        self, store: FeedbackStore, catalog: Catalog, weights: ChannelWeights
    ) -> ChannelWeights:
        """Rebuild profiles and channel weights from the store (after a load); returns the
        weights.

        The store is the durable record: every event is committed before it is learnt
        from, and so are the weights it moved, while a store's ``weights.json`` is written
        only on save; the store's weights therefore win over the file's.
        """
        channels = set(weights.for_user(None))
        prior = {c: w for c, w in store.get_weights(None).items() if c in channels}
        if prior:
            weights = weights.with_global({**weights.for_user(None), **prior})
        for user in store.users():
            own = {c: w for c, w in store.get_weights(user).items() if c in channels}
            if own:
                weights = weights.with_user(user, own)
            if not self.config.profile:
                continue
            profile = Profile()
            for event in store.events(user):
                pos = int(catalog.positions([event.item_id])[0])
                if pos < 0:
                    continue  # item removed since
                profile.apply(
                    pos,
                    positive=self.is_positive(event),
                    negative=str(event.kind) in NEGATIVE_KINDS,
                )
            if profile.added or profile.blocked:
                self.profiles[user] = profile
        return weights

    def move(self, old: Catalog, new: Catalog) -> None:
        """Carry the profiles over to a changed catalog."""
        self.profiles = {u: p.moved(old, new) for u, p in self.profiles.items()}
