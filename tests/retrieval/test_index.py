"""Vector indexes: every configuration against exact numpy search, plus persistence and
bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ragrec.errors import ConfigError
from ragrec.retrieval import (
    FaissIndex,
    IndexConfig,
    NumpyIndex,
    VectorIndex,
    VectorIndexError,
    load_index,
    make_index,
)

DIM = 64
N_ITEMS = 5000
N_QUERIES = 100
EMBEDDER = "unit-test-embedder"

CONFIGS = {
    "numpy": IndexConfig(backend="numpy"),
    "faiss-flat": IndexConfig(kind="flat", gpu="never"),
    "faiss-hnsw": IndexConfig(kind="hnsw", gpu="never"),
    "faiss-ivf": IndexConfig(kind="ivf", gpu="never"),
}
EXACT = {"numpy", "faiss-flat"}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around random centres, the way text embeddings group by topic."""
    picks = rng.integers(0, len(centres), n)
    return unit(centres[picks] + rng.standard_normal((n, centres.shape[1])) / 8)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, item vectors, query vectors): 5,000 seeded 64-d unit vectors in 50 clusters."""
    rng = np.random.default_rng(42)
    centres = unit(rng.standard_normal((50, DIM)))
    vectors = clustered(N_ITEMS, rng, centres)
    queries = clustered(N_QUERIES, rng, centres)
    ids = np.arange(100_000, 100_000 + N_ITEMS)
    return ids, vectors, queries


@pytest.fixture(scope="module")
def exact(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> NumpyIndex:
    ids, vectors, _ = data
    index = NumpyIndex(DIM, embedder=EMBEDDER)
    index.add(ids, vectors)
    return index


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def built(name: str, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> VectorIndex:
    """The full index for one configuration; read-only for the tests."""
    ids, vectors, _ = data
    index = make_index(DIM, CONFIGS[name], embedder=EMBEDDER)
    index.add(ids, vectors)
    return index


def fresh(name: str, ids: np.ndarray, vectors: np.ndarray, **update: object) -> VectorIndex:
    index = make_index(DIM, CONFIGS[name].model_copy(update=update), embedder=EMBEDDER)
    index.add(ids, vectors)
    return index


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def ids_of(row: np.ndarray, found: int) -> list[int]:
    return [int(i) for i in row[:found]]


class TestIndexConformance:
    """What every index configuration must do, checked against exact numpy search."""

    def test_matches_exact_search(
        self,
        name: str,
        built: VectorIndex,
        exact: NumpyIndex,
        data: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        _, _, queries = data
        if name in EXACT:
            got, want = built.search(queries, 50), exact.search(queries, 50)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        elif name == "faiss-hnsw":
            got, want = built.search(queries, 100), exact.search(queries, 100)
            assert recall(got.ids, want.ids) >= 0.95
        else:
            got, want = built.search(queries, 10), exact.search(queries, 10)
            assert recall(got.ids, want.ids) >= 0.9
        assert (got.found == got.ids.shape[1]).all()
        # Scores are the inner products of the returned items, whatever the backend.
        by_id = dict(zip(data[0].tolist(), data[1], strict=True))
        row = got.ids[0]
        expected = np.array([by_id[i] @ queries[0] for i in row])
        np.testing.assert_allclose(got.scores[0], expected, rtol=1e-4, atol=1e-4)

    def test_reports_backend_kind_and_size(self, name: str, built: VectorIndex) -> None:
        assert len(built) == N_ITEMS
        assert built.backend == CONFIGS[name].backend
        assert built.kind == ("flat" if name == "numpy" else name.removeprefix("faiss-"))
        assert built.device == "cpu"
        assert built.embedder == EMBEDDER
        assert 100_123 in built
        assert 7 not in built

    def test_update_moves_the_item(
        self, name: str, data: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        ids, vectors, _ = data
        index = fresh(name, ids[:1000], vectors[:1000])
        moved = int(ids[10])
        target = vectors[500]  # the new vector sits exactly on item 500
        index.add([moved], target[None, :])
        assert len(index) == 1000
        hits = index.search(target[None, :], 2)
        assert set(ids_of(hits.ids[0], 2)) == {moved, int(ids[500])}
        assert hits.scores[0, 0] == pytest.approx(1.0, abs=1e-4)
        # Near its old vector, the moved item is gone; its old neighbour is found instead.
        old = index.search(vectors[10][None, :], 20)
        assert moved not in ids_of(old.ids[0], 20)
        assert index.item_ids.count(moved) == 1

    def test_remove_without_rebuild(
        self,
        name: str,
        data: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        ids, vectors, queries = data
        index = fresh(name, ids[:2000], vectors[:2000])
        reference = NumpyIndex(DIM)
        reference.add(ids[:2000], vectors[:2000])
        removed = ids[:2000:10]  # 200 items, 10 %: below HNSW's rebuild fraction
        index.remove(removed)
        reference.remove(removed)
        assert len(index) == 1800
        got = index.search(queries, 100)
        assert not set(got.ids.ravel().tolist()) & set(removed.tolist())
        assert (got.found == 100).all()
        want = reference.search(queries, 100)
        if name in EXACT:
            np.testing.assert_array_equal(got.ids, want.ids)
        else:
            assert recall(got.ids, want.ids) >= 0.9
        with pytest.raises(KeyError, match=str(removed[0])):
            index.remove(removed[:1])
        # A removed id can come back.
        index.add(removed[:1], vectors[:1])
        assert index.search(vectors[:1], 1).ids[0, 0] == removed[0]

    def test_exclude_is_refilled_to_k(
        self,
        name: str,
        built: VectorIndex,
        exact: NumpyIndex,
        data: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        _, _, queries = data
        queries = queries[:20]
        top = exact.search(queries, 320)
        exclude = [row[:250].tolist() for row in top.ids]
        got = built.search(queries, 30, exclude=exclude)
        assert (got.found == 30).all()
        for row, excl in zip(got.ids, exclude, strict=True):
            assert not set(row.tolist()) & set(excl)
        if name in EXACT:
            np.testing.assert_array_equal(got.ids, top.ids[:, 250:280])
        else:
            # Approximate: the refilled hits are the next-best items, give or take a few.
            near = [len(set(g) & set(t[:320])) / 30 for g, t in zip(got.ids, top.ids, strict=True)]
            assert np.mean(near) >= 0.95

    def test_k_larger_than_the_index_pads(
        self, name: str, data: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        ids, vectors, queries = data
        index = fresh(name, ids[:10], vectors[:10])
        index.remove(ids[:3])
        got = index.search(queries[:3], 25)
        assert got.ids.shape == (3, 25)
        assert got.scores.shape == (3, 25)
        assert (got.found == 7).all()
        for row, scores in zip(got.ids, got.scores, strict=True):
            assert sorted(row[:7].tolist()) == ids[3:10].tolist()
            assert all(i is None for i in row[7:])
            assert np.isneginf(scores[7:]).all()
        everything = [ids[3:10].tolist()] * 3
        none_left = index.search(queries[:3], 5, exclude=everything)
        assert (none_left.found == 0).all()

    def test_save_load_round_trip(
        self,
        name: str,
        tmp_path: Path,
        data: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        ids, vectors, queries = data
        index = fresh(name, ids[:1500], vectors[:1500])
        index.remove(ids[:100])
        before = index.search(queries, 40, exclude=[ids[100:110].tolist()] * len(queries))
        target = index.save(tmp_path / "idx", catalog_fingerprint="abc")
        loaded = load_index(
            target, expected_dim=DIM, expected_embedder=EMBEDDER, catalog_fingerprint="abc"
        )
        assert type(loaded) is type(index)
        assert (loaded.backend, loaded.kind, len(loaded)) == (index.backend, index.kind, 1400)
        after = loaded.search(queries, 40, exclude=[ids[100:110].tolist()] * len(queries))
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
        np.testing.assert_array_equal(after.found, before.found)
        manifest = json.loads((target / "manifest.json").read_text())
        assert manifest["dim"] == DIM
        assert manifest["items"] == 1400
        assert manifest["metric"] == "inner_product"
        assert manifest["embedder"] == EMBEDDER
        # Saving again replaces the folder in one step and leaves no temp folders behind.
        loaded.add(ids[:1], vectors[:1])
        loaded.save(target, catalog_fingerprint="abc")
        assert len(load_index(target)) == 1401
        assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]

    def test_load_mismatches_raise(
        self,
        name: str,
        tmp_path: Path,
        data: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        ids, vectors, _ = data
        target = fresh(name, ids[:300], vectors[:300]).save(
            tmp_path / "idx", catalog_fingerprint="a" * 64
        )
        with pytest.raises(VectorIndexError, match="index dim 64, but the embedder gives 384"):
            load_index(target, expected_dim=384)
        with pytest.raises(VectorIndexError, match="embedder 'unit-test-embedder', not 'other'"):
            load_index(target, expected_embedder="other")
        with pytest.raises(VectorIndexError, match="another catalog"):
            load_index(target, catalog_fingerprint="b" * 64)
        with pytest.raises(VectorIndexError, match="no index here"):
            load_index(tmp_path / "nothing")

    def test_corrupt_files_raise(
        self,
        name: str,
        tmp_path: Path,
        data: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        ids, vectors, _ = data
        target = fresh(name, ids[:300], vectors[:300]).save(tmp_path / "idx")
        biggest = max(
            (p for p in target.iterdir() if p.name != "manifest.json"),
            key=lambda p: p.stat().st_size,
        )
        raw = bytearray(biggest.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        biggest.write_bytes(bytes(raw))
        with pytest.raises(VectorIndexError, match=f"{biggest.name}: missing or corrupt"):
            load_index(target)
        (target / "manifest.json").write_text("{not json", encoding="utf-8")
        with pytest.raises(VectorIndexError, match="corrupt manifest"):
            load_index(target)
        (target / "manifest.json").unlink()
        with pytest.raises(VectorIndexError, match=r"manifest\.json missing"):
            load_index(target)

    def test_non_finite_vectors_rejected_at_add(
        self, name: str, data: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        ids, vectors, _ = data
        index = fresh(name, ids[:50], vectors[:50])
        bad = vectors[50:60].copy()
        bad[3, 5] = np.nan
        bad[7, 0] = np.inf
        with pytest.raises(ConfigError, match=r"row\(s\) \[3, 7\] hold NaN or infinite"):
            index.add(ids[50:60], bad)
        assert len(index) == 50
        assert ids[53] not in index

    def test_wrong_dimension_rejected(
        self, name: str, built: VectorIndex, data: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        with pytest.raises(ConfigError, match=r"shape \(2, 32\), expected \(n, 64\)"):
            built.add([1, 2], np.ones((2, 32), dtype=np.float32))
        with pytest.raises(ConfigError, match=r"queries have shape \(1, 384\), expected"):
            built.search(np.ones((1, 384), dtype=np.float32), 5)
        assert len(built) == N_ITEMS

    def test_bad_arguments_rejected(self, name: str, built: VectorIndex) -> None:
        query = np.ones((2, DIM), dtype=np.float32)
        with pytest.raises(ConfigError, match="k=0 must be >= 1"):
            built.search(query, 0)
        with pytest.raises(ConfigError, match="exclude has 1 rows for 2 queries"):
            built.search(query, 3, exclude=[[1]])
        with pytest.raises(ConfigError, match="item ids repeat within one add"):
            built.add([1, 1], np.ones((2, DIM), dtype=np.float32))
        with pytest.raises(ConfigError, match="3 item ids for 2 vectors"):
            built.add([1, 2, 3], np.ones((2, DIM), dtype=np.float32))

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        k=st.integers(1, 60),
        seed=st.integers(0, 2**32 - 1),
        n_queries=st.integers(1, 4),
        n_excluded=st.integers(0, 80),
    )
    def test_rows_sorted_and_unique(
        self,
        built: VectorIndex,
        data: tuple[np.ndarray, np.ndarray, np.ndarray],
        k: int,
        seed: int,
        n_queries: int,
        n_excluded: int,
    ) -> None:
        ids, _, _ = data
        rng = np.random.default_rng(seed)
        queries = unit(rng.standard_normal((n_queries, DIM)))
        exclude = [rng.choice(ids, n_excluded, replace=False).tolist() for _ in queries]
        got = built.search(queries, k, exclude=exclude)
        for row, scores, found, excl in zip(got.ids, got.scores, got.found, exclude, strict=True):
            assert found == k
            hits = row[:found].tolist()
            assert len(set(hits)) == len(hits)
            assert not set(hits) & set(excl)
            assert (np.diff(scores[:found]) <= 1e-6).all()


class TestHnswMasking:
    """HNSW cannot delete: removals are masked until they pass rebuild_fraction."""

    def test_masked_until_rebuild(self, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        ids, vectors, queries = data
        index = fresh("faiss-hnsw", ids[:1000], vectors[:1000], rebuild_fraction=0.2)
        full = index.memory_bytes()
        index.remove(ids[:150])  # 15 %: masked, the graph keeps them
        assert index.memory_bytes() == full
        got = index.search(queries, 50)
        assert (got.found == 50).all()
        assert not set(got.ids.ravel().tolist()) & set(ids[:150].tolist())
        index.remove(ids[150:250])  # 25 % in all: the graph is rebuilt without them
        assert index.memory_bytes() < 0.85 * full
        assert len(index) == 750
        got = index.search(queries, 50)
        assert (got.found == 50).all()
        assert not set(got.ids.ravel().tolist()) & set(ids[:250].tolist())
        reference = NumpyIndex(DIM)
        reference.add(ids[250:1000], vectors[250:1000])
        assert recall(got.ids, reference.search(queries, 50).ids) >= 0.95
        # Updates after the rebuild still land.
        index.add(ids[300:301], vectors[999:1000])
        top = index.search(vectors[999:1000], 2)
        assert set(top.ids[0].tolist()) == {ids[300], ids[999]}

    def test_masked_items_refilled_with_exclude(
        self, data: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> None:
        ids, vectors, _ = data
        index = fresh("faiss-hnsw", ids[:400], vectors[:400], rebuild_fraction=1.0)
        exact = NumpyIndex(DIM)
        exact.add(ids[:400], vectors[:400])
        order = exact.search(vectors[:1], 400).ids[0]
        index.remove(order[1:200])  # the 199 nearest after the query's own item: masked
        got = index.search(vectors[:1], 10, exclude=[[order[0]]])
        assert got.found[0] == 10
        assert set(got.ids[0].tolist()) <= set(order[200:].tolist())

    def test_recall_on_uniform_random_vectors(self) -> None:
        # Uniform random vectors are the hardest case for a graph index.
        rng = np.random.default_rng(3)
        vectors = unit(rng.standard_normal((N_ITEMS, DIM)))
        queries = unit(rng.standard_normal((N_QUERIES, DIM)))
        hnsw = make_index(DIM, IndexConfig(kind="hnsw"))
        exact = NumpyIndex(DIM)
        for index in (hnsw, exact):
            index.add(np.arange(N_ITEMS), vectors)
        assert recall(hnsw.search(queries, 100).ids, exact.search(queries, 100).ids) >= 0.95


def test_auto_kind_follows_the_size_rule() -> None:
    cfg = IndexConfig(kind="auto", auto_approx_min_items=1000)
    assert make_index(8, cfg, expected_items=999).kind == "flat"
    assert make_index(8, cfg, expected_items=1000).kind == "ivf"
    assert make_index(8).kind == "flat"
    assert isinstance(make_index(8, IndexConfig(backend="numpy")), NumpyIndex)
    assert isinstance(make_index(8), FaissIndex)


def test_config_is_closed() -> None:
    with pytest.raises(ValidationError, match="hnsw_ef"):
        IndexConfig(hnsw_ef=64)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        IndexConfig(kind="annoy")  # type: ignore[arg-type]


def test_bad_dimension_rejected() -> None:
    with pytest.raises(ConfigError, match="index dim must be >= 1, got 0"):
        make_index(0)


@pytest.mark.skipif(
    __import__("faiss").get_num_gpus() > 0, reason="checks the no-GPU error message"
)
def test_gpu_always_without_gpu_is_an_error() -> None:
    with pytest.raises(ConfigError, match="gpu='always' but faiss sees no GPU"):
        make_index(8, IndexConfig(kind="flat", gpu="always"))


@pytest.mark.parametrize("name", ["numpy", "faiss-flat", "faiss-hnsw"])
def test_empty_index(name: str, tmp_path: Path) -> None:
    index = make_index(4, CONFIGS[name])
    got = index.search(np.ones((2, 4), dtype=np.float32), 3)
    assert (got.found == 0).all()
    assert got.ids.shape == (2, 3)
    loaded = load_index(index.save(tmp_path / "empty"))
    assert len(loaded) == 0
    assert (loaded.search(np.ones(4), 1).found == 0).all()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_text_ids_round_trip(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((200, 16)))
    ids = [f"tt{i:07d}" for i in range(200)]
    index = make_index(16, CONFIGS[name])
    index.add(ids, vectors)
    loaded = load_index(index.save(tmp_path / "idx"))
    got = loaded.search(vectors[:5], 1)
    assert got.ids[:, 0].tolist() == ids[:5]
    assert loaded.item_ids == ids


@pytest.mark.parametrize(
    ("kind", "saved", "loaded"),
    [
        ("ivf", {"ivf_nprobe": 1}, {"ivf_nprobe": 10_000}),
        ("hnsw", {"hnsw_ef_search": 8}, {"hnsw_ef_search": 1024}),
    ],
)
def test_load_applies_the_given_search_breadth(
    kind: str, saved: dict[str, int], loaded: dict[str, int], tmp_path: Path
) -> None:
    rng = np.random.default_rng(5)
    vectors = unit(rng.standard_normal((3000, 32)))
    queries = unit(rng.standard_normal((50, 32)))
    exact = NumpyIndex(32)
    exact.add(np.arange(3000), vectors)
    want = exact.search(queries, 50).ids
    narrow = make_index(32, IndexConfig(kind=kind, **saved))  # type: ignore[arg-type]
    narrow.add(np.arange(3000), vectors)
    assert recall(narrow.search(queries, 50).ids, want) < 0.9
    target = narrow.save(tmp_path / "idx")
    assert recall(load_index(target).search(queries, 50).ids, want) < 0.9
    wide = load_index(target, config=IndexConfig(kind=kind, **loaded))  # type: ignore[arg-type]
    assert recall(wide.search(queries, 50).ids, want) >= 0.99
