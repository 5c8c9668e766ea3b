"""Item vectors aligned with a catalog, and their vector index."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from ragrec.data import Catalog
from ragrec.retrieval._embedders import Embedder, ItemTextConfig, item_texts
from ragrec.retrieval._index import IndexConfig, VectorIndex, make_index

logger = logging.getLogger(__name__)

__all__ = ["ItemEmbeddings", "catalog_fingerprint"]


def catalog_fingerprint(catalog: Catalog) -> str:
    """A sha256 over the catalog's ids and titles (tells one catalog from another)."""
    digest = hashlib.sha256()
    for item_id, title in zip(catalog.item_ids.tolist(), catalog.titles.tolist(), strict=True):
        digest.update(f"{item_id}\x1f{title}\x1e".encode())
    return digest.hexdigest()


@dataclass
class ItemEmbeddings:
    """Catalog-aligned item vectors and the index that searches them (keyed by item id).

    Attributes:
        catalog: The items; row ``i`` of ``vectors`` belongs to position ``i``.
        embedder: The model that made the vectors (also used for query texts).
        vectors: ``(len(catalog), dim)`` float32, unit length.
        index: The vector index over ``vectors``.
        text_config: How item texts were rendered.
        seconds: Time spent embedding and indexing.
    """

    catalog: Catalog
    embedder: Embedder
    vectors: np.ndarray
    index: VectorIndex
    text_config: ItemTextConfig
    seconds: float = 0.0

    @classmethod
    def build(
        cls,
        catalog: Catalog,
        embedder: Embedder,
        *,
        text_config: ItemTextConfig | None = None,
        index_config: IndexConfig | None = None,
    ) -> ItemEmbeddings:
        """Embed every catalog item and index the vectors."""
        start = time.perf_counter()
        tcfg = text_config or ItemTextConfig()
        vectors = embedder.encode(item_texts(catalog, tcfg)) if len(catalog) else None
        dim = embedder.dim
        if vectors is None:
            vectors = np.zeros((0, dim), dtype=np.float32)
        index = make_index(dim, index_config, embedder=embedder.name, expected_items=len(catalog))
        if len(catalog):
            index.add(catalog.item_ids, vectors)
        seconds = time.perf_counter() - start
        logger.info("embedded and indexed %d items in %.1f s", len(catalog), seconds)
        return cls(catalog, embedder, vectors, index, tcfg, seconds)

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """Vectors of the items at catalog positions."""
        return self.vectors[np.asarray(positions, dtype=np.int64)]
