"""Retrieval channels on the tiny dataset, with real item embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest
from pydantic import Field, ValidationError

from ragrec.errors import ConfigError
from ragrec.retrieval import (
    CHANNELS,
    ChannelConfig,
    ChannelContext,
    ChannelSpec,
    DenseChannel,
    EaseChannel,
    EaseConfig,
    ItemEmbeddings,
    PopularityChannel,
    PopularityChannelConfig,
    RetrievalQuery,
    Retriever,
    RetrieverConfig,
    SemanticChannel,
    SemanticConfig,
    SentenceTransformerEmbedder,
    TransitionChannel,
    TransitionConfig,
    register_channel,
)

from .conftest import Tiny

NOTHING = np.empty(0, dtype=np.int64)


@pytest.fixture(scope="module")
def embeddings(tiny: Tiny, embedder: SentenceTransformerEmbedder) -> ItemEmbeddings:
    return ItemEmbeddings.build(tiny.catalog, embedder)


@pytest.fixture(scope="module")
def context(tiny: Tiny, embeddings: ItemEmbeddings) -> ChannelContext:
    return ChannelContext.build(tiny.catalog, tiny.interactions, embeddings)


def pos(tiny: Tiny, *ids: int) -> np.ndarray:
    return tiny.catalog.positions(list(ids))


def proposed_ids(
    tiny: Tiny,
    channel: DenseChannel | SemanticChannel,
    history: Sequence[int] = (),
    *,
    k: int = 5,
    blocked: Sequence[int] | None = None,
    text: str | None = None,
    ratings: Sequence[float] | None = None,
) -> list[int]:
    """Item ids a channel proposes; blocked defaults to the history (exclude seen)."""
    hist = pos(tiny, *history)
    block = pos(tiny, *(history if blocked is None else blocked))
    query = RetrievalQuery("u", hist, None if ratings is None else np.array(ratings), text)
    (got,) = channel.propose([query], k, blocked=[block])
    assert len(got) <= k
    assert len(set(got.positions.tolist())) == len(got)
    assert not set(got.positions.tolist()) & set(block.tolist())
    assert (np.diff(got.scores) <= 0).all()
    assert got.channel == channel.name
    return tiny.catalog.item_ids[got.positions].tolist()


class TestTransition:
    def test_the_item_that_always_follows_comes_first(
        self, tiny: Tiny, context: ChannelContext
    ) -> None:
        channel = TransitionChannel().fit(context)
        assert proposed_ids(tiny, channel, [10, 1])[:3] == [2, 3, 4]
        assert proposed_ids(tiny, channel, [10, 5])[:2] == [7, 23]
        assert proposed_ids(tiny, channel, [10, 11])[:2] == [12, 13]
        # With the successor blocked, the next one moves up.
        assert proposed_ids(tiny, channel, [10, 1], blocked=[10, 1, 2])[0] == 3

    def test_the_most_recent_item_counts_most(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = TransitionChannel().fit(context)
        assert proposed_ids(tiny, channel, [1, 5])[0] == 7
        assert proposed_ids(tiny, channel, [5, 1])[0] == 2

    def test_window_one_counts_only_direct_successors(
        self, tiny: Tiny, context: ChannelContext
    ) -> None:
        channel = TransitionChannel(TransitionConfig(window=1, last_items=1)).fit(context)
        (got,) = channel.propose([RetrievalQuery("u", pos(tiny, 1))], 24, blocked=[NOTHING])
        positive = tiny.catalog.item_ids[got.positions[got.scores > 0]].tolist()
        assert positive == [2]
        assert got.scores[0] == pytest.approx(1.0)  # rows are normalised to sum 1

    def test_is_skipped_for_cold_users(self) -> None:
        assert TransitionChannel.needs_history
        assert EaseChannel.needs_history


class TestEase:
    def test_learns_co_occurrence(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = EaseChannel().fit(context)
        assert proposed_ids(tiny, channel, [8])[0] == 9
        assert proposed_ids(tiny, channel, [9])[0] == 8
        assert set(proposed_ids(tiny, channel, [11], k=2)) == {12, 13}
        assert set(proposed_ids(tiny, channel, [14], k=2)) == {18, 20}

    def test_refuses_large_catalogs(self, context: ChannelContext) -> None:
        with pytest.raises(ConfigError, match="catalog has 24 items, more than max_items=10"):
            EaseChannel(EaseConfig(max_items=10)).fit(context)

    def test_config_checks(self) -> None:
        with pytest.raises(ValidationError):
            EaseConfig(l2=0)
        with pytest.raises(ValidationError, match="lambda_"):
            EaseConfig(lambda_=1.0)  # type: ignore[call-arg]


class TestPopularity:
    def test_works_for_cold_users(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = PopularityChannel().fit(context)
        assert not PopularityChannel.needs_history
        (got,) = channel.propose([RetrievalQuery("new")], 3, blocked=[NOTHING])
        assert tiny.catalog.item_ids[got.positions].tolist()[0] == 10
        assert got.scores[0] == pytest.approx(np.log1p(30))

    def test_recent_window(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = PopularityChannel(PopularityChannelConfig(window_days=30)).fit(context)
        (got,) = channel.propose([RetrievalQuery("new")], 24, blocked=[NOTHING])
        ids = tiny.catalog.item_ids[got.positions].tolist()
        assert ids[0] == 20
        assert got.scores[0] == pytest.approx(np.log1p(8))
        assert (got.scores[1:] == 0).all()

    def test_blocked_items_are_skipped_and_the_rest_listed(
        self, tiny: Tiny, context: ChannelContext
    ) -> None:
        channel = PopularityChannel().fit(context)
        ids = proposed_ids(tiny, channel, [10, 1, 2], k=100)
        assert len(ids) == 21
        assert ids[0] in {3, 4, 5, 7, 11, 12, 13}


class TestSemantic:
    def test_query_text_finds_related_items(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = SemanticChannel().fit(context)
        horror = proposed_ids(tiny, channel, text="space horror", k=2)
        assert set(horror) <= {1, 2, 3, 4}
        kids = proposed_ids(tiny, channel, text="animated film for kids about fish", k=1)
        assert kids == [9]

    def test_profile_follows_the_history(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = SemanticChannel().fit(context)
        near_alien = proposed_ids(tiny, channel, [1, 2], k=2)
        assert set(near_alien) <= {3, 4, 17, 18, 20, 21, 22}
        near_pixar = proposed_ids(tiny, channel, [8, 9], k=1)
        assert near_pixar == [24]

    def test_profile_weighs_ratings_and_recency(
        self, tiny: Tiny, context: ChannelContext, embeddings: ItemEmbeddings
    ) -> None:
        alien, toys = embeddings.vectors_at(pos(tiny, 1, 8))
        channel = SemanticChannel(SemanticConfig(recency_half_life=None)).fit(context)
        hist = pos(tiny, 1, 8)

        def leans_alien(ratings: list[float] | None, ch: SemanticChannel = channel) -> bool:
            prof = ch.profile(RetrievalQuery("u", hist, None if ratings is None else ratings))
            assert prof is not None
            assert np.linalg.norm(prof) == pytest.approx(1.0, abs=1e-6)
            return bool(prof @ alien > prof @ toys)

        assert leans_alien([5.0, 1.0])
        assert not leans_alien([1.0, 5.0])
        recent = SemanticChannel(SemanticConfig(recency_half_life=0.5, rating_weight=False))
        recent.fit(context)
        assert not leans_alien(None, recent)  # Toy Story is the newer one
        assert channel.profile(RetrievalQuery("u")) is None

    def test_text_and_profile_are_mixed(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = SemanticChannel(SemanticConfig(query_weight=0.5)).fit(context)
        queries = [
            RetrievalQuery("a", pos(tiny, 8, 9), text="space horror"),
            RetrievalQuery("b", text="space horror"),
            RetrievalQuery("c", pos(tiny, 8, 9)),
            RetrievalQuery("d"),
        ]
        mixed, text_only, profile_only, none = channel.search_vectors(queries)
        assert none is None
        for vec in (mixed, text_only, profile_only):
            assert vec is not None
            assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
        assert mixed is not None
        assert text_only is not None
        assert profile_only is not None
        expected = text_only + profile_only
        np.testing.assert_allclose(mixed, expected / np.linalg.norm(expected), atol=1e-5)
        lists = channel.propose(queries, 3, blocked=[NOTHING] * 4)
        assert [len(lst) for lst in lists] == [3, 3, 3, 0]

    def test_needs_embeddings(self, tiny: Tiny) -> None:
        bare = ChannelContext.build(tiny.catalog, tiny.interactions)
        with pytest.raises(ConfigError, match="needs item embeddings"):
            SemanticChannel().fit(bare)


@pytest.mark.parametrize(
    "cls", [TransitionChannel, EaseChannel, PopularityChannel, SemanticChannel]
)
def test_every_channel_refuses_to_propose_before_fit(cls: type[DenseChannel]) -> None:
    channel = cls(name="mine")
    with pytest.raises(ConfigError, match="channel 'mine' used before fit"):
        channel.propose([RetrievalQuery("u")], 3, blocked=[NOTHING])


def test_a_channel_takes_only_its_own_config() -> None:
    with pytest.raises(
        ConfigError, match="channel 'ease' takes a EaseConfig, got TransitionConfig"
    ):
        EaseChannel(TransitionConfig())  # type: ignore[arg-type]


class NewestConfig(ChannelConfig):
    """Configuration of the newest-first test channel."""

    since: float = Field(default=0.0, description="Only items from this year on.")


class NewestChannel(DenseChannel):
    """Newest items first: a channel written outside the package."""

    kind: ClassVar[str] = "newest"
    config_class = NewestConfig
    needs_history = False
    config: NewestConfig

    def fit(self, context: ChannelContext) -> NewestChannel:
        years = np.nan_to_num(context.catalog.years, nan=-np.inf)
        self._scores = np.where(years >= self.config.since, years, -np.inf)
        self._n_items = len(context.catalog)
        return self

    def score(self, queries: Sequence[RetrievalQuery]) -> np.ndarray:
        return np.tile(self._scores, (len(queries), 1))


def test_a_new_channel_plugs_in(tiny: Tiny, embedder: SentenceTransformerEmbedder) -> None:
    register_channel(NewestChannel)
    try:
        config = RetrieverConfig(
            channels=[
                ChannelSpec(kind="newest", options={"since": 2000}),
                ChannelSpec(kind="popularity", weight=0.0),
            ],
            n_candidates=3,
        )
        retriever = Retriever(config, embedder=embedder).fit(tiny.catalog, tiny.interactions)
        result = retriever.retrieve(retriever.query("nobody"))
        assert result.item_ids == [20, 24, 9]
        assert result.candidates[0].channels == ("newest", "popularity")
        with pytest.raises(ConfigError, match="sinse: Extra inputs are not permitted"):
            Retriever(RetrieverConfig(channels=[ChannelSpec(kind="newest", options={"sinse": 1})]))
    finally:
        CHANNELS.pop("newest", None)
    assert "newest" not in CHANNELS
