"""Embedders, the item-text template and the embedding cache, with the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ragrec.data import MovieLens
from ragrec.errors import ConfigError
from ragrec.retrieval import (
    DEFAULT_EMBEDDER,
    CachedEmbedder,
    Embedder,
    EmbedderConfig,
    EmbeddingCache,
    ItemTextConfig,
    SentenceTransformerEmbedder,
    item_texts,
    make_embedder,
)

from .conftest import tiny_catalog

TEXTS = [
    "A crew on a spaceship is hunted by a deadly alien creature.",
    "Space horror: a monster stalks astronauts aboard a starship.",
    "Two friends fall in love during a summer in Paris.",
]


class TestSentenceTransformerEmbedder:
    def test_default_gives_384d_float32_unit_vectors(
        self, embedder: SentenceTransformerEmbedder
    ) -> None:
        assert isinstance(embedder, Embedder)
        assert embedder.name == DEFAULT_EMBEDDER
        assert embedder.dim == 384
        vectors = embedder.encode(TEXTS)
        assert vectors.shape == (3, 384)
        assert vectors.dtype == np.float32
        assert vectors.flags.c_contiguous
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert embedder.device == "cpu"

    def test_similar_texts_are_closer(self, embedder: SentenceTransformerEmbedder) -> None:
        alien, space_horror, romance = embedder.encode(TEXTS)
        assert alien @ space_horror > alien @ romance + 0.2
        assert alien @ space_horror > space_horror @ romance + 0.2

    def test_deterministic_and_batch_independent(
        self, embedder: SentenceTransformerEmbedder
    ) -> None:
        together = embedder.encode(TEXTS)
        alone = np.concatenate([embedder.encode([t]) for t in TEXTS])
        np.testing.assert_allclose(together, alone, atol=1e-5)

    def test_long_query_is_truncated_not_a_crash(
        self, embedder: SentenceTransformerEmbedder
    ) -> None:
        long = ("space horror on a derelict ship " * 3200)[:100_000]
        assert len(long) == 100_000
        (vector,) = embedder.encode([long])
        assert np.isfinite(vector).all()
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        # Only the first max_seq_length tokens count: the tail changes nothing.
        (same,) = embedder.encode([long[:50_000] + "romantic comedy in Paris " * 2000])
        np.testing.assert_allclose(vector, same, atol=1e-5)

    def test_one_string_is_rejected(self, embedder: SentenceTransformerEmbedder) -> None:
        with pytest.raises(ConfigError, match="got one string; wrap it in a list"):
            embedder.encode("a string")

    def test_empty_list(self, embedder: SentenceTransformerEmbedder) -> None:
        out = embedder.encode([])
        assert out.shape == (0, 384)
        assert out.dtype == np.float32

    def test_unknown_model_is_a_config_error(self, tmp_path: Path) -> None:
        missing = make_embedder(EmbedderConfig(model=str(tmp_path / "no-such-model")))
        with pytest.raises(ConfigError, match="could not be loaded"):
            missing.encode(["x"])

    def test_config_is_closed(self) -> None:
        with pytest.raises(ValidationError, match="batchsize"):
            EmbedderConfig(batchsize=8)  # type: ignore[call-arg]
        with pytest.raises(ValidationError):
            EmbedderConfig(device="tpu")  # type: ignore[arg-type]


class TestEmbeddingCache:
    def test_second_encode_computes_nothing(
        self, embedder: SentenceTransformerEmbedder, tmp_path: Path
    ) -> None:
        cached = CachedEmbedder(embedder, EmbeddingCache(tmp_path / "cache" / "e.sqlite"))
        assert (cached.name, cached.dim) == (embedder.name, embedder.dim)
        texts = [*TEXTS, TEXTS[0]]  # a repeat within one call is computed once
        first = cached.encode(texts)
        assert cached.computed == 3
        np.testing.assert_array_equal(first[0], first[3])
        np.testing.assert_allclose(first, embedder.encode(texts), atol=1e-5)
        second = cached.encode(texts)
        assert cached.computed == 3
        np.testing.assert_array_equal(first, second)
        assert second.dtype == np.float32
        assert second.shape == (4, 384)

    def test_a_changed_text_is_computed_once(
        self, embedder: SentenceTransformerEmbedder, tmp_path: Path
    ) -> None:
        cached = CachedEmbedder(embedder, EmbeddingCache(tmp_path / "e.sqlite"))
        before = cached.encode(TEXTS)
        changed = [TEXTS[0], TEXTS[1] + " With a twist.", TEXTS[2]]
        after = cached.encode(changed)
        assert cached.computed == 4
        np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
        assert not np.array_equal(after[1], before[1])
        cached.encode(changed)
        assert cached.computed == 4

    def test_cache_persists_across_instances(
        self, embedder: SentenceTransformerEmbedder, tmp_path: Path
    ) -> None:
        path = tmp_path / "e.sqlite"
        first = CachedEmbedder(embedder, EmbeddingCache(path)).encode(TEXTS)
        again = CachedEmbedder(embedder, EmbeddingCache(path))
        np.testing.assert_array_equal(again.encode(TEXTS[::-1]), first[::-1])
        assert again.computed == 0

    def test_one_string_and_empty_list(
        self, embedder: SentenceTransformerEmbedder, tmp_path: Path
    ) -> None:
        cached = CachedEmbedder(embedder, EmbeddingCache(tmp_path / "e.sqlite"))
        with pytest.raises(ConfigError, match="got one string"):
            cached.encode("a string")
        assert cached.encode([]).shape == (0, 384)
        assert cached.computed == 0

    def test_keys_are_per_model(self, tmp_path: Path) -> None:
        cache = EmbeddingCache(tmp_path / "e.sqlite")
        key = EmbeddingCache.key("same text")
        assert key == EmbeddingCache.key("same text") != EmbeddingCache.key("same text ")
        cache.put("model-a", {key: np.ones(4, dtype=np.float32)})
        cache.put("model-b", {key: np.zeros(8, dtype=np.float32)})
        assert cache.get("model-a", [key])[key].tolist() == [1.0] * 4
        assert cache.get("model-b", [key])[key].shape == (8,)
        assert cache.get("model-c", [key]) == {}


class TestItemTexts:
    def test_movielens_text_has_title_genres_and_tags(self, ml_small: MovieLens) -> None:
        catalog = ml_small.catalog
        texts = item_texts(catalog)
        assert len(texts) == len(catalog)
        toy = texts[catalog.position(1)]
        assert toy.startswith("Toy Story (1995). Genres: Adventure, Animation, Children")
        assert "Tags: " in toy
        assert "pixar" in toy.lower()
        tags = catalog.text["tags"]
        untagged = next(i for i, t in enumerate(tags) if not t and catalog.categories[i])
        assert "Tags:" not in texts[untagged]
        assert texts[untagged] == f"{catalog.titles[untagged]}. Genres: " + ", ".join(
            catalog.categories[untagged]
        )
        bare = next(
            i for i, (t, c) in enumerate(zip(tags, catalog.categories, strict=True)) if not (t or c)
        )
        assert texts[bare] == catalog.titles[bare]
        assert not any(t.endswith(("Genres:", "Tags:")) or ": ." in t for t in texts)
        assert max(map(len, texts)) == ItemTextConfig().max_chars

    def test_skip_empty_false_keeps_the_template(self) -> None:
        catalog = tiny_catalog()
        texts = item_texts(catalog, ItemTextConfig(skip_empty=False))
        gump = texts[catalog.position(10)]
        assert gump == "Forrest Gump (1994). Genres: Comedy, Drama, Romance, War. Tags: . "

    def test_custom_template_and_max_chars(self) -> None:
        catalog = tiny_catalog()
        cfg = ItemTextConfig(template="{title} ({year}): {tags}", max_chars=20)
        texts = item_texts(catalog, cfg)
        assert texts[0] == "Alien (1979) (1979):"[:20]
        assert all(len(t) <= 20 for t in texts)

    def test_unknown_field_is_a_config_error(self) -> None:
        cfg = ItemTextConfig(template="{title}. Directed by {director}")
        with pytest.raises(ConfigError, match=r"\{director\} is not a catalog field"):
            item_texts(tiny_catalog(), cfg)

    @pytest.mark.parametrize(
        ("template", "message"),
        [
            ("{genres}. {tags}", "must contain {title}"),
            ("{title!r}", "is not allowed"),
            ("{title:>20}", "is not allowed"),
            ("{Title}", "is not allowed"),
        ],
    )
    def test_bad_template_fails_at_config_time(self, template: str, message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            ItemTextConfig(template=template)
