"""Fusion fit on held-out targets: the search's ranks are the retriever's, a useful
channel gains weight over a useless one, and the config is checked."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from ragrec.data import Interactions
from ragrec.retrieval import (
    ChannelSpec,
    ChannelWeights,
    FusionConfig,
    FusionFitConfig,
    RetrievalQuery,
    Retriever,
    RetrieverConfig,
    apply_fusion,
    fit_fusion,
    holdout_last,
)
from ragrec.retrieval._fusion_fit import _pool, _ranks

from .conftest import Tiny


@pytest.fixture(scope="module")
def split(tiny: Tiny) -> tuple[Interactions, Interactions]:
    return holdout_last(tiny.interactions)


@pytest.fixture(scope="module")
def retriever(tiny: Tiny, split: tuple[Interactions, Interactions]) -> Retriever:
    config = RetrieverConfig(
        channels=[
            ChannelSpec(kind="transition"),
            ChannelSpec(kind="popularity", weight=1.0),
            ChannelSpec(kind="itemknn", weight=0.5),
        ],
        fusion=FusionConfig(depth=10),
    )
    return Retriever(config).fit(tiny.catalog, split[0])


def held_out(
    retriever: Retriever, tiny: Tiny, held: Interactions
) -> tuple[list[RetrievalQuery], np.ndarray]:
    queries = [retriever.query(u) for u in held.user_ids]
    return queries, tiny.catalog.positions(held.item_ids)


def test_holdout_last_takes_each_users_newest_row(tiny: Tiny) -> None:
    rest, held = holdout_last(tiny.interactions)
    assert len(rest) + len(held) == len(tiny.interactions)
    # users with 2 rows (20-29) keep them: too short to hold one out
    assert sorted(held.user_ids.tolist()) == [*range(20), *range(30, 48)]
    newest = dict(zip(held.user_ids.tolist(), held.item_ids.tolist(), strict=True))
    assert newest[0] == 4
    assert newest[10] == 23
    assert newest[40] == 20


@pytest.mark.parametrize("method", ["score", "rrf"])
def test_search_ranks_are_the_retrievers(
    tiny: Tiny,
    retriever: Retriever,
    split: tuple[Interactions, Interactions],
    method: str,
) -> None:
    queries, targets = held_out(retriever, tiny, split[1])
    config = retriever.config.model_copy(
        update={"fusion": retriever.config.fusion.model_copy(update={"method": method})}
    )
    same = Retriever(config)
    same.__dict__.update({k: v for k, v in retriever.__dict__.items() if k != "config"})
    names = [c.name for c in retriever.channels]
    lists = [
        [c.propose([q], 10, blocked=[q.history])[0] for c in retriever.channels] for q in queries
    ]
    pool = _pool(lists, names, targets, method, config.fusion)
    rng = np.random.default_rng(0)
    for _ in range(5):
        w = rng.choice([0.0, 0.1, 0.5, 1.0, 2.0], len(names))
        w[0] = max(w[0], 0.1)
        got = _ranks(pool, w)
        weights = ChannelWeights(dict(zip(names, w.tolist(), strict=True)))
        # k = depth: every channel proposes exactly what the search pooled
        results = same.retrieve_batch(queries, k=10, weights=weights)
        for rank, result, target in zip(got, results, targets, strict=True):
            found = [i for i, p in enumerate(result.positions.tolist(), 1) if p == target]
            if found:
                assert rank == found[0]
            else:
                assert rank > 10


def chains(tiny: Tiny) -> Interactions:
    """60 users walk the catalog in order (item i, then i + 1) for 3 to 8 steps from
    different starts: the next item is always the successor, rarely a popular one."""
    users, items, stamps = [], [], []
    ids = tiny.catalog.item_ids
    for u in range(60):
        start, length = u % 12, 3 + u % 6
        for j in range(length):
            users.append(u)
            items.append(int(ids[(start + j) % len(ids)]))
            stamps.append(1_000_000 + u * 1000 + j)
    n = len(users)
    return Interactions(
        user_ids=np.array(users),
        item_ids=np.array(items),
        values=np.ones(n),
        timestamps=np.array(stamps, dtype=np.float64),
    )


def test_a_useful_channel_gains_weight(tiny: Tiny) -> None:
    rest, held = holdout_last(chains(tiny))
    config = RetrieverConfig(  # a bad prior: popularity drowns the transitions
        channels=[
            ChannelSpec(kind="transition", weight=0.05),
            ChannelSpec(kind="popularity", weight=3.0),
        ]
    )
    retriever = Retriever(config).fit(tiny.catalog, rest)
    queries, targets = held_out(retriever, tiny, held)
    fit = fit_fusion(retriever, queries, targets, config=FusionFitConfig(bootstrap=5))
    ratio = fit.weights["transition"] / max(fit.weights["popularity"], 1e-9)
    assert ratio > 10 * 0.05 / 3.0, fit
    assert fit.value > fit.prior_value
    assert fit.value >= fit.alone["popularity"]
    assert fit.alone["transition"] > fit.alone["popularity"]
    assert max(fit.weights.values()) == 1.0
    assert fit.users == len(queries)
    assert set(fit.by_method) == {"score", "rrf"}
    before = dict(retriever.weights.global_weights)
    assert dict(retriever.weights.global_weights) == before  # the retriever is not changed
    assert fit.as_dict()["weights"] == dict(fit.weights)


def test_apply_fusion_sets_the_global_prior_and_keeps_users(
    tiny: Tiny, split: tuple[Interactions, Interactions]
) -> None:
    config = RetrieverConfig(
        channels=[ChannelSpec(kind="transition"), ChannelSpec(kind="popularity")]
    )
    retriever = Retriever(config).fit(tiny.catalog, split[0])
    retriever.weights = retriever.weights.with_user(3, {"popularity": 2.0})
    queries, targets = held_out(retriever, tiny, split[1])
    fit = fit_fusion(
        retriever, queries, targets, config=FusionFitConfig(bootstrap=0, methods=("rrf",))
    )
    apply_fusion(retriever, fit)
    assert retriever.config.fusion.method == "rrf"
    assert retriever.weights.for_user(None) == dict(fit.weights)
    assert retriever.weights.for_user(3)["popularity"] == 2.0


def test_fit_is_deterministic(
    tiny: Tiny, retriever: Retriever, split: tuple[Interactions, Interactions]
) -> None:
    queries, targets = held_out(retriever, tiny, split[1])
    a = fit_fusion(retriever, queries, targets, config=FusionFitConfig(bootstrap=3))
    b = fit_fusion(retriever, queries, targets, config=FusionFitConfig(bootstrap=3))
    assert a.weights == b.weights
    assert a.method == b.method


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="'hit@3' is not ndcg@K, recall@K or mrr@K"):
        FusionFitConfig(metric="hit@3")
    with pytest.raises(ValidationError, match="must hold finite weights >= 0"):
        FusionFitConfig(grid=(0.0, -1.0))
    with pytest.raises(ValidationError, match="bootstraps"):
        FusionFitConfig(bootstraps=3)  # type: ignore[call-arg]


def test_needs_users_with_a_history(retriever: Retriever) -> None:
    from ragrec.errors import ConfigError

    with pytest.raises(ConfigError, match="needs held-out users with a history"):
        fit_fusion(retriever, [RetrievalQuery("new")], [0])
    with pytest.raises(ConfigError, match="2 targets for 1 queries"):
        fit_fusion(retriever, [RetrievalQuery("new")], [0, 1])
