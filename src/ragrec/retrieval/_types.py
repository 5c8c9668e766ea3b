"""Objects that retrieval hands to the stages after it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Candidate",
    "CandidateList",
    "ChannelCandidates",
    "ChannelShare",
    "Evidence",
    "HistoryEvidence",
    "Provenance",
    "RetrievalQuery",
]


@dataclass(frozen=True)
class RetrievalQuery:
    """What retrieval knows about one request.

    Attributes:
        user_id: The user (``None`` for an anonymous request).
        history: Catalog positions of the user's items, oldest first (may be empty).
        ratings: Values aligned with ``history`` (ratings), or ``None``.
        text: Optional free-text query ("something like Alien but funnier").
    """

    user_id: Any
    history: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ratings: np.ndarray | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", np.asarray(self.history, dtype=np.int64))
        if self.ratings is not None:
            ratings = np.asarray(self.ratings, dtype=np.float64)
            if ratings.shape != self.history.shape:
                raise ValueError(
                    f"ratings has {ratings.shape[0]} values for {self.history.shape[0]} history "
                    "items; pass one rating per history item or None"
                )
            object.__setattr__(self, "ratings", ratings)

    @property
    def cold(self) -> bool:
        """True when the user has no history."""
        return len(self.history) == 0


@dataclass(frozen=True)
class ChannelCandidates:
    """One channel's proposals for one query, best first.

    Attributes:
        channel: Channel name.
        positions: Catalog positions.
        scores: The channel's scores (higher is better), aligned with ``positions``.
    """

    channel: str
    positions: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)


@dataclass(frozen=True)
class Provenance:
    """How one channel ranked a candidate.

    Attributes:
        channel: Channel name.
        rank: 1-based rank within the channel's list.
        score: The channel's own score.
        fused: What this channel added to the candidate's fused score (its weight times
            its normalised score).
    """

    channel: str
    rank: int
    score: float
    fused: float = 0.0


@dataclass(frozen=True)
class ChannelShare:
    """One channel's part of a candidate's fused score.

    Attributes:
        channel: Channel name.
        kind: Channel kind (``transition``, ``ease``, ``semantic``, ``popularity``, ...).
        share: Fraction of the fused score from this channel (the shares sum to 1).
        rank: The candidate's rank in that channel's list.
    """

    channel: str
    kind: str
    share: float
    rank: int


@dataclass(frozen=True)
class HistoryEvidence:
    """A history item that raises a candidate's score.

    Attributes:
        item_id: The history item's catalog id.
        title: Its title.
        share: Fraction of the candidate's fused score credited to it: each channel's
            share split over the history items in proportion to their positive
            contributions to that channel's score.
        channels: The channels through which it contributes, largest first.
    """

    item_id: Any
    title: str
    share: float
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Evidence:
    """Why retrieval proposed a candidate: what explanations are built from.

    Attributes:
        channels: Each proposing channel's share of the fused score, largest first.
        history: History items that raise the score, largest share first (at most
            ``RetrieverConfig.evidence_items``).
        genres: Genres (categories) the item shares with the cited history items.
        decade: The item's decade ("1980s") when a cited history item is from it too.
        query: The free-text request, when the query-aware semantic channel proposed it.
        popularity_rank: The item's rank by popularity among the catalog (1 = most
            interacted with), when the popularity channel proposed it.
    """

    channels: tuple[ChannelShare, ...] = ()
    history: tuple[HistoryEvidence, ...] = ()
    genres: tuple[str, ...] = ()
    decade: str | None = None
    query: str | None = None
    popularity_rank: int | None = None

    @property
    def history_ids(self) -> tuple[Any, ...]:
        """Ids of the cited history items."""
        return tuple(h.item_id for h in self.history)

    @property
    def main_channel(self) -> str | None:
        """The kind of the channel with the largest share."""
        return self.channels[0].kind if self.channels else None


@dataclass(frozen=True)
class Candidate:
    """A fused candidate with its provenance.

    Attributes:
        item_id: Catalog item id.
        position: Catalog position.
        title: Item title.
        score: Fused score.
        provenance: Every channel that proposed it.
        evidence: Why it was proposed (set when retrieval is asked for evidence).
    """

    item_id: Any
    position: int
    title: str
    score: float
    provenance: tuple[Provenance, ...]
    evidence: Evidence | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the channels that proposed this item."""
        return tuple(p.channel for p in self.provenance)


@dataclass(frozen=True)
class CandidateList:
    """The retriever's answer for one query.

    Attributes:
        user_id: The user.
        candidates: Best first.
        weights: Channel weights used for this user.
        cold_start: True when the user had no history (query or popularity candidates).
        channels: Channels that contributed, in configuration order.
        fusion: Fusion method used.
        seconds: Wall time by stage.
    """

    user_id: Any
    candidates: tuple[Candidate, ...]
    weights: Mapping[str, float]
    cold_start: bool
    channels: tuple[str, ...]
    fusion: str
    seconds: Mapping[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.candidates)

    @property
    def positions(self) -> np.ndarray:
        """Catalog positions, best first."""
        return np.array([c.position for c in self.candidates], dtype=np.int64)

    @property
    def item_ids(self) -> list[Any]:
        """Item ids, best first."""
        return [c.item_id for c in self.candidates]

    @property
    def scores(self) -> np.ndarray:
        """Fused scores, best first."""
        return np.array([c.score for c in self.candidates], dtype=np.float64)
