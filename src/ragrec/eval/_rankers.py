"""Rankers the evaluation core can score: the interface and the non-learned baselines."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from ragrec._settings import Settings
from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError

__all__ = [
    "PopularityConfig",
    "PopularityRanker",
    "RandomConfig",
    "RandomRanker",
    "Ranker",
    "UserBatch",
]


@dataclass(frozen=True)
class UserBatch:
    """Users to score.

    Attributes:
        user_ids: One id per user.
        histories: Per user, catalog positions of the items seen, oldest first.
        ratings: Per user, values aligned with ``histories`` (may be empty: unknown).
        candidates: Per user, the catalog positions that will be ranked (candidate-set
            protocols such as ``llmrank-c20``); empty: every item is ranked. Scores of other
            items are ignored, so rankers may use this to spend effort (an LLM pass) on
            exactly these items.
    """

    user_ids: np.ndarray
    histories: tuple[np.ndarray, ...]
    ratings: tuple[np.ndarray, ...] = ()
    candidates: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return len(self.user_ids)


class Ranker(ABC):
    """Scores every catalog item for a batch of users.

    A ranker is fit once on a catalog and training rows, then asked for scores. The
    evaluation core excludes each user's history itself, so rankers need not.
    """

    name: ClassVar[str]
    device: str = "cpu"
    #: ``(name, config)`` this ranker was made from by :func:`make_ranker`; engines that
    #: score on other processes (``engine="ray"``) rebuild it from this.
    spec: tuple[str, dict[str, Any]] | None = None

    @abstractmethod
    def fit(self, catalog: Catalog, interactions: Interactions) -> Ranker:
        """Learn from training rows; returns ``self``."""

    @abstractmethod
    def score(self, batch: UserBatch) -> np.ndarray:
        """Scores of shape ``(len(batch), len(catalog))``; higher ranks first."""

    def tune(self, data: Any) -> None:  # noqa: B027 - optional hook, no-op by default
        """Optional: fit settings on the protocol's validation split after :meth:`fit`
        (the LLM blend weight). Called by the runner when evaluating the test split."""

    def report(self) -> dict[str, Any]:
        """Optional: facts about the run (model, backend, fitted weights) for reports."""
        return {}

    def user_extras(self, batch: UserBatch) -> list[dict[str, Any]]:
        """Optional: per-user facts about the batch just scored (explanations, say), one
        dict per user of ``batch``, in order. The runner calls it right after
        :meth:`score` with the same batch and writes each dict's keys into that user's line
        of ``users.jsonl``; ``user``, ``target`` and ``rank`` are reserved. Default: none."""
        return [{} for _ in range(len(batch))]

    def tuned_state(self) -> dict[str, Any]:
        """Optional: what :meth:`tune` learned (a blend weight), as JSON-ready values, so
        a copy of this ranker on another process can :meth:`load_tuned_state` it instead
        of tuning again. Default: nothing."""
        return {}

    def load_tuned_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Optional: apply :meth:`tuned_state` from another copy. Default: nothing."""


class PopularityConfig(Settings):
    """Configuration of :class:`PopularityRanker`."""

    window_days: float | None = Field(
        default=None,
        gt=0,
        description="Count only interactions within this many days of the latest one "
        "(recent popularity); None counts all.",
    )


class PopularityRanker(Ranker):
    """Ranks items by their number of training interactions (ties: catalog order)."""

    name = "popularity"

    def __init__(self, config: PopularityConfig | None = None) -> None:
        self.config = config or PopularityConfig()
        self._scores: np.ndarray | None = None

    def fit(self, catalog: Catalog, interactions: Interactions) -> PopularityRanker:
        rows = interactions
        if self.config.window_days is not None and len(rows):
            start = rows.timestamps.max() - self.config.window_days * 86400
            rows = rows.select(rows.timestamps >= start)
        pos = catalog.positions(rows.item_ids)
        pos = pos[pos >= 0]
        self._scores = np.bincount(pos, minlength=len(catalog)).astype(np.float64)
        return self

    def score(self, batch: UserBatch) -> np.ndarray:
        if self._scores is None:
            raise ConfigError("PopularityRanker.score called before fit(); call fit first")
        return np.broadcast_to(self._scores, (len(batch), len(self._scores))).copy()


class RandomConfig(Settings):
    """Configuration of :class:`RandomRanker`."""

    seed: int = Field(default=0, description="Seed of the random scores.")


class RandomRanker(Ranker):
    """Uniformly random scores: the chance baseline. Deterministic per (seed, user)."""

    name = "random"

    def __init__(self, config: RandomConfig | None = None) -> None:
        self.config = config or RandomConfig()
        self._n_items = -1

    def fit(self, catalog: Catalog, interactions: Interactions) -> RandomRanker:
        self._n_items = len(catalog)
        return self

    def score(self, batch: UserBatch) -> np.ndarray:
        if self._n_items < 0:
            raise ConfigError("RandomRanker.score called before fit(); call fit first")
        keys = pd.util.hash_array(np.asarray(batch.user_ids, dtype=object)).astype(np.uint64)
        out = np.empty((len(batch), self._n_items))
        for row, key in enumerate(keys):
            out[row] = np.random.default_rng([self.config.seed, int(key)]).random(self._n_items)
        return out
