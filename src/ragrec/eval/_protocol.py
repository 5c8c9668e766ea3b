"""Evaluation protocols: how a dataset becomes training rows and scored targets."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ragrec.data import Catalog, Interactions, kcore, leave_one_out, user_sequences
from ragrec.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "PROTOCOLS",
    "EvalCases",
    "ProtocolData",
    "ProtocolStep",
    "Split",
    "llamarec_protocol",
    "prepare_protocol",
]

Split = Literal["validation", "test"]
PROTOCOLS = ("llamarec",)


@dataclass(frozen=True)
class ProtocolStep:
    """Sizes after one preparation step (for ``ragrec data stats``)."""

    name: str
    users: int
    items: int
    interactions: int


@dataclass(frozen=True)
class EvalCases:
    """The users of one split, each with a time-ordered history and one target.

    Attributes:
        split: ``"validation"`` or ``"test"``.
        user_ids: One id per case.
        histories: Per case, catalog positions of the items seen before the target,
            oldest first. These are excluded from scoring.
        targets: Per case, the catalog position of the held-out item.
        ratings: Per case, the values (ratings) aligned with ``histories``.
    """

    split: Split
    user_ids: np.ndarray
    histories: tuple[np.ndarray, ...]
    targets: np.ndarray
    ratings: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return len(self.user_ids)

    def head(self, n: int) -> EvalCases:
        """The first ``n`` cases."""
        return EvalCases(
            self.split, self.user_ids[:n], self.histories[:n], self.targets[:n], self.ratings[:n]
        )


@dataclass(frozen=True)
class ProtocolData:
    """A dataset prepared by a protocol.

    Attributes:
        name: Protocol name.
        catalog: The items that remain after filtering; every one is scored.
        train: Training rows.
        validation: One validation target row per user.
        test: One test target row per user.
        steps: Sizes after each preparation step.
    """

    name: str
    catalog: Catalog
    train: Interactions
    validation: Interactions
    test: Interactions
    steps: tuple[ProtocolStep, ...]

    def fit_rows(self, split: Split) -> Interactions:
        """Rows a ranker is fit on for ``split``: the training rows for both splits.

        As in LlamaRec, models are fit on training rows only; for the test split the
        validation item joins each user's history (as input, not as training data).
        """
        _check_split(split)
        return self.train

    def cases(self, split: Split) -> EvalCases:
        """The scored cases of ``split``."""
        _check_split(split)
        history_rows = self.train if split == "validation" else self.train.concat(self.validation)
        targets = self.validation if split == "validation" else self.test
        return _cases(split, self.catalog, history_rows, targets)


def _check_split(split: str) -> None:
    if split not in ("validation", "test"):
        raise ConfigError(f"split={split!r} is not allowed; use 'validation' or 'test'")


def _cases(
    split: Split, catalog: Catalog, history: Interactions, targets: Interactions
) -> EvalCases:
    positions, values = user_sequences(catalog, history)
    order = np.argsort(targets.user_ids, kind="stable")
    users = targets.user_ids[order]
    return EvalCases(
        split=split,
        user_ids=users,
        histories=tuple(positions.get(u, np.empty(0, np.int64)) for u in users),
        ratings=tuple(values.get(u, np.empty(0, np.float64)) for u in users),
        targets=catalog.positions(targets.item_ids[order]),
    )


def _sizes(name: str, rows: Interactions) -> ProtocolStep:
    return ProtocolStep(name, rows.n_users, rows.n_items, len(rows))


def llamarec_protocol(catalog: Catalog, interactions: Interactions, *, k: int = 5) -> ProtocolData:
    """The LlamaRec protocol (as used for ML-100k / ml-latest-small in its code).

    All ratings count as interactions; interactions on items without a title (or not in
    the catalog) are dropped; an iterative ``k``-core keeps users and items with at least
    ``k`` interactions; each user's rows sorted by (timestamp, item id) give the last as
    test target, the one before as validation target, the rest as training. Every
    remaining item is scored, the user's history excluded.

    Args:
        catalog: Items (titles required by :class:`Catalog`).
        interactions: All interactions.
        k: Core size.

    Returns:
        The prepared data, with sizes after each step.
    """
    steps = [_sizes("loaded", interactions)]
    titled = catalog.subset(np.flatnonzero([bool(str(t).strip()) for t in catalog.titles]))
    rows = interactions.restrict_items(titled)
    steps.append(_sizes("items with a title", rows))
    rows = kcore(rows, k)
    steps.append(_sizes(f"{k}-core (iterative)", rows))
    if len(rows) == 0:
        raise ConfigError(f"no interactions survive the {k}-core filter; use a smaller k")
    split = leave_one_out(rows)
    steps += [
        _sizes("train", split.train),
        _sizes("validation targets", split.validation),
        _sizes("test targets", split.test),
    ]
    kept = np.sort(titled.positions(pd.unique(rows.item_ids)))
    return ProtocolData(
        name="llamarec",
        catalog=titled.subset(kept),
        train=split.train,
        validation=split.validation,
        test=split.test,
        steps=tuple(steps),
    )


def prepare_protocol(name: str, catalog: Catalog, interactions: Interactions) -> ProtocolData:
    """Prepare data by protocol name (``"llamarec"``)."""
    if name == "llamarec":
        return llamarec_protocol(catalog, interactions)
    raise ConfigError(f"protocol {name!r} is not known; allowed: {', '.join(PROTOCOLS)}")
