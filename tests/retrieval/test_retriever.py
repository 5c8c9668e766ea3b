"""The retriever: fusion, filters, cold start, weights, and quality on ml-latest-small."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ragrec.data import Catalog, Interactions
from ragrec.errors import ConfigError
from ragrec.eval import ProtocolData, evaluate, make_ranker
from ragrec.retrieval import (
    CachedEmbedder,
    Candidate,
    CandidateList,
    ChannelCandidates,
    ChannelSpec,
    ChannelWeights,
    Filters,
    FusionConfig,
    ItemEmbeddings,
    Provenance,
    RetrievalQuery,
    Retriever,
    RetrieverConfig,
    SentenceTransformerEmbedder,
    blocked_positions,
    fuse,
)

from .conftest import MOVIES, Tiny, tiny_catalog

GENRES = sorted({g for m in MOVIES for g in m[2].split("|")})
SCI_FI_HORROR = {1, 2, 3, 4}


def allowed_positions(catalog: Catalog, flt: Filters, history: np.ndarray) -> set[int]:
    """The filter rules written out item by item (the oracle for the retriever)."""
    seen = set(np.asarray(history).tolist())
    wanted = {g.lower() for g in flt.genres_any or ()}
    unwanted = {g.lower() for g in flt.genres_none}
    out = set()
    for i, item_id in enumerate(catalog.item_ids.tolist()):
        genres = {g.lower() for g in catalog.categories[i]}
        year = catalog.years[i]
        if flt.include_ids is not None and item_id not in flt.include_ids:
            continue
        if item_id in flt.exclude_ids:
            continue
        if flt.genres_any is not None and not genres & wanted:
            continue
        if genres & unwanted:
            continue
        if flt.year_min is not None and not year >= flt.year_min:
            continue
        if flt.year_max is not None and not year <= flt.year_max:
            continue
        if flt.exclude_seen and i in seen:
            continue
        out.add(i)
    return out


def check_list(result: CandidateList, catalog: Catalog, allowed: set[int], k: int) -> None:
    """The invariants of every candidate list."""
    positions = result.positions.tolist()
    assert len(result) == min(k, len(allowed))
    assert len(set(positions)) == len(positions)
    assert set(positions) <= allowed
    assert (np.diff(result.scores) <= 1e-12).all()
    for cand in result.candidates:
        assert cand.item_id == catalog.item_ids[cand.position]
        assert cand.title == catalog.titles[cand.position]
        assert cand.provenance, "every candidate names the channels that proposed it"
        assert set(cand.channels) <= set(result.channels)
        assert all(p.rank >= 1 for p in cand.provenance)


class TestCandidates:
    def test_every_known_user_gets_n_unseen_candidates(
        self, tiny: Tiny, tiny_retriever: Retriever
    ) -> None:
        for user in tiny.interactions.users().tolist():
            query = tiny_retriever.query(user)
            result = tiny_retriever.retrieve(query)
            assert result.user_id == user
            assert not result.cold_start
            check_list(
                result, tiny.catalog, allowed_positions(tiny.catalog, Filters(), query.history), 8
            )
            assert result.fusion == "score"
            assert result.weights == dict(tiny_retriever.weights.global_weights)
            assert {"transition", "ease", "semantic", "popularity", "fusion", "total"} <= set(
                result.seconds
            )

    def test_sequential_pattern_wins(self, tiny_retriever: Retriever) -> None:
        # Users 0-9 watched 10, 1, 2, 3, 4; someone who watched 10 and 1 gets 2 first.
        query = RetrievalQuery("x", tiny_retriever.catalog.positions([10, 1]))  # type: ignore[union-attr]
        result = tiny_retriever.retrieve(query, k=3)
        assert result.item_ids[0] == 2
        first = {p.channel: p.rank for p in result.candidates[0].provenance}
        assert first["transition"] == 1

    def test_batch_equals_one_by_one(self, tiny: Tiny, tiny_retriever: Retriever) -> None:
        queries = [tiny_retriever.query(u) for u in (0, 15, 25, 45, "nobody")]
        queries.append(tiny_retriever.query("nobody", text="space horror"))
        batch = tiny_retriever.retrieve_batch(queries, k=6)
        for query, together in zip(queries, batch, strict=True):
            alone = tiny_retriever.retrieve(query, k=6)
            assert together.item_ids == alone.item_ids
            np.testing.assert_allclose(together.scores, alone.scores, rtol=1e-6)

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        history=st.lists(st.integers(0, len(MOVIES) - 1), max_size=8),
        k=st.integers(1, 30),
        text=st.sampled_from([None, "space horror", "a romantic comedy"]),
        exclude_seen=st.booleans(),
        include=st.none() | st.lists(st.sampled_from([*range(1, 25), 99]), max_size=10),
        exclude=st.lists(st.sampled_from([*range(1, 25), 99]), max_size=6),
        genres_any=st.none() | st.lists(st.sampled_from(GENRES), max_size=3),
        genres_none=st.lists(st.sampled_from([g.lower() for g in GENRES]), max_size=2),
        year_min=st.none() | st.integers(1940, 2011),
        year_span=st.none() | st.integers(0, 70),
    )
    def test_invariants_under_random_filters(
        self,
        tiny: Tiny,
        tiny_retriever: Retriever,
        history: list[int],
        k: int,
        text: str | None,
        exclude_seen: bool,
        include: list[int] | None,
        exclude: list[int],
        genres_any: list[str] | None,
        genres_none: list[str],
        year_min: int | None,
        year_span: int | None,
    ) -> None:
        year_max = None if year_span is None else (year_min or 1940) + year_span
        flt = Filters(
            exclude_seen=exclude_seen,
            include_ids=include,
            exclude_ids=exclude,
            genres_any=genres_any,
            genres_none=genres_none,
            year_min=year_min,
            year_max=year_max,
        )
        hist = np.array(history, dtype=np.int64)
        query = RetrievalQuery("h", hist, text=text)
        result = tiny_retriever.retrieve(query, k=k, filters=flt)
        allowed = allowed_positions(tiny.catalog, flt, hist)
        check_list(result, tiny.catalog, allowed, k)
        assert result.cold_start == (len(history) == 0)
        if exclude_seen:
            assert not set(result.positions.tolist()) & set(history)
        assert set(blocked_positions(tiny.catalog, flt, hist).tolist()) == (
            set(range(len(tiny.catalog))) - allowed
        )


class TestProvenance:
    @pytest.fixture(scope="class")
    @classmethod
    def shallow(cls, tiny: Tiny, embedder: SentenceTransformerEmbedder) -> Retriever:
        """Channels propose only k items each, so provenance differs between candidates."""
        config = RetrieverConfig(n_candidates=5, fusion=FusionConfig(depth=1))
        return Retriever(config, embedder=embedder).fit(tiny.catalog, tiny.interactions)

    @pytest.mark.parametrize(("user", "text"), [(0, None), (25, None), (45, "comedy")])
    def test_lists_the_channels_and_their_ranks(
        self, tiny: Tiny, shallow: Retriever, user: int, text: str | None
    ) -> None:
        query = shallow.query(user, text=text)
        result = shallow.retrieve(query)
        blocked = blocked_positions(tiny.catalog, Filters(), query.history)
        own: dict[str, list[int]] = {}
        scores: dict[str, list[float]] = {}
        for channel in shallow.channels:
            (lst,) = channel.propose([query], 5, blocked=[blocked])
            own[channel.name] = lst.positions.tolist()
            scores[channel.name] = lst.scores.tolist()
        for cand in result.candidates:
            expected = [
                Provenance(name, own[name].index(cand.position) + 1, 0.0)
                for name in own
                if cand.position in own[name]
            ]
            assert [(p.channel, p.rank) for p in cand.provenance] == [
                (p.channel, p.rank) for p in expected
            ]
            for p in cand.provenance:
                assert p.score == pytest.approx(scores[p.channel][p.rank - 1])
        assert len({c.channels for c in result.candidates}) > 1


class TestColdStart:
    def test_unknown_user_gets_popularity_candidates(
        self, tiny: Tiny, tiny_retriever: Retriever
    ) -> None:
        query = tiny_retriever.query("nobody")
        assert query.cold
        assert query.text is None
        result = tiny_retriever.retrieve(query)
        assert result.cold_start
        assert result.user_id == "nobody"
        assert result.channels == ("popularity",)
        assert result.item_ids[0] == 10  # the most watched item
        check_list(result, tiny.catalog, set(range(len(tiny.catalog))), 8)

    def test_text_query_gets_related_semantic_candidates(
        self, tiny: Tiny, tiny_retriever: Retriever
    ) -> None:
        result = tiny_retriever.retrieve(tiny_retriever.query("nobody", text="space horror"))
        assert result.cold_start
        assert set(result.channels) == {"semantic", "popularity"}
        by_semantic = sorted(
            (p.rank, c.item_id)
            for c in result.candidates
            for p in c.provenance
            if p.channel == "semantic"
        )
        assert {item for _, item in by_semantic[:4]} == SCI_FI_HORROR
        only_text = tiny_retriever.weights.with_global({"semantic": 1.0, "popularity": 0.0})
        first = tiny_retriever.retrieve(
            tiny_retriever.query("nobody", text="space horror"), weights=only_text, k=4
        )
        assert set(first.item_ids) == SCI_FI_HORROR

    def test_query_text_on_a_small_catalog(self, embedder: SentenceTransformerEmbedder) -> None:
        movies = [
            (1, "Alien (1979)", "Horror|Sci-Fi", 1979, "space, creature"),
            (2, "Airplane! (1980)", "Comedy", 1980, "spoof"),
            (3, "Groundhog Day (1993)", "Comedy|Romance", 1993, "time loop"),
            (4, "Dumb and Dumber (1994)", "Comedy", 1994, "slapstick"),
        ]
        catalog = tiny_catalog(movies)
        rows = Interactions(
            user_ids=np.array([1, 1, 2, 3]),
            item_ids=np.array([2, 3, 4, 2]),
            values=np.ones(4),
            timestamps=np.arange(4),
        )
        retriever = Retriever(RetrieverConfig(n_candidates=4), embedder=embedder)
        retriever.fit(catalog, rows)
        result = retriever.retrieve(retriever.query("new", text="space horror"))
        assert result.cold_start
        assert result.item_ids[0] == 1
        assert len(result) == 4

    def test_a_new_item_is_retrievable_at_once(
        self, tiny: Tiny, embedder: SentenceTransformerEmbedder, tmp_path: Path
    ) -> None:
        config = RetrieverConfig(n_candidates=5, cache_dir=str(tmp_path))
        retriever = Retriever(config, embedder=embedder).fit(tiny.catalog, tiny.interactions)
        cached = retriever.embedder
        assert isinstance(cached, CachedEmbedder)
        assert cached.computed == len(tiny.catalog)
        sunshine = (25, "Sunshine (2007)", "Sci-Fi|Thriller", 2007, "sun, astronauts, spaceship")
        bigger = tiny_catalog([*MOVIES, sunshine])
        retriever.fit(bigger, tiny.interactions)
        assert cached.computed == len(tiny.catalog) + 1  # only the new item was embedded
        query = "astronauts fly a spaceship to reignite the dying sun"
        result = retriever.retrieve(retriever.query("nobody", text=query))
        assert result.item_ids[0] == 25
        assert ("semantic", 1) in [(p.channel, p.rank) for p in result.candidates[0].provenance]
        # For a warm user the semantic channel ranks it first too, although nobody has
        # watched it (the other channels have no evidence for it).
        warm = retriever.retrieve(retriever.query(0, text=query), k=25)
        (new,) = [c for c in warm.candidates if c.item_id == 25]
        assert {p.channel: p.rank for p in new.provenance}["semantic"] == 1

    def test_index_add_makes_an_item_searchable(
        self, tiny: Tiny, embedder: SentenceTransformerEmbedder
    ) -> None:
        items = ItemEmbeddings.build(tiny.catalog, embedder)
        assert items.vectors.shape == (24, 384)
        assert len(items.index) == 24
        text = "Sunshine (2007). Genres: Sci-Fi, Thriller. Tags: sun, astronauts, spaceship"
        items.index.add([25], embedder.encode([text]))
        query = embedder.encode(["astronauts fly a spaceship to reignite the dying sun"])
        assert items.index.search(query, 1).ids[0, 0] == 25


class TestFilters:
    @pytest.mark.parametrize(
        "flt",
        [
            Filters(exclude_ids=[5, 7, 11, 12, 13, 23]),
            Filters(include_ids=[1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 99]),
            Filters(genres_any=["Comedy"]),
            Filters(genres_any=["comedy", "ANIMATION"]),
            Filters(genres_none=["Comedy", "Drama"]),
            Filters(year_min=1980, year_max=1995),
            Filters(year_min=1995),
            Filters(exclude_seen=False),
        ],
        ids=lambda f: ",".join(f"{k}={v}" for k, v in f.model_dump(exclude_defaults=True).items()),
    )
    def test_respected_and_refilled(
        self, tiny: Tiny, tiny_retriever: Retriever, flt: Filters
    ) -> None:
        query = tiny_retriever.query(0)  # watched 10, 1, 2, 3, 4
        allowed = allowed_positions(tiny.catalog, flt, query.history)
        assert len(allowed) >= 5
        result = tiny_retriever.retrieve(query, k=5, filters=flt)
        check_list(result, tiny.catalog, allowed, 5)
        assert len(result) == 5

    def test_fewer_allowed_items_than_k(self, tiny: Tiny, tiny_retriever: Retriever) -> None:
        result = tiny_retriever.retrieve(
            tiny_retriever.query(10), k=8, filters=Filters(include_ids=[1, 2, 5, 99])
        )
        assert sorted(result.item_ids) == [1, 2]  # 5 is seen, 99 is not in the catalog
        nothing = tiny_retriever.retrieve(
            tiny_retriever.query(10), filters=Filters(genres_any=["Documentary"])
        )
        assert len(nothing) == 0

    def test_unseen_filter_keeps_history(self, tiny_retriever: Retriever) -> None:
        query = tiny_retriever.query(0)  # watched 10, 1, 2, 3, 4
        result = tiny_retriever.retrieve(query, k=24, filters=Filters(exclude_seen=False))
        assert {10, 1, 2, 3, 4} <= set(result.item_ids)
        assert len(result) == 24

    def test_config_is_closed(self) -> None:
        with pytest.raises(ValidationError, match="genre_any"):
            Filters(genre_any=["Comedy"])  # type: ignore[call-arg]


class TestChannelWeights:
    def test_json_round_trip(self) -> None:
        weights = ChannelWeights({"transition": 1.0, "semantic": 0.25}).with_user(
            7, {"semantic": 0.9}
        )
        weights = weights.with_user("alice", {"transition": 0.0})
        text = weights.to_json()
        assert json.loads(text)["per_user"] == {
            "7": {"semantic": 0.9},
            '"alice"': {"transition": 0.0},
        }
        again = ChannelWeights.from_json(text)
        assert again.to_json() == text
        assert again.for_user(7) == {"transition": 1.0, "semantic": 0.9}
        assert again.for_user("alice") == {"transition": 0.0, "semantic": 0.25}
        assert again.for_user(np.int64(7)) == again.for_user(7)
        assert again.for_user("7") == {"transition": 1.0, "semantic": 0.25}

    def test_with_user_returns_a_new_object(self) -> None:
        old = ChannelWeights({"a": 1.0, "b": 0.5})
        new = old.with_user(1, {"b": 2.0})
        assert new is not old
        assert old.for_user(1) == {"a": 1.0, "b": 0.5}
        assert dict(old.per_user) == {}
        assert new.for_user(1) == {"a": 1.0, "b": 2.0}
        assert new.for_user(2) == {"a": 1.0, "b": 0.5}
        assert new.without_user(1).for_user(1) == {"a": 1.0, "b": 0.5}
        assert new.with_global({"a": 3.0}).for_user(1) == {"a": 3.0, "b": 2.0}
        with pytest.raises(TypeError):
            old.global_weights["a"] = 5.0  # type: ignore[index]
        with pytest.raises(TypeError):
            new.per_user["1"]["b"] = 5.0  # type: ignore[index]

    @pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
    def test_bad_weights_are_config_errors(self, bad: float) -> None:
        with pytest.raises(ConfigError, match="must be a finite number >= 0"):
            ChannelWeights({"semantic": bad})
        with pytest.raises(ConfigError, match="for user 3 must be a finite number >= 0"):
            ChannelWeights({"semantic": 1.0}).with_user(3, {"semantic": bad})
        with pytest.raises(ConfigError, match="must be a finite number >= 0"):
            ChannelWeights.from_json(json.dumps({"global": {"a": 1}, "per_user": {"1": {"a": -1}}}))

    @pytest.mark.parametrize("text", ["not json", "{}", '{"global": 3}'])
    def test_bad_json_is_a_config_error(self, text: str) -> None:
        with pytest.raises(ConfigError, match="not valid weights JSON"):
            ChannelWeights.from_json(text)

    def test_per_user_weights_change_that_users_list(
        self, tiny: Tiny, tiny_retriever: Retriever
    ) -> None:
        popular_only = {name: 0.0 for name in tiny_retriever.weights.for_user(None)}
        popular_only["popularity"] = 1.0
        weights = tiny_retriever.weights.with_user(0, popular_only)
        mine = tiny_retriever.retrieve(tiny_retriever.query(0), weights=weights, k=5)
        assert mine.weights == popular_only
        # Popularity alone: after item 10 (seen), every item has 10 viewers or fewer; the
        # unseen ones with 10 come first, tied (broken by their best rank in any channel).
        assert set(mine.item_ids) <= {5, 7, 8, 9, 11, 12, 13, 23}
        assert all(c.score == pytest.approx(1.0) for c in mine.candidates)
        other = tiny_retriever.retrieve(tiny_retriever.query(15), weights=weights, k=5)
        default = tiny_retriever.retrieve(tiny_retriever.query(15), k=5)
        assert other.item_ids == default.item_ids
        assert other.weights == default.weights


class TestFuse:
    @pytest.fixture
    def lists(self) -> list[ChannelCandidates]:
        return [
            ChannelCandidates("a", np.array([0, 1, 2]), np.array([3.0, 2.0, 1.0])),
            ChannelCandidates("b", np.array([2, 3]), np.array([10.0, 0.0])),
            ChannelCandidates("c", np.empty(0, np.int64), np.empty(0)),
        ]

    @pytest.fixture
    def catalog(self) -> Catalog:
        return Catalog(
            item_ids=np.array([10, 11, 12, 13, 14]),
            titles=np.array(["t10", "t11", "t12", "t13", "t14"], dtype=object),
        )

    def test_score_fusion(self, lists: list[ChannelCandidates], catalog: Catalog) -> None:
        # a normalised: 1, .5, 0; b: 1, 0. Totals: 12 = 0 + 2*1, 10 = 1, 11 = .5, 13 = 0.
        got = fuse(lists, {"a": 1.0, "b": 2.0, "c": 5.0}, FusionConfig(method="score"), catalog, 9)
        assert [c.item_id for c in got] == [12, 10, 11, 13]
        assert [c.score for c in got] == pytest.approx([2.0, 1.0, 0.5, 0.0])
        assert got[0] == Candidate(
            item_id=12,
            position=2,
            title="t12",
            score=2.0,
            provenance=(Provenance("a", 3, 1.0, fused=0.0), Provenance("b", 1, 10.0, fused=2.0)),
        )
        assert isinstance(got[0].item_id, int)

    def test_rrf_fusion(self, lists: list[ChannelCandidates], catalog: Catalog) -> None:
        # rrf_k = 1: a gives 1/2, 1/3, 1/4; b gives 2/2, 2/3.
        cfg = FusionConfig(method="rrf", rrf_k=1.0)
        got = fuse(lists, {"a": 1.0, "b": 2.0}, cfg, catalog, 3)
        assert [c.item_id for c in got] == [12, 13, 10]
        assert [c.score for c in got] == pytest.approx([1.25, 2 / 3, 0.5])
        assert got[1].provenance == (Provenance("b", 2, 0.0, fused=pytest.approx(2 / 3)),)

    def test_ties_break_by_best_rank_then_position(self, catalog: Catalog) -> None:
        lists = [
            ChannelCandidates("a", np.array([4, 1, 3]), np.array([1.0, 0.5, 0.0])),
            ChannelCandidates("b", np.array([1, 4, 0]), np.array([1.0, 0.5, 0.0])),
        ]
        got = fuse(lists, {"a": 1.0, "b": 1.0}, FusionConfig(method="rrf"), catalog, 5)
        assert [c.position for c in got] == [1, 4, 0, 3]
        equal = fuse(lists, {"a": 1.0, "b": 1.0}, FusionConfig(method="score"), catalog, 5)
        assert [c.position for c in equal] == [1, 4, 0, 3]

    def test_zero_weight_still_gives_provenance(
        self, lists: list[ChannelCandidates], catalog: Catalog
    ) -> None:
        got = fuse(lists, {"a": 1.0}, FusionConfig(), catalog, 5)  # b has no weight
        assert [c.item_id for c in got][:2] == [10, 11]
        assert {c.item_id for c in got} == {10, 11, 12, 13}
        assert got[-1].provenance == (Provenance("b", 2, 0.0),)

    def test_config_checks(self) -> None:
        with pytest.raises(ValidationError):
            FusionConfig(method="borda")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            FusionConfig(rrf_k=0)


class TestBadInput:
    def test_empty_catalog(self, embedder: SentenceTransformerEmbedder) -> None:
        empty = Catalog(item_ids=np.array([], dtype=np.int64), titles=np.array([], dtype=object))
        rows = Interactions(
            user_ids=np.array([], dtype=np.int64),
            item_ids=np.array([], dtype=np.int64),
            values=np.array([]),
            timestamps=np.array([], dtype=np.int64),
        )
        with pytest.raises(ConfigError, match="the catalog is empty"):
            Retriever(embedder=embedder).fit(empty, rows)

    def test_unknown_channel_kind(self) -> None:
        config = RetrieverConfig(channels=[ChannelSpec(kind="sematic")])
        with pytest.raises(ConfigError, match="channel kind 'sematic' is not known; registered: "):
            Retriever(config)

    def test_typo_in_channel_options(self) -> None:
        config = RetrieverConfig(channels=[ChannelSpec(kind="transition", options={"windw": 3})])
        with pytest.raises(ConfigError, match=r"'transition'.*windw.*allowed keys: window"):
            Retriever(config)
        bad_value = RetrieverConfig(channels=[ChannelSpec(kind="ease", options={"l2": -1})])
        with pytest.raises(ConfigError, match="l2"):
            Retriever(bad_value)

    def test_duplicate_and_missing_channels(self) -> None:
        twice = RetrieverConfig(channels=[ChannelSpec(kind="ease"), ChannelSpec(kind="ease")])
        with pytest.raises(
            ConfigError, match=r"channel names must be unique; got \['ease', 'ease'\]"
        ):
            Retriever(twice)
        named = RetrieverConfig(
            channels=[
                ChannelSpec(kind="ease"),
                ChannelSpec(kind="ease", name="ease2", options={"l2": 10}),
            ]
        )
        assert [c.name for c in Retriever(named).channels] == ["ease", "ease2"]
        with pytest.raises(ConfigError, match="at least one channel"):
            Retriever(RetrieverConfig(channels=[]))

    def test_config_is_closed(self) -> None:
        with pytest.raises(ValidationError, match="n_candidate"):
            RetrieverConfig(n_candidate=5)  # type: ignore[call-arg]
        with pytest.raises(ValidationError):
            ChannelSpec(kind="ease", weight=-1)
        with pytest.raises(ValidationError, match="option"):
            ChannelSpec(kind="ease", option={})  # type: ignore[call-arg]

    def test_use_before_fit(self) -> None:
        retriever = Retriever()
        with pytest.raises(ConfigError, match="not fit; call fit"):
            retriever.retrieve(RetrievalQuery("u"))
        with pytest.raises(ConfigError, match="not fit; call fit"):
            retriever.query("u")

    def test_bad_k(self, tiny_retriever: Retriever) -> None:
        with pytest.raises(ConfigError, match="k=0 must be >= 1"):
            tiny_retriever.retrieve(tiny_retriever.query(0), k=0)

    def test_ratings_must_align_with_history(self) -> None:
        with pytest.raises(ValueError, match="ratings has 1 values for 2 history items"):
            RetrievalQuery("u", np.array([1, 2]), np.array([4.0]))


@pytest.mark.slow
def test_fused_beats_popularity_on_llamarec(llamarec_data: ProtocolData, tmp_path: Path) -> None:
    """The default retriever against the popularity baseline, llamarec test split.

    Slow: it embeds all 3,650 items with the real model (about 30-80 s on two cores).
    """
    options: dict[str, Any] = {"retriever": {"cache_dir": str(tmp_path)}}
    fused = evaluate(llamarec_data, make_ranker("retrieval", options), metrics=["recall@20"])
    popular = evaluate(llamarec_data, make_ranker("popularity"), metrics=["recall@20"])
    assert fused.metrics["recall@20"] > popular.metrics["recall@20"] + 0.05
    assert fused.ranker == "retrieval"


def test_collaborative_channels_beat_popularity_on_llamarec(llamarec_data: ProtocolData) -> None:
    """Without the embedding channel (seconds, not minutes): fused and alone vs popularity."""
    channels = [
        {"kind": "transition"},
        {"kind": "ease", "weight": 0.5},
        {"kind": "popularity", "weight": 0.01},
    ]
    metrics = ["recall@20"]
    popular = evaluate(llamarec_data, make_ranker("popularity"), metrics=metrics)
    fused = evaluate(
        llamarec_data,
        make_ranker("retrieval", {"retriever": {"channels": channels}}),
        metrics=metrics,
    )
    transition = evaluate(llamarec_data, make_ranker("transition"), metrics=metrics)
    base = popular.metrics["recall@20"]
    assert fused.metrics["recall@20"] > base + 0.05
    assert transition.metrics["recall@20"] > base + 0.05
    assert fused.metrics["recall@20"] >= transition.metrics["recall@20"]
