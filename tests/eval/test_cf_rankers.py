"""Tests for ragrec.eval._cf_rankers: item-item kNN, ALS and BPR baselines."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval import (
    ALSConfig,
    ALSRanker,
    BPRConfig,
    BPRRanker,
    ItemKNNConfig,
    ItemKNNRanker,
    ProtocolData,
    Ranker,
    UserBatch,
    evaluate,
    make_ranker,
)

N_A = N_B = 10  # two disjoint item clusters: positions 0..9 (A), 10..19 (B)
COLD = N_A + N_B  # one catalog item with no training rows
# small, fast settings (als: rank 2 for the two planted clusters); threads=1 by default
SMALL: dict[str, dict[str, Any]] = {
    "itemknn": {"neighbors": 5},
    "als": {"factors": 2, "iterations": 10, "regularization": 0.1, "alpha": 5.0},
    "bpr": {"factors": 8, "iterations": 200, "learning_rate": 0.05},
}
CLASSES: dict[str, type[Ranker]] = {"itemknn": ItemKNNRanker, "als": ALSRanker, "bpr": BPRRanker}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    ids = np.arange(100, 100 + COLD + 1)
    return Catalog(item_ids=ids, titles=np.array([f"m{i}" for i in ids], dtype=object))


@pytest.fixture(scope="module")
def rows(catalog: Catalog) -> Interactions:
    """40 users, the first 20 see only cluster A items, the others only cluster B."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(40):
        lo = 0 if user < 20 else N_A
        seen = rng.choice(np.arange(lo, lo + N_A), size=6, replace=False)
        users += [user] * len(seen)
        items += list(catalog.item_ids[seen])
    users.append(3)  # an item id outside the catalog is ignored
    items.append(999)
    return Interactions(
        user_ids=np.array(users),
        item_ids=np.array(items),
        values=np.ones(len(users)),
        timestamps=np.arange(len(users)),
    )


def _fit(name: str, catalog: Catalog, rows: Interactions, **extra: Any) -> Ranker:
    return make_ranker(name, {**SMALL[name], **extra}).fit(catalog, rows)


def _batch(*histories: list[int], user_ids: list[Any] | None = None) -> UserBatch:
    ids = user_ids if user_ids is not None else [f"new{i}" for i in range(len(histories))]
    return UserBatch(
        np.array(ids, dtype=object), tuple(np.array(h, dtype=np.int64) for h in histories)
    )


@pytest.mark.parametrize("name", ["itemknn", "als", "bpr"])
class TestConformance:
    def test_by_name(self, name: str) -> None:
        ranker = make_ranker(name, SMALL[name])
        assert isinstance(ranker, CLASSES[name])
        assert ranker.name == name

    def test_unknown_key_is_named(self, name: str) -> None:
        with pytest.raises(ConfigError, match="neighbours_typo"):
            make_ranker(name, {"neighbours_typo": 3})

    def test_invalid_value(self, name: str) -> None:
        with pytest.raises(ConfigError, match="recency"):
            make_ranker(name, {"recency": 0})

    def test_score_before_fit(self, name: str) -> None:
        with pytest.raises(ConfigError, match=rf"{name}.*fit"):
            make_ranker(name).score(_batch([0, 1]))

    def test_shape_and_finite(self, name: str, catalog: Catalog, rows: Interactions) -> None:
        scores = _fit(name, catalog, rows).score(_batch([0, 1], [12], []))
        assert scores.shape == (3, len(catalog))
        assert scores.dtype == np.float64
        assert np.isfinite(scores).all()

    def test_deterministic(self, name: str, catalog: Catalog, rows: Interactions) -> None:
        batch = _batch([0, 1, 2], [15, 11], user_ids=[0, "new"])
        first = _fit(name, catalog, rows).score(batch)
        np.testing.assert_array_equal(first, _fit(name, catalog, rows).score(batch))
        other = _fit(name, catalog, rows, **({"seed": 1} if name != "itemknn" else {}))
        if name != "itemknn":
            assert not np.array_equal(first, other.score(batch))

    def test_recovers_clusters(self, name: str, catalog: Catalog, rows: Interactions) -> None:
        ranker = _fit(name, catalog, rows)
        # new users (fold-in from the history): A-history ranks every other A item above B
        scores = ranker.score(_batch([0, 1, 2], [10, 11, 12]))
        a, b = np.arange(3, N_A), np.arange(N_A + 3, N_A + N_B)
        assert scores[0, a].min() > scores[0, N_A:COLD].max()
        assert scores[1, b].min() > scores[1, :N_A].max()

    def test_empty_history(self, name: str, catalog: Catalog, rows: Interactions) -> None:
        scores = _fit(name, catalog, rows).score(_batch([], [0]))
        assert np.isfinite(scores).all()
        if name != "bpr":  # bpr ranks an empty history by its learnt item bias
            np.testing.assert_array_equal(scores[0], 0.0)

    def test_cold_item(self, name: str, catalog: Catalog, rows: Interactions) -> None:
        ranker = _fit(name, catalog, rows)
        scores = ranker.score(_batch([COLD], [COLD, 0]))
        assert np.isfinite(scores).all()
        # an item without training rows never outranks a trained one, and adds nothing
        assert (scores[:, COLD] <= scores.min(axis=1)).all()
        np.testing.assert_allclose(scores[1], ranker.score(_batch([0]))[0], rtol=1e-6)

    def test_history_outside_catalog(self, name: str, catalog: Catalog, rows: Interactions) -> None:
        ranker = _fit(name, catalog, rows)
        with pytest.raises(ConfigError, match=r"position 99 .*outside the catalog"):
            ranker.score(_batch([0, 99]))

    def test_report(self, name: str, catalog: Catalog, rows: Interactions) -> None:
        report = _fit(name, catalog, rows).report()
        assert report["fit_seconds"] >= 0
        assert report["train_users"] == 40
        assert report["train_items"] == COLD
        assert report["config"] == make_ranker(name, SMALL[name]).config.model_dump()  # type: ignore[attr-defined]

    def test_evaluates(self, name: str, catalog: Catalog, rows: Interactions) -> None:
        # the last A and B item of two users as validation targets: both ranked
        val = Interactions(
            user_ids=np.array([0, 30]),
            item_ids=catalog.item_ids[[0, N_A]],
            values=np.ones(2),
            timestamps=np.array([1000, 1000]),
        )
        train = rows.select(
            ~(np.isin(rows.user_ids, [0, 30]) & np.isin(rows.item_ids, val.item_ids))
        )
        data = ProtocolData("toy", catalog, train, val, val, ())
        result = evaluate(data, make_ranker(name, SMALL[name]), split="validation")
        assert 0 <= result.metrics["ndcg@10"] <= 1


class TestItemKNN:
    @pytest.fixture
    def tiny(self) -> tuple[Catalog, Interactions]:
        ids = np.array([7, 8, 9, 10])
        catalog = Catalog(item_ids=ids, titles=np.array(["a", "b", "c", "d"], dtype=object))
        # users: 1 -> {7, 8}, 2 -> {7, 8, 9}, 3 -> {9}; item 10 has no rows
        data = [(1, 7), (1, 8), (2, 7), (2, 8), (2, 9), (3, 9)]
        users, items = (np.array(c) for c in zip(*data, strict=True))
        return catalog, Interactions(
            user_ids=users, item_ids=items, values=np.ones(6), timestamps=np.arange(6)
        )

    def test_cosine_with_shrink(self, tiny: tuple[Catalog, Interactions]) -> None:
        catalog, rows = tiny
        ranker = ItemKNNRanker(ItemKNNConfig(neighbors=3, shrink=1.0, recency=1.0))
        ranker.fit(catalog, rows)
        # |U7|=2, |U8|=2, |U9|=2; co(7,8)=2, co(7,9)=co(8,9)=1
        s78, s79 = 2 / (2 + 1), 1 / (2 + 1)
        np.testing.assert_allclose(ranker.score(_batch([0]))[0], [0, s78, s79, 0])
        np.testing.assert_allclose(ranker.score(_batch([0, 1]))[0], [s78, s78, 2 * s79, 0])

    def test_neighbors_prune_per_target_item(self, tiny: tuple[Catalog, Interactions]) -> None:
        catalog, rows = tiny
        ranker = ItemKNNRanker(ItemKNNConfig(neighbors=1, recency=1.0)).fit(catalog, rows)
        # item 9's single neighbour is 7 (tie with 8 broken by catalog order)
        scores = ranker.score(_batch([1], [0]))
        assert scores[0, 2] == 0.0
        assert scores[1, 2] == pytest.approx(0.5)

    def test_recency_weights_recent_items(self, tiny: tuple[Catalog, Interactions]) -> None:
        catalog, rows = tiny
        ranker = ItemKNNRanker(ItemKNNConfig(neighbors=3, recency=0.5)).fit(catalog, rows)
        # sim(7, 8) = 1, sim(7, 9) = 0.5; the latest item weighs 1, the one before 0.5
        assert ranker.score(_batch([1, 2]))[0, 0] == pytest.approx(1 * 0.5 + 0.5 * 1)
        assert ranker.score(_batch([2, 1]))[0, 0] == pytest.approx(0.5 * 0.5 + 1 * 1)


class TestBPR:
    def test_trained_user_vector(self, catalog: Catalog, rows: Interactions) -> None:
        ranker = BPRRanker(BPRConfig(**SMALL["bpr"], user_vector="trained")).fit(catalog, rows)
        model = ranker._model
        assert model is not None
        known = ranker.score(_batch([0, 1], user_ids=[25]))
        expected = model.user_factors[ranker._users.get_loc(25)] @ model.item_factors.T
        np.testing.assert_allclose(known[0, :COLD], expected[:COLD], rtol=1e-5)
        # an unseen user falls back to the history mean
        mean = BPRRanker(BPRConfig(**SMALL["bpr"])).fit(catalog, rows)
        np.testing.assert_allclose(
            ranker.score(_batch([0, 1], user_ids=["new"])), mean.score(_batch([0, 1]))
        )


class TestALS:
    def test_fold_in_sees_items_outside_training_rows(
        self, catalog: Catalog, rows: Interactions
    ) -> None:
        ranker = ALSRanker(ALSConfig(**SMALL["als"])).fit(catalog, rows)
        # the same known user id with a B-cluster history ranks B first: scores follow
        # the batch history, not the user's training row
        scores = ranker.score(_batch([10, 11, 12], user_ids=[0]))
        assert scores[0, N_A + 3 : COLD].min() > scores[0, :N_A].max()


def test_real_data_beats_popularity(llamarec_data: ProtocolData) -> None:
    popularity = evaluate(llamarec_data, make_ranker("popularity"), split="validation")
    for name in ("itemknn", "als", "bpr"):
        result = evaluate(llamarec_data, make_ranker(name), split="validation")
        assert result.metrics["ndcg@10"] > 2 * popularity.metrics["ndcg@10"], name
