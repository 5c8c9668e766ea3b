"""Tests for ragrec.eval._rankers: the ranker interface, baselines and factory."""

from __future__ import annotations

import numpy as np
import pytest

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval import (
    RANKERS,
    ChannelRankerConfig,
    PopularityConfig,
    PopularityRanker,
    ProtocolData,
    RandomConfig,
    RandomRanker,
    Ranker,
    UserBatch,
    evaluate,
    known_ranker,
    make_ranker,
)
from ragrec.retrieval import CHANNELS

DAY = 86400


@pytest.fixture
def catalog() -> Catalog:
    ids = [5, 3, 9, 7]
    return Catalog(item_ids=np.array(ids), titles=np.array([f"m{i}" for i in ids], dtype=object))


@pytest.fixture
def rows() -> Interactions:
    # (user, item, day): item 3 is popular long ago, item 7 recently; item 11 is unknown
    data = [
        (1, 3, 0),
        (2, 3, 1),
        (3, 3, 2),
        (1, 5, 3),
        (1, 7, 98),
        (2, 7, 99),
        (3, 11, 99),
        (4, 9, 100),
    ]
    users, items, days = (np.array(c) for c in zip(*data, strict=True))
    return Interactions(
        user_ids=users, item_ids=items, values=np.ones(len(data)), timestamps=days * DAY
    )


def _no_history(n: int) -> tuple[np.ndarray, ...]:
    return tuple(np.empty(0, dtype=np.int64) for _ in range(n))


def _batch(n: int = 2) -> UserBatch:
    return UserBatch(np.arange(1, n + 1), _no_history(n))


class TestPopularity:
    def test_scores_are_training_counts(self, catalog: Catalog, rows: Interactions) -> None:
        ranker = PopularityRanker().fit(catalog, rows)
        scores = ranker.score(_batch(3))
        # catalog order 5, 3, 9, 7; item 11 is not in the catalog and is ignored
        assert scores.shape == (3, 4)
        np.testing.assert_array_equal(scores, np.tile([1.0, 3.0, 1.0, 2.0], (3, 1)))

    def test_window_days_counts_recent_rows_only(
        self, catalog: Catalog, rows: Interactions
    ) -> None:
        ranker = PopularityRanker(PopularityConfig(window_days=2)).fit(catalog, rows)
        # rows from day 98 on: 7, 7, 11 (unknown), 9
        np.testing.assert_array_equal(ranker.score(_batch(1))[0], [0.0, 0.0, 1.0, 2.0])
        ranker = PopularityRanker(PopularityConfig(window_days=1000)).fit(catalog, rows)
        np.testing.assert_array_equal(ranker.score(_batch(1))[0], [1.0, 3.0, 1.0, 2.0])

    def test_score_returns_a_writable_copy(self, catalog: Catalog, rows: Interactions) -> None:
        ranker = PopularityRanker().fit(catalog, rows)
        scores = ranker.score(_batch(2))
        scores[:] = -1.0
        assert ranker.score(_batch(1))[0].tolist() == [1.0, 3.0, 1.0, 2.0]

    def test_window_days_must_be_positive(self) -> None:
        with pytest.raises(ConfigError, match="window_days"):
            make_ranker("popularity", {"window_days": 0})

    def test_score_before_fit(self) -> None:
        with pytest.raises(ConfigError, match="fit"):
            PopularityRanker().score(_batch())


class TestRandom:
    def test_score_before_fit(self) -> None:
        with pytest.raises(ConfigError, match="fit"):
            RandomRanker().score(_batch())

    def test_deterministic_per_seed_and_user(self, catalog: Catalog, rows: Interactions) -> None:
        ranker = RandomRanker(RandomConfig(seed=7)).fit(catalog, rows)
        both = ranker.score(UserBatch(np.array([1, 2]), _no_history(2)))
        assert both.shape == (2, 4)
        again = RandomRanker(RandomConfig(seed=7)).fit(catalog, rows)
        # the same user scores the same whatever batch it comes in
        alone = again.score(UserBatch(np.array([2]), _no_history(1)))
        np.testing.assert_array_equal(both[1], alone[0])
        np.testing.assert_array_equal(
            both, again.score(UserBatch(np.array([1, 2]), _no_history(2)))
        )
        assert not np.array_equal(both[0], both[1])
        other = RandomRanker(RandomConfig(seed=8)).fit(catalog, rows)
        assert not np.array_equal(both, other.score(UserBatch(np.array([1, 2]), _no_history(2))))

    def test_text_user_ids(self, catalog: Catalog, rows: Interactions) -> None:
        ranker = RandomRanker().fit(catalog, rows)
        batch = UserBatch(np.array(["a", "b"], dtype=object), _no_history(2))
        np.testing.assert_array_equal(ranker.score(batch), ranker.score(batch))


class TestMakeRanker:
    @pytest.mark.parametrize(
        ("name", "cls"), [("popularity", PopularityRanker), ("random", RandomRanker)]
    )
    def test_by_name(self, name: str, cls: type[Ranker]) -> None:
        ranker = make_ranker(name)
        assert isinstance(ranker, cls)
        assert ranker.name == name

    def test_dict_and_model_configs(self) -> None:
        ranker = make_ranker("random", {"seed": 3})
        assert isinstance(ranker, RandomRanker)
        assert ranker.config.seed == 3
        config = PopularityConfig(window_days=5)
        popular = make_ranker("popularity", config)
        assert isinstance(popular, PopularityRanker)
        assert popular.config is config

    def test_unknown_name(self) -> None:
        with pytest.raises(ConfigError, match=r"'gru4rec'.*popularity, popularity-channel, random"):
            make_ranker("gru4rec")

    def test_extra_key_is_named(self) -> None:
        with pytest.raises(ConfigError, match="windw_days") as info:
            make_ranker("popularity", {"windw_days": 30})
        assert "window_days" in str(info.value)  # the allowed key, as the fix
        assert "\n" not in str(info.value)

    def test_config_of_another_ranker(self) -> None:
        with pytest.raises(ConfigError, match="PopularityConfig"):
            make_ranker("popularity", RandomConfig())


class TestRegistry:
    def test_every_retrieval_channel_is_a_ranker(self) -> None:
        # alone, under its kind, or kind-channel where a baseline holds the kind
        for kind in CHANNELS:
            name = (
                kind if kind not in ("popularity", "itemknn", "als", "bpr") else f"{kind}-channel"
            )
            assert RANKERS[name][1] is ChannelRankerConfig
            ranker = make_ranker(name)
            assert ranker.spec is not None
            assert ranker.spec[0] == name

    def test_entries_are_factories_and_config_models(self) -> None:
        assert RANKERS["popularity"] == (PopularityRanker, PopularityConfig)
        assert "popularity" in RANKERS
        assert "gru4rec" not in RANKERS
        with pytest.raises(KeyError):
            RANKERS["gru4rec"]
        assert len(RANKERS) == len(list(RANKERS))

    def test_every_entry_resolves_to_its_ranker_and_config(self) -> None:
        from pydantic import BaseModel

        for name in RANKERS:
            factory, config = RANKERS[name]
            assert callable(factory), name
            assert issubclass(config, BaseModel), name
        assert RANKERS["llm"][1].__name__ == "LLMRankerConfig"
        assert RANKERS["retrieval"][1].__name__ == "RetrievalRankerConfig"

    def test_known_ranker(self) -> None:
        assert known_ranker("llm") == "llm"
        with pytest.raises(ValueError, match="'gru4rec' is not known; allowed: als, als-channel"):
            known_ranker("gru4rec")


class TestOnMovieLens:
    def test_random_is_near_chance_and_popularity_beats_it(
        self, llamarec_data: ProtocolData
    ) -> None:
        chance = evaluate(llamarec_data, make_ranker("random"), split="test")
        # with 3,650 items a random ranking expects ndcg@10 of about 0.0007
        assert chance.metrics["ndcg@10"] < 0.01
        assert chance.metrics["recall@20"] < 0.03
        popular = evaluate(llamarec_data, make_ranker("popularity"), split="test")
        assert popular.metrics["ndcg@10"] > chance.metrics["ndcg@10"]
        assert popular.metrics["recall@10"] > chance.metrics["recall@10"]
