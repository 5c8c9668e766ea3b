"""The channel interface: what channels are fit on, how they propose and score
candidates, and the registry of channel kinds."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions, user_sequences
from ragrec.errors import ConfigError
from ragrec.retrieval._index import IndexConfig, VectorIndex
from ragrec.retrieval._items import ItemEmbeddings
from ragrec.retrieval._types import ChannelCandidates, RetrievalQuery

__all__ = [
    "CHANNELS",
    "CONTRIBUTION_HISTORY",
    "Channel",
    "ChannelConfig",
    "ChannelContext",
    "DenseChannel",
    "channel_kinds",
    "register_channel",
]


class ChannelConfig(Settings):
    """Base of channel configs: closed (unknown keys are errors), immutable."""


@dataclass(frozen=True)
class ChannelContext:
    """What channels are fit on.

    Attributes:
        catalog: The items.
        interactions: Training rows.
        sequences: Per user id, catalog positions in time order (from ``interactions``).
        ratings: Per user id, the values aligned with ``sequences``.
        embeddings: Item vectors and their index, when a channel needs them.
        index_config: How channels that search their own item vectors build the index
            (the retriever's; None: the defaults).
    """

    catalog: Catalog
    interactions: Interactions
    sequences: dict[Any, np.ndarray]
    ratings: dict[Any, np.ndarray]
    embeddings: ItemEmbeddings | None = None
    index_config: IndexConfig | None = None

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        interactions: Interactions,
        embeddings: ItemEmbeddings | None = None,
        *,
        index_config: IndexConfig | None = None,
    ) -> ChannelContext:
        """Index the training rows per user, in (timestamp, item id) order."""
        sequences, ratings = user_sequences(catalog, interactions)
        return cls(catalog, interactions, sequences, ratings, embeddings, index_config)


class Channel(ABC):
    """A source of candidates.

    Subclasses set ``kind`` and ``config_class``, implement :meth:`fit` and
    :meth:`propose`. ``needs_history`` channels are skipped for cold-start users.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type[ChannelConfig]]
    needs_history: ClassVar[bool] = True

    def __init__(self, config: ChannelConfig | None = None, *, name: str | None = None) -> None:
        cfg = config if config is not None else self.config_class()
        if not isinstance(cfg, self.config_class):
            raise ConfigError(
                f"channel {self.kind!r} takes a {self.config_class.__name__}, "
                f"got {type(cfg).__name__}"
            )
        self.config = cfg
        self.name = name or self.kind
        self._n_items = -1

    @abstractmethod
    def fit(self, context: ChannelContext) -> Channel:
        """Learn from the training rows; returns ``self``."""

    @abstractmethod
    def propose(
        self, queries: Sequence[RetrievalQuery], k: int, *, blocked: Sequence[np.ndarray]
    ) -> list[ChannelCandidates]:
        """Up to ``k`` candidates per query, none of them in that query's ``blocked``."""

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Per query, the channel's scores of the given catalog positions (``-inf`` where
        the channel would not propose the item). The default proposes the whole catalog
        and looks the items up; channels override it with a direct computation."""
        self._check_fitted()
        out = []
        for q, pos in zip(queries, positions, strict=True):
            found = self.propose([q], self._n_items, blocked=[np.empty(0, np.int64)])[0]
            by_pos = dict(zip(found.positions.tolist(), found.scores.tolist(), strict=True))
            out.append(np.array([by_pos.get(int(p), -np.inf) for p in pos], dtype=np.float64))
        return out

    def contributions(self, query: RetrievalQuery, positions: np.ndarray) -> np.ndarray:
        """How much each history item adds to this channel's score of each item.

        Returns ``(len(positions), len(query.history))``: entry ``[i, j]`` is the score of
        ``positions[i]`` with the full history minus its score without history item ``j``
        (leave-one-out, over the newest ``CONTRIBUTION_HISTORY`` items; older ones get 0).
        Channels with an additive score override this with the exact terms.
        """
        hist = query.history
        out = np.zeros((len(positions), len(hist)))
        if not len(hist) or not len(positions) or not self.needs_history_evidence:
            return out
        full = self.score_items([query], [positions])[0]
        newest = range(max(0, len(hist) - CONTRIBUTION_HISTORY), len(hist))
        variants = [_without(query, j) for j in newest]
        reduced = self.score_items(variants, [positions] * len(variants))
        for j, scores in zip(newest, reduced, strict=True):
            delta = np.where(np.isfinite(full), full, 0.0) - np.where(
                np.isfinite(scores), scores, 0.0
            )
            out[:, j] = delta
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The fitted arrays :meth:`load_state` restores, saved with a store so that
        loading it does not fit again. Empty: nothing to save (the channel is refit when
        the store loads)."""
        return {}

    def load_state(self, context: ChannelContext, state: Mapping[str, np.ndarray]) -> Channel:
        """Restore what :meth:`state` returned for the same catalog and training rows as
        ``context``; returns ``self``. The default fits again."""
        return self.fit(context)

    def _check_fitted(self) -> None:
        if self._n_items < 0:
            raise ConfigError(f"channel {self.name!r} used before fit(); call fit first")

    @property
    def needs_history_evidence(self) -> bool:
        """Whether history items can explain this channel's scores (popularity: no)."""
        return self.needs_history


CONTRIBUTION_HISTORY = 12
"""History items (the newest) whose leave-one-out contribution the default
:meth:`Channel.contributions` computes."""


def _without(query: RetrievalQuery, j: int) -> RetrievalQuery:
    keep = np.arange(len(query.history)) != j
    ratings = query.ratings[keep] if query.ratings is not None else None
    return RetrievalQuery(query.user_id, query.history[keep], ratings, query.text)


def _require_state(channel: Channel, state: Mapping[str, np.ndarray], *names: str) -> None:
    missing = [n for n in names if n not in state]
    if missing:
        raise ConfigError(
            f"channel {channel.name!r}: saved state lacks {missing}; rebuild the store "
            "(ragrec index --force) or refit the retriever"
        )


def _top_k(
    name: str, scores: np.ndarray, k: int, blocked: Sequence[np.ndarray]
) -> list[ChannelCandidates]:
    out = []
    for row, block in zip(scores, blocked, strict=True):
        row = row.copy()
        row[block] = -np.inf
        kk = min(k, int(np.isfinite(row).sum()))
        if kk <= 0:
            out.append(ChannelCandidates(name, np.empty(0, np.int64), np.empty(0)))
            continue
        top = np.argpartition(-row, kk - 1)[:kk]
        top = top[np.lexsort((top, -row[top]))]
        out.append(ChannelCandidates(name, top.astype(np.int64), row[top].astype(np.float64)))
    return out


def _index_candidates(
    name: str,
    index: VectorIndex,
    catalog: Catalog,
    n_queries: int,
    rows: Sequence[int],
    vectors: np.ndarray | None,
    k: int,
    blocked: Sequence[np.ndarray],
) -> list[ChannelCandidates]:
    """Candidates of ``n_queries`` queries from a vector index: ``vectors[j]`` is searched
    for query ``rows[j]``, without that query's ``blocked`` items; the other queries get
    none."""
    out = [ChannelCandidates(name, np.empty(0, np.int64), np.empty(0)) for _ in range(n_queries)]
    if not rows or vectors is None:
        return out
    exclude = [catalog.item_ids[blocked[i]].tolist() for i in rows]
    result = index.search(vectors, k, exclude=exclude)
    for j, row in enumerate(rows):
        n = int(result.found[j])
        pos = catalog.positions(result.ids[j, :n])
        keep = pos >= 0
        out[row] = ChannelCandidates(name, pos[keep], result.scores[j, :n][keep].astype(np.float64))
    return out


class DenseChannel(Channel):
    """A channel that scores every catalog item (item-item models, popularity)."""

    @abstractmethod
    def score(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        """``(len(queries), n_items)`` scores; ``-inf`` for items it does not propose."""

    def propose(
        self, queries: Sequence[RetrievalQuery], k: int, *, blocked: Sequence[np.ndarray]
    ) -> list[ChannelCandidates]:
        self._check_fitted()
        return _top_k(self.name, self.score(queries), k, blocked)

    def score_items(
        self, queries: Sequence[RetrievalQuery], positions: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        scores = self.score(queries)
        return [scores[row, np.asarray(pos, dtype=np.int64)] for row, pos in enumerate(positions)]


CHANNELS: dict[str, type[Channel]] = {}


def register_channel(cls: type[Channel]) -> type[Channel]:
    """Make a channel class available by its ``kind`` in retriever configs."""
    CHANNELS[cls.kind] = cls
    return cls


def channel_kinds() -> str:
    """Names of the registered channel kinds (for messages)."""
    return ", ".join(sorted(CHANNELS))
