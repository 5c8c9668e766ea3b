"""Collaborative channels (item-kNN, ALS and BPR vectors in the vector index) and the
recency-weighted EASE, on the tiny dataset."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from ragrec.errors import ConfigError
from ragrec.retrieval import (
    ALSChannel,
    ALSChannelConfig,
    BPRChannel,
    BPRChannelConfig,
    ChannelContext,
    ChannelSpec,
    EaseChannel,
    EaseConfig,
    IndexConfig,
    ItemKNNChannel,
    ItemKNNChannelConfig,
    RetrievalQuery,
    Retriever,
    RetrieverConfig,
    VectorChannel,
)

from .conftest import Tiny
from .test_channels import NOTHING, pos, proposed_ids


@pytest.fixture(scope="module")
def context(tiny: Tiny) -> ChannelContext:
    return ChannelContext.build(tiny.catalog, tiny.interactions, index_config=IndexConfig())


@pytest.fixture(scope="module")
def als(context: ChannelContext) -> ALSChannel:
    return ALSChannel(ALSChannelConfig(factors=16)).fit(context)


class TestItemKNN:
    def test_learns_co_occurrence(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = ItemKNNChannel().fit(context)
        assert proposed_ids(tiny, channel, [8]) == [9]  # no other item shares a user with 8
        assert set(proposed_ids(tiny, channel, [11], k=2)) == {12, 13}

    def test_the_newest_item_counts_most(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = ItemKNNChannel(ItemKNNChannelConfig(recency=0.5)).fit(context)
        assert set(proposed_ids(tiny, channel, [8, 11], k=2)) == {12, 13}
        assert proposed_ids(tiny, channel, [11, 8], k=1) == [9]

    def test_neighbourhood_is_cut(self, tiny: Tiny, context: ChannelContext) -> None:
        # with one neighbour each, 12 and 13 keep 11 (ties: the lower position), and no
        # item keeps 13
        channel = ItemKNNChannel(ItemKNNChannelConfig(neighbors=1)).fit(context)
        assert set(proposed_ids(tiny, channel, [11], k=5)) == {12, 13}
        assert proposed_ids(tiny, channel, [13], k=5) == []
        assert proposed_ids(tiny, ItemKNNChannel().fit(context), [13], k=5) != []

    def test_state_round_trip(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = ItemKNNChannel().fit(context)
        loaded = ItemKNNChannel().load_state(context, channel.state())
        for hist in ([8], [10, 1], [14, 18, 20]):
            assert proposed_ids(tiny, loaded, hist) == proposed_ids(tiny, channel, hist)

    def test_score_items_match_proposals(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = ItemKNNChannel().fit(context)
        query = RetrievalQuery("u", pos(tiny, 10, 1))
        (got,) = channel.propose([query], 5, blocked=[query.history])
        (scores,) = channel.score_items([query], [got.positions])
        np.testing.assert_allclose(scores, got.scores)

    def test_contributions_sum_to_the_score(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = ItemKNNChannel().fit(context)
        query = RetrievalQuery("u", pos(tiny, 10, 1, 10, 2))
        items = pos(tiny, 3, 4, 5)
        terms = channel.contributions(query, items)
        (scores,) = channel.score_items([query], [items])
        np.testing.assert_allclose(terms.sum(axis=1), np.where(np.isfinite(scores), scores, 0))
        assert terms[:, 0].sum() == 0  # the first 10 repeats later: credited there


class TestEaseRecency:
    def test_recency_one_is_plain_ease(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = EaseChannel(EaseConfig(recency=1.0)).fit(context)
        query = RetrievalQuery("u", pos(tiny, 8, 11))
        got = channel.score([query])[0]
        np.testing.assert_allclose(got, channel._b[pos(tiny, 8, 11)].sum(axis=0), rtol=1e-6)

    def test_the_newest_item_counts_most(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = EaseChannel(EaseConfig(recency=0.5)).fit(context)
        assert proposed_ids(tiny, channel, [8, 11], k=1)[0] in (12, 13)
        assert proposed_ids(tiny, channel, [11, 8], k=1) == [9]

    def test_matches_the_float64_inverse(self, context: ChannelContext) -> None:
        channel = EaseChannel(EaseConfig(l2=5.0)).fit(context)
        x = sp.csr_matrix(
            (
                np.ones(sum(len(s) for s in context.sequences.values())),
                (
                    np.repeat(
                        np.arange(len(context.sequences)),
                        [len(s) for s in context.sequences.values()],
                    ),
                    np.concatenate(list(context.sequences.values())),
                ),
            ),
            shape=(len(context.sequences), len(context.catalog)),
        )
        x.data[:] = 1.0
        gram = (x.T @ x).toarray() + 5.0 * np.eye(len(context.catalog))
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        b[np.diag_indices_from(b)] = 0
        np.testing.assert_allclose(channel._b, b, atol=1e-5)

    def test_item_scores_terms_and_state(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = EaseChannel().fit(context)
        query = RetrievalQuery("u", pos(tiny, 10, 11, 10, 12))
        items = pos(tiny, 13, 1, 8)
        full = channel.score([query])[0][items]
        (scores,) = channel.score_items([query], [items])
        np.testing.assert_allclose(scores, full, rtol=1e-6)
        terms = channel.contributions(query, items)
        np.testing.assert_allclose(terms.sum(axis=1), full, rtol=1e-5, atol=1e-9)
        assert not terms[:, 0].any()  # 10 counts once, at its newest occurrence
        loaded = EaseChannel().load_state(context, channel.state())
        np.testing.assert_array_equal(loaded.score([query]), channel.score([query]))
        with pytest.raises(ConfigError, match=r"saved matrix is \(2, 2\)"):
            EaseChannel().load_state(context, {"b": np.zeros((2, 2), np.float32)})

    def test_recency_is_checked(self) -> None:
        with pytest.raises(ValidationError, match="recency"):
            EaseConfig(recency=0)


class TestALS:
    def test_learns_co_occurrence(self, tiny: Tiny, als: ALSChannel) -> None:
        assert proposed_ids(tiny, als, [8])[0] == 9
        assert set(proposed_ids(tiny, als, [10, 11], k=2)) == {12, 13}

    def test_fold_in_is_implicits(self, tiny: Tiny, als: ALSChannel) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = als.config
        model = AlternatingLeastSquares(
            factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha
        )
        model.item_factors = als.item_vectors.copy()
        model.user_factors = np.zeros((1, cfg.factors), dtype=np.float32)
        hist = pos(tiny, 10, 1, 2)
        weights = cfg.recency ** np.array([2.0, 1.0, 0.0])
        row = sp.csr_matrix((weights, (np.zeros(3, int), hist)), shape=(1, len(tiny.catalog)))
        expected = model.recalculate_user(0, row)
        got = als.user_vectors([RetrievalQuery("u", hist)])[0]
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)

    def test_cold_users_get_nothing(self, als: ALSChannel) -> None:
        (got,) = als.propose([RetrievalQuery("new")], 5, blocked=[NOTHING])
        assert len(got) == 0


class TestBPR:
    def test_user_vector_is_the_recency_mean(self, tiny: Tiny, context: ChannelContext) -> None:
        channel = BPRChannel(BPRChannelConfig(factors=8, recency=0.5)).fit(context)
        hist = pos(tiny, 8, 9)
        got = channel.user_vectors([RetrievalQuery("u", hist)])[0]
        y = channel.item_vectors[hist].astype(np.float64)
        expected = (0.5 * y[0] + 1.0 * y[1]) / 1.5
        np.testing.assert_allclose(got[:-1], expected[:-1], rtol=1e-5)
        assert got[-1] == 1.0  # against the item bias
        assert len(proposed_ids(tiny, channel, [8, 9], k=5)) == 5


@pytest.mark.parametrize(
    "channel",
    [
        ALSChannel(ALSChannelConfig(factors=8)),
        BPRChannel(BPRChannelConfig(factors=8, iterations=20)),
    ],
    ids=["als", "bpr"],
)
class TestVectorChannels:
    """What every channel that searches its own item vectors must do."""

    def test_faiss_matches_exact_search(
        self, tiny: Tiny, context: ChannelContext, channel: VectorChannel
    ) -> None:
        channel.fit(context)
        exact = type(channel)(channel.config)
        exact.load_state(
            ChannelContext.build(
                tiny.catalog, tiny.interactions, index_config=IndexConfig(backend="numpy")
            ),
            channel.state(),
        )
        assert channel.index.backend == "faiss"
        assert exact.index.backend == "numpy"
        for hist in ([8], [10, 1], [14, 18, 20], [10, 5, 7]):
            h = pos(tiny, *hist)
            query = RetrievalQuery("u", h)
            (a,) = channel.propose([query], 10, blocked=[h])
            (b,) = exact.propose([query], 10, blocked=[h])
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
            (scores,) = channel.score_items([query], [a.positions])
            np.testing.assert_allclose(scores, a.scores, rtol=1e-4, atol=1e-5)

    def test_state_round_trip(
        self, tiny: Tiny, context: ChannelContext, channel: VectorChannel
    ) -> None:
        channel.fit(context)
        loaded = type(channel)(channel.config).load_state(context, dict(channel.state()))
        assert proposed_ids(tiny, loaded, [10, 1]) == proposed_ids(tiny, channel, [10, 1])

    def test_refuses_an_incomplete_state(
        self, context: ChannelContext, channel: VectorChannel
    ) -> None:
        with pytest.raises(ConfigError, match=r"saved state lacks \['known'\]"):
            type(channel)(channel.config).load_state(context, {"vectors": np.zeros((24, 8))})

    def test_in_a_retriever(self, tiny: Tiny, channel: VectorChannel) -> None:
        config = RetrieverConfig(
            channels=[ChannelSpec(kind=channel.kind, options=channel.config.model_dump())],
            n_candidates=4,
        )
        retriever = Retriever(config).fit(tiny.catalog, tiny.interactions)
        result = retriever.retrieve(retriever.query(0))
        assert len(result.candidates) == 4
        assert not {c.item_id for c in result.candidates} & {10, 1, 2, 3, 4}
