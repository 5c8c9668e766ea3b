"""Objects that retrieval hands to the stages after it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Candidate", "CandidateList", "ChannelCandidates", "Provenance", "RetrievalQuery"]


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
    """How one channel ranked a candidate (1-based rank within the channel)."""

    channel: str
    rank: int
    score: float


@dataclass(frozen=True)
class Candidate:
    """A fused candidate with its provenance.

    Attributes:
        item_id: Catalog item id.
        position: Catalog position.
        title: Item title.
        score: Fused score.
        provenance: Every channel that proposed it.
    """

    item_id: Any
    position: int
    title: str
    score: float
    provenance: tuple[Provenance, ...]

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
