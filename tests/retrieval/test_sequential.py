"""The SASRec channel on the tiny dataset: it learns the order of items, is seeded, is
searched through the vector index, saves and loads, and refits incrementally."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.retrieval import (
    ChannelContext,
    ChannelSpec,
    IndexConfig,
    RetrievalQuery,
    Retriever,
    RetrieverConfig,
    SASRecChannel,
    SASRecConfig,
)

from .conftest import MOVIES, Tiny, tiny_catalog
from .test_channels import pos, proposed_ids

SMALL = SASRecConfig(
    dim=16, max_len=8, epochs=20, batch_size=8, dropout=0.1, threads=1, device="cpu"
)


@pytest.fixture(scope="module")
def context(tiny: Tiny) -> ChannelContext:
    return ChannelContext.build(tiny.catalog, tiny.interactions, index_config=IndexConfig())


@pytest.fixture(scope="module")
def sasrec(context: ChannelContext) -> SASRecChannel:
    return SASRecChannel(SMALL).fit(context)


def test_learns_what_comes_next(tiny: Tiny, sasrec: SASRecChannel) -> None:
    assert proposed_ids(tiny, sasrec, [10, 1], k=1) == [2]
    assert proposed_ids(tiny, sasrec, [10, 1, 2], k=1) == [3]
    assert proposed_ids(tiny, sasrec, [10, 5], k=1) == [7]
    assert proposed_ids(tiny, sasrec, [10, 11], k=1) == [12]
    assert sasrec.losses[-1] < sasrec.losses[0]


def test_is_seeded(context: ChannelContext, sasrec: SASRecChannel) -> None:
    again = SASRecChannel(SMALL).fit(context)
    np.testing.assert_array_equal(again.item_vectors, sasrec.item_vectors)
    other = SASRecChannel(SMALL.model_copy(update={"seed": 1})).fit(context)
    assert not np.array_equal(other.item_vectors, sasrec.item_vectors)


def test_search_matches_exact_scores(tiny: Tiny, sasrec: SASRecChannel) -> None:
    query = RetrievalQuery("u", pos(tiny, 10, 5, 7))
    (got,) = sasrec.propose([query], 10, blocked=[query.history])
    vector = sasrec.user_vectors([query])[0].astype(np.float64)
    exact = sasrec.item_vectors.astype(np.float64) @ vector
    exact[query.history] = -np.inf
    exact[~sasrec.known_items] = -np.inf  # never seen in training: not in the index
    np.testing.assert_array_equal(got.positions, np.argsort(-exact, kind="stable")[:10])
    np.testing.assert_allclose(got.scores, exact[got.positions], rtol=1e-5)
    (scores,) = sasrec.score_items([query], [got.positions])
    np.testing.assert_allclose(scores, got.scores, rtol=1e-5)


def test_reads_only_the_newest_max_len_items(tiny: Tiny, sasrec: SASRecChannel) -> None:
    short = RetrievalQuery("u", pos(tiny, 10, 1, 2))
    long = RetrievalQuery("u", pos(tiny, *([8, 9] * 10), 10, 1, 2))
    a, b = sasrec.user_vectors([short, long])
    assert not np.allclose(a, b)  # the old items reach the window of 8
    window = RetrievalQuery("u", long.history[-SMALL.max_len :])
    np.testing.assert_allclose(sasrec.user_vectors([window])[0], b, rtol=1e-5)
    # a batch is cut to its longest history: alone, the short one gives the same vector
    np.testing.assert_allclose(sasrec.user_vectors([short])[0], a, rtol=1e-5, atol=1e-6)


def test_state_round_trip(tiny: Tiny, context: ChannelContext, sasrec: SASRecChannel) -> None:
    loaded = SASRecChannel(SMALL).load_state(context, sasrec.state())
    for hist in ([10, 1], [8], [14, 18]):
        assert proposed_ids(tiny, loaded, hist) == proposed_ids(tiny, sasrec, hist)
    assert loaded.losses == sasrec.losses


def test_state_for_another_config_is_refused(
    context: ChannelContext, sasrec: SASRecChannel
) -> None:
    with pytest.raises(ConfigError, match="saved weights do not fit this config"):
        SASRecChannel(SMALL.model_copy(update={"dim": 8})).load_state(context, sasrec.state())


def test_partial_fit_continues_and_takes_new_items(
    tiny: Tiny, context: ChannelContext, sasrec: SASRecChannel
) -> None:
    channel = SASRecChannel(SMALL).load_state(context, sasrec.state())
    movies = [*MOVIES, (99, "Alien 3 (1992)", "Horror|Sci-Fi", 1992, "prison planet")]
    catalog = tiny_catalog(movies)
    rows = tiny.interactions
    more = Interactions(
        user_ids=np.concatenate([rows.user_ids, np.arange(100, 110)]),
        item_ids=np.concatenate([rows.item_ids, np.full(10, 99)]),
        values=np.concatenate([rows.values, np.full(10, 4.0)]),
        timestamps=np.concatenate([rows.timestamps, np.full(10, rows.timestamps.max() + 1)]),
    )
    old_vector = channel.item_vectors[tiny.catalog.positions([2])[0]].copy()
    channel.partial_fit(ChannelContext.build(catalog, more), epochs=2)
    assert len(channel.losses) == SMALL.epochs + 2
    assert channel.item_vectors.shape == (len(catalog), SMALL.dim)
    assert channel.index.item_ids[-1] == 99 or 99 in channel.index
    new_vector = channel.item_vectors[catalog.positions([2])[0]]
    assert np.corrcoef(old_vector, new_vector)[0, 1] > 0.9  # kept, then trained a little
    assert proposed_ids(_tiny(catalog, more), channel, [10, 1], k=1) == [2]


def _tiny(catalog: Catalog, rows: Interactions) -> Tiny:
    return Tiny(catalog, rows)


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="heads=3 must divide dim=16"):
        SASRecConfig(dim=16, heads=3)
    with pytest.raises(ValidationError, match="epoch"):
        SASRecConfig(epoch=3)  # type: ignore[call-arg]


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the error without a GPU"
)
def test_cuda_without_a_gpu_is_an_error(context: ChannelContext) -> None:
    with pytest.raises(ConfigError, match="device='cuda' but torch sees no GPU"):
        SASRecChannel(SMALL.model_copy(update={"device": "cuda"})).fit(context)


def test_in_a_retriever(tiny: Tiny) -> None:
    config = RetrieverConfig(
        channels=[ChannelSpec(kind="sasrec", options=SMALL.model_dump())], n_candidates=3
    )
    retriever = Retriever(config).fit(tiny.catalog, tiny.interactions)
    result = retriever.retrieve(RetrievalQuery("u", pos(tiny, 10, 11)))
    assert result.candidates[0].item_id == 12
    assert result.candidates[0].provenance[0].channel == "sasrec"
