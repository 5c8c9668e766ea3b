"""Tiny deterministic catalogs and logs for the tuning tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from ragrec.data import Catalog, Interactions

TITLES = [
    "Toy Story (1995)",
    "Alien (1979)",
    "Heat (1995)",
    "Fargo (1996)",
    "Casino (1995)",
    "Babe (1995)",
    "Clueless (1995)",
    "Jumanji (1995)",
    "Sabrina (1995)",
    "GoldenEye (1995)",
    "Twister (1996)",
    "Scream (1996)",
    "Titanic (1997)",
    "Contact (1997)",
    "Gattaca (1997)",
    "Mulan (1998)",
    "Ronin (1998)",
    "Antz (1998)",
    "Matrix, The (1999)",
    "Magnolia (1999)",
    "Memento (2000)",
    "Gladiator (2000)",
    "Shrek (2001)",
    "Amelie (2001)",
    "Chicago (2002)",
    "Signs (2002)",
    "Elf (2003)",
    "Holes (2003)",
    "Troy (2004)",
    "Collateral (2004)",
]


def tiny_catalog() -> Catalog:
    """30 movies with ids 100, 101, ..."""
    return Catalog(item_ids=np.arange(100, 100 + len(TITLES)), titles=np.asarray(TITLES))


def tiny_logs(n_users: int = 6, length: int = 8, seed: int = 0) -> Interactions:
    """``n_users`` users with ``length`` distinct items each, timestamps increasing."""
    rng = np.random.default_rng(seed)
    users, items, stamps = [], [], []
    for u in range(n_users):
        chosen = rng.choice(len(TITLES), size=length, replace=False) + 100
        users += [u + 1] * length
        items += chosen.tolist()
        stamps += list(range(1000, 1000 + length))
    return Interactions(
        user_ids=np.asarray(users),
        item_ids=np.asarray(items),
        values=np.ones(len(users)),
        timestamps=np.asarray(stamps),
    )


def popular_first(catalog: Catalog) -> Any:
    """A stand-in retriever: every position in order, history and all (the builder must
    exclude the history and the target itself)."""

    def candidates(user: Any, history: np.ndarray, k: int) -> Sequence[int]:
        return list(range(min(k, len(catalog))))

    return candidates


@pytest.fixture
def catalog() -> Catalog:
    return tiny_catalog()


@pytest.fixture
def logs() -> Interactions:
    return tiny_logs()
