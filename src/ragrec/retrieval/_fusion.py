"""Channel weights, fusion of channel candidate lists, and business filters."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ragrec._settings import Settings
from ragrec.data import Catalog
from ragrec.errors import ConfigError
from ragrec.retrieval._types import Candidate, ChannelCandidates, Provenance

__all__ = ["ChannelWeights", "Filters", "FusionConfig", "blocked_positions", "fuse"]


class FusionConfig(Settings):
    """How channel lists are combined."""

    method: Literal["score", "rrf"] = Field(
        default="score",
        description="score: weighted sum of per-list min-max normalised scores; rrf: "
        "weighted reciprocal-rank fusion, sum of w / (rrf_k + rank).",
    )
    rrf_k: float = Field(default=60.0, gt=0, description="RRF rank offset.")
    depth: int = Field(default=200, ge=1, description="Candidates taken from each channel.")


def _user_key(user_id: Any) -> str:
    value = user_id.item() if isinstance(user_id, np.generic) else user_id
    return json.dumps(value)


@dataclass(frozen=True)
class ChannelWeights:
    """Channel weights: a global prior and optional per-user values. Immutable; the
    feedback learners return updated copies.

    Attributes:
        global_weights: Weight per channel name.
        per_user: Per user (JSON-encoded id), weights that replace the global ones for
            the channels they name.
    """

    global_weights: Mapping[str, float]
    per_user: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, w in self.global_weights.items():
            if not np.isfinite(w) or w < 0:
                raise ConfigError(f"channel weight {name}={w} must be a finite number >= 0")
        for user, weights in self.per_user.items():
            for name, w in weights.items():
                if not np.isfinite(w) or w < 0:
                    raise ConfigError(
                        f"channel weight {name}={w} for user {user} must be a finite number >= 0"
                    )
        object.__setattr__(self, "global_weights", MappingProxyType(dict(self.global_weights)))
        object.__setattr__(
            self,
            "per_user",
            MappingProxyType({k: MappingProxyType(dict(v)) for k, v in self.per_user.items()}),
        )

    def for_user(self, user_id: Any) -> dict[str, float]:
        """The weights that apply to one user."""
        weights = dict(self.global_weights)
        weights.update(self.per_user.get(_user_key(user_id), {}))
        return weights

    def with_user(self, user_id: Any, weights: Mapping[str, float]) -> ChannelWeights:
        """A copy with this user's weights set."""
        per_user = {k: dict(v) for k, v in self.per_user.items()}
        per_user[_user_key(user_id)] = dict(weights)
        return ChannelWeights(dict(self.global_weights), per_user)

    def with_global(self, weights: Mapping[str, float]) -> ChannelWeights:
        """A copy with new global weights."""
        return ChannelWeights(dict(weights), {k: dict(v) for k, v in self.per_user.items()})

    def without_user(self, user_id: Any) -> ChannelWeights:
        """A copy without this user's weights."""
        key = _user_key(user_id)
        return ChannelWeights(
            dict(self.global_weights),
            {k: dict(v) for k, v in self.per_user.items() if k != key},
        )

    def to_json(self) -> str:
        """Serialise (see :meth:`from_json`)."""
        return json.dumps(
            {
                "global": dict(self.global_weights),
                "per_user": {k: dict(v) for k, v in self.per_user.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ChannelWeights:
        """Read weights written by :meth:`to_json`."""
        try:
            raw = json.loads(text)
            return cls(raw["global"], raw.get("per_user", {}))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"channel weights: not valid weights JSON ({exc})") from exc


def fuse(
    lists: Sequence[ChannelCandidates],
    weights: Mapping[str, float],
    config: FusionConfig,
    catalog: Catalog,
    k: int,
) -> tuple[Candidate, ...]:
    """Combine channel lists into ``k`` candidates with provenance.

    Ties in the fused score are broken by the best single-channel rank, then by catalog
    position, so the order is deterministic.
    """
    total: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    prov: dict[int, list[Provenance]] = {}
    for lst in lists:
        w = float(weights.get(lst.channel, 0.0))
        if len(lst) == 0:
            continue
        scores = lst.scores
        if config.method == "score":
            lo, hi = float(scores.min()), float(scores.max())
            if hi > lo:
                norm = np.asarray((scores - lo) / (hi - lo), dtype=np.float64)
            else:  # one value throughout: full credit if positive, none if it is no evidence
                norm = np.full_like(scores, 1.0 if hi > 0 else 0.0)
        else:
            norm = np.asarray(1.0 / (config.rrf_k + np.arange(1, len(scores) + 1)), np.float64)
        for rank, (pos, s, ns) in enumerate(
            zip(lst.positions.tolist(), scores.tolist(), norm.tolist(), strict=True), start=1
        ):
            total[pos] = total.get(pos, 0.0) + w * ns
            best_rank[pos] = min(best_rank.get(pos, rank), rank)
            prov.setdefault(pos, []).append(Provenance(lst.channel, rank, float(s), w * ns))
    order = sorted(total, key=lambda p: (-total[p], best_rank[p], p))[:k]
    return tuple(
        Candidate(
            item_id=catalog.item_ids[p].item()
            if isinstance(catalog.item_ids[p], np.generic)
            else catalog.item_ids[p],
            position=p,
            title=str(catalog.titles[p]),
            score=total[p],
            provenance=tuple(prov[p]),
        )
        for p in order
    )


class Filters(Settings):
    """Business filters applied before fusion (so the list is refilled to N)."""

    exclude_seen: bool = Field(default=True, description="Drop items in the user's history.")
    include_ids: list[Any] | None = Field(
        default=None, description="Only these item ids may be recommended."
    )
    exclude_ids: list[Any] = Field(default_factory=list, description="Never these item ids.")
    genres_any: list[str] | None = Field(
        default=None, description="Keep items with at least one of these genres."
    )
    genres_none: list[str] = Field(
        default_factory=list, description="Drop items with any of these genres."
    )
    year_min: float | None = Field(default=None, description="Keep items from this year on.")
    year_max: float | None = Field(default=None, description="Keep items up to this year.")


def blocked_positions(catalog: Catalog, filters: Filters, history: np.ndarray) -> np.ndarray:
    """Catalog positions a user must not get under ``filters`` (sorted, unique)."""
    allowed = np.ones(len(catalog), dtype=bool)
    if filters.include_ids is not None:
        allowed[:] = False
        pos = catalog.positions(filters.include_ids)
        allowed[pos[pos >= 0]] = True
    if filters.exclude_ids:
        pos = catalog.positions(filters.exclude_ids)
        allowed[pos[pos >= 0]] = False
    if filters.genres_any is not None or filters.genres_none:
        wanted = {g.lower() for g in filters.genres_any or ()}
        unwanted = {g.lower() for g in filters.genres_none}
        for i, cats in enumerate(catalog.categories):
            lowered = {c.lower() for c in cats}
            if (filters.genres_any is not None and not lowered & wanted) or lowered & unwanted:
                allowed[i] = False
    if filters.year_min is not None or filters.year_max is not None:
        years = catalog.years
        lo = -np.inf if filters.year_min is None else filters.year_min
        hi = np.inf if filters.year_max is None else filters.year_max
        allowed &= (years >= lo) & (years <= hi)
    if filters.exclude_seen and len(history):
        allowed[np.asarray(history, dtype=np.int64)] = False
    return np.flatnonzero(~allowed)
