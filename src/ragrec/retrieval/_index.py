"""Vector indexes over item embeddings: FAISS (flat, HNSW, IVF; CPU or GPU) and an exact
numpy reference, behind one interface, saved atomically with a manifest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ragrec.retrieval._faiss_index import FaissIndex
from ragrec.retrieval._index_base import (
    FORMAT_VERSION,
    IndexConfig,
    NumpyIndex,
    SearchResult,
    VectorIndex,
    VectorIndexError,
    _sha256,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FaissIndex",
    "IndexConfig",
    "NumpyIndex",
    "SearchResult",
    "VectorIndex",
    "VectorIndexError",
    "load_index",
    "make_index",
]


def make_index(
    dim: int,
    config: IndexConfig | None = None,
    *,
    embedder: str = "",
    expected_items: int = 0,
) -> VectorIndex:
    """A new empty index for ``config.backend`` (``"faiss"`` or ``"numpy"``)."""
    cfg = config or IndexConfig()
    if cfg.backend == "numpy":
        return NumpyIndex(dim, config=cfg, embedder=embedder)
    index = FaissIndex(dim, config=cfg, embedder=embedder, expected_items=expected_items)
    logger.info("vector index: faiss %s on %s (dim %d)", index.kind, index.device, dim)
    return index


def load_index(
    folder: str | Path,
    *,
    expected_dim: int | None = None,
    expected_embedder: str | None = None,
    catalog_fingerprint: str | None = None,
    config: IndexConfig | None = None,
) -> VectorIndex:
    """Load an index written by :meth:`VectorIndex.save`, checking it first.

    Args:
        folder: The index folder.
        expected_dim: Dimension of the embedder that will query it.
        expected_embedder: Name of that embedder.
        catalog_fingerprint: Fingerprint of the catalog it must belong to.
        config: Settings for the loaded index (GPU use, search breadth); default: saved.

    Raises:
        VectorIndexError: Missing or corrupt files, or a mismatch with the embedder or catalog.
    """
    path = Path(folder)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise VectorIndexError(f"{path}: no index here (manifest.json missing); build it first")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VectorIndexError(
            f"{manifest_path}: corrupt manifest ({exc}); rebuild the index"
        ) from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise VectorIndexError(
            f"{path}: index format {manifest.get('format_version')!r}, this ragrec reads "
            f"{FORMAT_VERSION}; rebuild the index"
        )
    for name, digest in manifest["checksums"].items():
        file = path / name
        if not file.is_file() or _sha256(file) != digest:
            raise VectorIndexError(
                f"{file}: missing or corrupt (checksum mismatch); rebuild the index"
            )
    dim = int(manifest["dim"])
    if expected_dim is not None and dim != expected_dim:
        raise VectorIndexError(
            f"{path}: index dim {dim}, but the embedder gives {expected_dim}-d vectors "
            f"(index built with {manifest['embedder']!r}); rebuild the index for this embedder"
        )
    if expected_embedder is not None and manifest["embedder"] != expected_embedder:
        raise VectorIndexError(
            f"{path}: index built with embedder {manifest['embedder']!r}, not "
            f"{expected_embedder!r}; rebuild it or configure that embedder"
        )
    if catalog_fingerprint is not None and manifest["catalog_fingerprint"] != catalog_fingerprint:
        raise VectorIndexError(
            f"{path}: index belongs to another catalog (fingerprint "
            f"{manifest['catalog_fingerprint'][:12]} vs {catalog_fingerprint[:12]}); rebuild it"
        )
    saved = IndexConfig.model_validate(manifest["config"])
    cfg = config or saved
    index: VectorIndex
    if manifest["backend"] == "numpy":
        index = NumpyIndex(dim, config=cfg, embedder=manifest["embedder"])
    else:
        index = FaissIndex(
            dim,
            config=cfg.model_copy(update={"kind": manifest["kind"]}),
            embedder=manifest["embedder"],
        )
    index._read(path)
    frame = pd.read_parquet(path / "ids.parquet")
    ids = [json.loads(v) for v in frame["id"]]
    live = frame["live"].to_numpy(dtype=bool)
    index._ids = [i if ok else None for i, ok in zip(ids, live, strict=True)]
    index._label_of = {i: label for label, i in enumerate(index._ids) if i is not None}
    if isinstance(index, FaissIndex):
        index._masked = int((~live).sum()) if index.kind == "hnsw" else 0
    if len(index) != manifest["items"]:
        raise VectorIndexError(
            f"{path}: manifest says {manifest['items']} items, found {len(index)}"
        )
    return index
