"""Fixtures for the retrieval tests: the real embedder (loaded once) and a tiny catalog
with clear sequential, co-occurrence and popularity patterns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ragrec.data import Catalog, Interactions
from ragrec.retrieval import Retriever, RetrieverConfig, SentenceTransformerEmbedder

DAY = 86400
T0 = 1_000_000_000

# (id, title, genres, year, tags)
MOVIES = [
    (1, "Alien (1979)", "Horror|Sci-Fi", 1979, "space, creature, spaceship"),
    (2, "Aliens (1986)", "Action|Horror|Sci-Fi", 1986, "space marines, creature"),
    (3, "The Thing (1982)", "Horror|Sci-Fi", 1982, "antarctica, shapeshifter"),
    (4, "Event Horizon (1997)", "Horror|Sci-Fi", 1997, "spaceship, haunted"),
    (5, "Airplane! (1980)", "Comedy", 1980, "spoof, slapstick"),
    (6, "Groundhog Day (1993)", "Comedy|Fantasy|Romance", 1993, "time loop"),
    (7, "Dumb and Dumber (1994)", "Comedy", 1994, "road trip, slapstick"),
    (8, "Toy Story (1995)", "Adventure|Animation|Children|Comedy", 1995, "pixar, toys"),
    (9, "Finding Nemo (2003)", "Adventure|Animation|Children", 2003, "pixar, ocean, fish"),
    (10, "Forrest Gump (1994)", "Comedy|Drama|Romance|War", 1994, ""),
    (11, "The Godfather (1972)", "Crime|Drama", 1972, "mafia"),
    (12, "The Godfather: Part II (1974)", "Crime|Drama", 1974, "mafia, sequel"),
    (13, "Casablanca (1942)", "Drama|Romance", 1942, "classic"),
    (14, "Heat (1995)", "Action|Crime|Thriller", 1995, ""),
    (15, "Notting Hill (1999)", "Comedy|Romance", 1999, "london"),
    (16, "When Harry Met Sally... (1989)", "Comedy|Romance", 1989, ""),
    (17, "Blade Runner (1982)", "Sci-Fi|Thriller", 1982, "cyberpunk, dystopia"),
    (18, "The Matrix (1999)", "Action|Sci-Fi|Thriller", 1999, "virtual reality"),
    (19, "Spirited Away (2001)", "Animation|Fantasy", 2001, "anime"),
    (20, "Inception (2010)", "Action|Sci-Fi|Thriller", 2010, "dream"),
    (21, "Psycho (1960)", "Horror|Thriller", 1960, "classic"),
    (22, "The Shining (1980)", "Horror", 1980, "stephen king"),
    (23, "Office Space (1999)", "Comedy", 1999, "work"),
    (24, "Up (2009)", "Adventure|Animation|Children", 2009, "pixar, balloons"),
]


@dataclass(frozen=True)
class Tiny:
    """The tiny dataset and what its patterns are meant to teach."""

    catalog: Catalog
    interactions: Interactions


def tiny_catalog(movies: list[tuple[int, str, str, int, str]] = MOVIES) -> Catalog:
    """A catalog from (id, title, genres, year, tags) rows."""
    genres = [tuple(m[2].split("|")) for m in movies]
    return Catalog(
        item_ids=np.array([m[0] for m in movies]),
        titles=np.array([m[1] for m in movies], dtype=object),
        text={
            "genres": np.array([", ".join(g) for g in genres], dtype=object),
            "tags": np.array([m[4] for m in movies], dtype=object),
        },
        categories=tuple(genres),
        years=np.array([m[3] for m in movies], dtype=np.float64),
    )


def tiny_interactions() -> Interactions:
    """48 users in five groups.

    - users 0-9 watch 10, 1, 2, 3, 4 in that order (1 is always followed by 2);
    - users 10-19 watch 10, 5, 7, 23 (5 is always followed by 7);
    - users 20-29 watch 8 and 9 together, in either order (co-occurrence, no 10);
    - users 30-39 watch 10, 11, 12, 13;
    - users 40-47 watch 14 and 18 early and 20 a year later (the recent hit).

    Item 10 is the most watched overall, item 20 the only one watched recently.
    """
    rng = np.random.default_rng(7)
    rows: list[tuple[int, int, float, int]] = []

    def watch(user: int, items: list[int], start: int) -> None:
        for j, item in enumerate(items):
            rows.append((user, item, float(rng.integers(3, 6)), start + j * 60))

    for u in range(10):
        watch(u, [10, 1, 2, 3, 4], T0 + u * 3600)
    for u in range(10, 20):
        watch(u, [10, 5, 7, 23], T0 + u * 3600)
    for u in range(20, 30):
        pair = [8, 9] if u % 2 else [9, 8]
        watch(u, pair, T0 + u * 3600)
    for u in range(30, 40):
        watch(u, [10, 11, 12, 13], T0 + u * 3600)
    for u in range(40, 48):
        watch(u, [14, 18], T0 + u * 3600)
        watch(u, [20], T0 + 365 * DAY + u * 3600)
    users, items, values, stamps = (np.array(c) for c in zip(*rows, strict=True))
    return Interactions(user_ids=users, item_ids=items, values=values, timestamps=stamps)


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real default embedder (bundled all-MiniLM-L6-v2), loaded once per session."""
    model = SentenceTransformerEmbedder()
    _ = model.dim  # load now, so no single test pays for it
    return model


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    """The tiny catalog and interactions (see :func:`tiny_interactions`)."""
    return Tiny(tiny_catalog(), tiny_interactions())


@pytest.fixture(scope="session")
def tiny_retriever(tiny: Tiny, embedder: SentenceTransformerEmbedder) -> Retriever:
    """The default channels fit on the tiny data, N = 8. Tests must not refit it."""
    config = RetrieverConfig(n_candidates=8)
    return Retriever(config, embedder=embedder).fit(tiny.catalog, tiny.interactions)
