"""Filters and train/validation/test splits over :class:`Interactions`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ragrec.data._models import Catalog, Interactions
from ragrec.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "LeaveOneOutSplit",
    "TrainTestSplit",
    "kcore",
    "leave_one_out",
    "random_split",
    "temporal_split",
    "user_sequences",
]


def kcore(
    interactions: Interactions,
    k: int = 5,
    *,
    user_k: int | None = None,
    item_k: int | None = None,
    iterative: bool = True,
) -> Interactions:
    """Keep users and items with at least ``k`` interactions.

    Repeated interactions of a user with one item each count. With ``iterative=True``
    (default) the two filters alternate until both hold at once; with ``False`` items
    are filtered once, then users once (so some items may end below ``item_k``).

    Args:
        interactions: The rows to filter (not modified).
        k: Default threshold for both users and items.
        user_k: Threshold for users (default ``k``).
        item_k: Threshold for items (default ``k``).
        iterative: Repeat until a fixed point.

    Returns:
        The surviving rows, in their original order.
    """
    uk = k if user_k is None else user_k
    ik = k if item_k is None else item_k
    for name, value in (("k", k), ("user_k", uk), ("item_k", ik)):
        if value < 0:
            raise ConfigError(f"{name}={value} must be >= 0 (0 disables that filter)")
    users = pd.Series(interactions.user_ids)
    items = pd.Series(interactions.item_ids)
    keep = np.ones(len(interactions), dtype=bool)
    while True:
        before = int(keep.sum())
        if ik > 0:
            counts = items[keep].value_counts()
            keep &= items.map(counts).fillna(0).to_numpy() >= ik
        if uk > 0:
            counts = users[keep].value_counts()
            keep &= users.map(counts).fillna(0).to_numpy() >= uk
        if not iterative or int(keep.sum()) == before:
            break
    return interactions.select(keep)


def _user_order(interactions: Interactions) -> np.ndarray:
    """Row order by (user, timestamp, item id): each user's rows in time order."""
    frame = pd.DataFrame(
        {
            "u": interactions.user_ids,
            "t": interactions.timestamps,
            "i": interactions.item_ids,
        }
    )
    return frame.sort_values(["u", "t", "i"], kind="stable").index.to_numpy()


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Per-user leave-one-out: each user's last row is the test target, the one before
    it the validation target, the rest training.

    Attributes:
        train: All rows but each user's last two (time-ordered).
        validation: One row per user: the second to last.
        test: One row per user: the last.
    """

    train: Interactions
    validation: Interactions
    test: Interactions


def leave_one_out(interactions: Interactions, *, min_train: int = 1) -> LeaveOneOutSplit:
    """Split each user's rows, sorted by (timestamp, item id), into train / validation / test.

    Users with fewer than ``min_train + 2`` rows get no targets; all their rows go to
    training.

    Args:
        interactions: The rows to split (not modified).
        min_train: Training rows a user needs before getting targets.

    Returns:
        The three parts; ``validation`` and ``test`` hold one row per eligible user, in
        user order.
    """
    if min_train < 0:
        raise ConfigError(f"min_train={min_train} must be >= 0")
    order = _user_order(interactions)
    users = interactions.user_ids[order]
    _, first, counts = np.unique(users, return_index=True, return_counts=True)
    last = first + counts - 1
    eligible = counts >= min_train + 2
    test_rows = order[last[eligible]]
    val_rows = order[last[eligible] - 1]
    held = np.zeros(len(interactions), dtype=bool)
    held[test_rows] = True
    held[val_rows] = True
    train_rows = order[~held[order]]
    skipped = int((~eligible).sum())
    if skipped:
        logger.info("leave_one_out: %d users with too few rows get no targets", skipped)
    return LeaveOneOutSplit(
        train=interactions.select(train_rows),
        validation=interactions.select(val_rows),
        test=interactions.select(test_rows),
    )


@dataclass(frozen=True)
class TrainTestSplit:
    """A split into training and test rows."""

    train: Interactions
    test: Interactions


def temporal_split(
    interactions: Interactions,
    *,
    test_fraction: float = 0.1,
    cutoff: int | None = None,
) -> TrainTestSplit:
    """Global temporal split: rows at or after a time cutoff are test rows.

    Args:
        interactions: The rows (not modified).
        test_fraction: Fraction of rows (the latest) for testing, when ``cutoff`` is None.
        cutoff: Unix seconds; rows with ``timestamp >= cutoff`` are test rows.

    Returns:
        Train and test rows.
    """
    if cutoff is None:
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction={test_fraction} must be in (0, 1), e.g. 0.1")
        if len(interactions) == 0:
            raise ConfigError("cannot split an empty interactions table")
        cutoff = int(np.quantile(interactions.timestamps, 1.0 - test_fraction, method="higher"))
    test = interactions.timestamps >= cutoff
    return TrainTestSplit(train=interactions.select(~test), test=interactions.select(test))


def random_split(
    interactions: Interactions,
    *,
    test_fraction: float = 0.2,
    rng: int | np.random.Generator | None = None,
) -> TrainTestSplit:
    """Seeded random split of rows.

    Args:
        interactions: The rows (not modified).
        test_fraction: Fraction of rows for testing, in (0, 1).
        rng: Seed or generator; the same seed gives the same split.

    Returns:
        Train and test rows, each in original order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction={test_fraction} must be in (0, 1), e.g. 0.2")
    gen = np.random.default_rng(rng)
    n_test = round(len(interactions) * test_fraction)
    test = np.zeros(len(interactions), dtype=bool)
    test[gen.choice(len(interactions), size=n_test, replace=False)] = True
    return TrainTestSplit(train=interactions.select(~test), test=interactions.select(test))


def user_sequences(
    catalog: Catalog, interactions: Interactions
) -> tuple[dict[Any, np.ndarray], dict[Any, np.ndarray]]:
    """Per user id, catalog positions in (timestamp, item id) order, and the values
    aligned with them; rows on items not in the catalog are skipped."""
    frame = pd.DataFrame(
        {
            "u": interactions.user_ids,
            "t": interactions.timestamps,
            "i": interactions.item_ids,
            "p": catalog.positions(interactions.item_ids),
            "v": interactions.values,
        }
    )
    frame = frame[frame["p"] >= 0].sort_values(["u", "t", "i"], kind="stable")
    groups = frame.groupby("u", sort=False)
    sequences = {u: g.to_numpy(dtype=np.int64) for u, g in groups["p"]}
    ratings = {u: g.to_numpy(dtype=np.float64) for u, g in groups["v"]}
    return sequences, ratings
