"""Vector indexes over item embeddings: FAISS (flat, HNSW, IVF; CPU or GPU) and an exact
numpy reference, behind one interface, saved atomically with a manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from ragrec._settings import Settings
from ragrec.errors import ConfigError, RagrecError

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

FORMAT_VERSION = 1
_SERIAL_BELOW = 20  # FAISS CPU searches of fewer queries run on one OpenMP thread


class VectorIndexError(RagrecError):
    """A vector index is corrupt, stale, or does not match its embedder or catalog."""


class IndexConfig(Settings):
    """Configuration of a vector index."""

    backend: Literal["faiss", "numpy"] = Field(
        default="faiss", description="faiss, or numpy (exact search; the reference)."
    )
    kind: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        default="auto",
        description="flat: exact inner product; hnsw/ivf: approximate; auto: flat below "
        "auto_approx_min_items items, ivf from there (at 1M clustered 384-d vectors IVF "
        "met recall@100 0.96 at 1.3 ms p50 where HNSW with these defaults reached 0.81: "
        "benchmarks/retrieval_speed.py).",
    )
    auto_approx_min_items: int = Field(
        default=200_000, ge=1, description="Size rule for auto: approximate search from here."
    )
    hnsw_m: int = Field(default=32, ge=4, description="HNSW graph degree.")
    hnsw_ef_construction: int = Field(default=80, ge=8, description="HNSW build breadth.")
    hnsw_ef_search: int = Field(default=128, ge=8, description="HNSW search breadth.")
    ivf_nlist: int | None = Field(
        default=None, ge=1, description="IVF lists; None means 4 * sqrt(items)."
    )
    ivf_nprobe: int = Field(default=32, ge=1, description="IVF lists probed per query.")
    gpu: Literal["auto", "never", "always"] = Field(
        default="auto",
        description="Move flat and IVF indexes to the GPU when faiss sees one (auto), "
        "never, or always (an error without a GPU).",
    )
    rebuild_fraction: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="HNSW cannot delete: removed items are masked, and the graph is rebuilt "
        "when they exceed this fraction.",
    )


@dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours per query, best first.

    Attributes:
        ids: ``(n_queries, k)`` item ids (object or int64 array); rows with fewer hits are
            padded with ``None`` / -1 and ``-inf`` scores.
        scores: ``(n_queries, k)`` inner products.
        found: Per query, how many real hits the row holds.
    """

    ids: np.ndarray
    scores: np.ndarray
    found: np.ndarray


def _check_vectors(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ConfigError(
            f"{what} have shape {arr.shape}, expected (n, {dim}): index dim {dim}; "
            "embed with the model the index was built with"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ConfigError(
            f"{what} row(s) {np.flatnonzero(bad)[:5].tolist()} hold NaN or infinite values; "
            "only finite vectors can be indexed"
        )
    return np.ascontiguousarray(arr)


class VectorIndex(ABC):
    """Inner-product search over vectors keyed by item id.

    Items are added, updated (added again under the same id) and removed without a full
    rebuild. Keys are item ids; internal labels never leave the index.
    """

    backend: str
    kind: str
    device: str = "cpu"

    def __init__(self, dim: int, *, config: IndexConfig, embedder: str = "") -> None:
        if dim < 1:
            raise ConfigError(f"index dim must be >= 1, got {dim}")
        self.dim = dim
        self.config = config
        self.embedder = embedder
        self._ids: list[Any] = []  # label -> item id (None once removed)
        self._label_of: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._label_of

    @property
    def item_ids(self) -> list[Any]:
        """Ids of the items in the index, in insertion order."""
        return [i for i in self._ids if i is not None and self._label_of.get(i) is not None]

    def add(self, item_ids: Sequence[Any] | np.ndarray, vectors: np.ndarray) -> None:
        """Add items; an id already present is replaced (updated).

        Raises:
            ConfigError: Wrong dimension, non-finite values, duplicate ids in the call.
        """
        ids = list(np.asarray(item_ids).tolist())
        arr = _check_vectors(vectors, self.dim, "vectors")
        if len(ids) != len(arr):
            raise ConfigError(f"{len(ids)} item ids for {len(arr)} vectors; pass one id per row")
        if len(set(ids)) != len(ids):
            dup = pd.Series(ids)[pd.Series(ids).duplicated()].tolist()[:3]
            raise ConfigError(f"item ids repeat within one add(): {dup}")
        present = [i for i in ids if i in self._label_of]
        if present:
            self.remove(present)
        labels = np.arange(len(self._ids), len(self._ids) + len(ids), dtype=np.int64)
        self._ids.extend(ids)
        self._label_of.update(zip(ids, labels.tolist(), strict=True))
        self._add(labels, arr)

    def remove(self, item_ids: Sequence[Any] | np.ndarray) -> None:
        """Remove items by id.

        Raises:
            KeyError: An id is not in the index.
        """
        ids = list(np.asarray(item_ids).tolist())
        missing = [i for i in ids if i not in self._label_of]
        if missing:
            raise KeyError(f"item ids not in the index: {missing[:5]}")
        labels = np.array([self._label_of.pop(i) for i in ids], dtype=np.int64)
        for label in labels:
            self._ids[label] = None
        self._remove(labels)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[Sequence[Any]] | None = None,
    ) -> SearchResult:
        """The ``k`` best items per query, skipping each query's ``exclude`` ids.

        Over-fetches and refills so that each row has ``k`` hits when the index holds
        enough items that are not excluded.
        """
        if k < 1:
            raise ConfigError(f"k={k} must be >= 1")
        q = _check_vectors(queries, self.dim, "queries")
        excl = [set(e) for e in exclude] if exclude is not None else [set() for _ in range(len(q))]
        if len(excl) != len(q):
            raise ConfigError(f"exclude has {len(excl)} rows for {len(q)} queries")
        n_live = len(self)
        ids = np.full((len(q), k), None, dtype=object)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        found = np.zeros(len(q), dtype=np.int64)
        if n_live == 0:
            return SearchResult(ids, scores, found)
        pending = np.arange(len(q))
        fetch = min(self._capacity(), k + max((len(e) for e in excl), default=0) + 8)
        while len(pending):
            labels, sims = self._search(q[pending], fetch)
            retry = []
            for row, lab, sim in zip(pending, labels, sims, strict=True):
                hits = 0
                for label, s in zip(lab.tolist(), sim.tolist(), strict=True):
                    if label < 0:
                        continue
                    item = self._ids[label]
                    if item is None or item in excl[row]:
                        continue
                    ids[row, hits] = item
                    scores[row, hits] = s
                    hits += 1
                    if hits == k:
                        break
                found[row] = hits
                if hits < k and fetch < self._capacity():
                    retry.append(row)
            pending = np.array(retry, dtype=np.int64)
            fetch = min(self._capacity(), fetch * 4)
        return SearchResult(ids, scores, found)

    def _capacity(self) -> int:
        """Labels ever stored (live or masked): the most a search can return."""
        return max(1, self._ntotal())

    # backend hooks ----------------------------------------------------------------------

    @abstractmethod
    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None: ...

    @abstractmethod
    def _remove(self, labels: np.ndarray) -> None: ...

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _ntotal(self) -> int: ...

    @abstractmethod
    def _write(self, folder: Path) -> None: ...

    @abstractmethod
    def _read(self, folder: Path) -> None: ...

    def memory_bytes(self) -> int:
        """Approximate bytes the vectors and graph take (for benchmarks)."""
        return 0

    # persistence ------------------------------------------------------------------------

    def save(self, folder: str | Path, *, catalog_fingerprint: str = "") -> Path:
        """Write the index and its manifest atomically (a temp folder, then a rename)."""
        target = Path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            self._write(tmp)
            ids = np.array(self._ids, dtype=object)
            live = np.array([i is not None for i in self._ids], dtype=bool)
            pd.DataFrame({"id": [json.dumps(_plain(i)) for i in ids], "live": live}).to_parquet(
                tmp / "ids.parquet"
            )
            files = sorted(p.name for p in tmp.iterdir())
            manifest = {
                "format_version": FORMAT_VERSION,
                "backend": self.backend,
                "kind": self.kind,
                "dim": self.dim,
                "metric": "inner_product",
                "embedder": self.embedder,
                "items": len(self),
                "catalog_fingerprint": catalog_fingerprint,
                "config": self.config.model_dump(),
                "checksums": {name: _sha256(tmp / name) for name in files},
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            old = target.with_name(f".{target.name}.old")
            if target.exists():
                if old.exists():
                    shutil.rmtree(old)
                target.rename(old)
            tmp.rename(target)
            if old.exists():
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class NumpyIndex(VectorIndex):
    """Exact inner-product search with numpy: the reference every FAISS index is tested
    against."""

    backend = "numpy"
    kind = "flat"

    def __init__(self, dim: int, *, config: IndexConfig | None = None, embedder: str = "") -> None:
        super().__init__(dim, config=config or IndexConfig(backend="numpy"), embedder=embedder)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._live = np.zeros(0, dtype=bool)

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        self._vectors = np.concatenate([self._vectors, vectors])
        self._live = np.concatenate([self._live, np.ones(len(labels), dtype=bool)])

    def _remove(self, labels: np.ndarray) -> None:
        self._live[labels] = False

    def _ntotal(self) -> int:
        return len(self._vectors)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = queries @ self._vectors.T
        sims[:, ~self._live] = -np.inf
        k = min(k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        labels = np.take_along_axis(top, order, axis=1)
        out = np.take_along_axis(top_sims, order, axis=1)
        labels[np.isneginf(out)] = -1
        return labels.astype(np.int64), out

    def memory_bytes(self) -> int:
        return int(self._vectors.nbytes)

    def _write(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", self._vectors)
        np.save(folder / "live.npy", self._live)

    def _read(self, folder: Path) -> None:
        self._vectors = np.load(folder / "vectors.npy")
        self._live = np.load(folder / "live.npy")


class FaissIndex(VectorIndex):
    """A FAISS index (flat, HNSW or IVF), moved to the GPU when configured and available."""

    backend = "faiss"

    def __init__(
        self,
        dim: int,
        *,
        config: IndexConfig | None = None,
        embedder: str = "",
        expected_items: int = 0,
    ) -> None:
        super().__init__(dim, config=config or IndexConfig(), embedder=embedder)
        self._faiss = _import_faiss()
        kind = self.config.kind
        if kind == "auto":
            kind = "ivf" if expected_items >= self.config.auto_approx_min_items else "flat"
        self.kind = kind
        self._masked = 0
        self._index: Any = None
        self._new_index()

    def _new_index(self) -> None:
        faiss = self._faiss
        cfg = self.config
        if self.kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        elif self.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = cfg.hnsw_ef_construction
            hnsw.hnsw.efSearch = cfg.hnsw_ef_search
            index = faiss.IndexIDMap2(hnsw)
        else:
            index = None  # IVF is built at the first add, when it can be trained
        self._index = self._to_device(index) if index is not None else None

    def _to_device(self, index: Any) -> Any:
        faiss = self._faiss
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        want = self.config.gpu
        if want == "always" and gpus == 0:
            raise ConfigError(
                "index gpu='always' but faiss sees no GPU; install faiss-gpu on a GPU machine "
                "or use gpu='auto'"
            )
        if want == "never" or gpus == 0 or self.kind == "hnsw":
            self.device = "cpu"
            return index
        resources = faiss.StandardGpuResources()
        self._gpu_resources = resources
        self.device = "cuda"
        logger.info("faiss %s index moved to the GPU", self.kind)
        return faiss.index_cpu_to_gpu(resources, 0, index)

    def _build_ivf(self, vectors: np.ndarray) -> None:
        faiss = self._faiss
        n = len(vectors)
        nlist = self.config.ivf_nlist or max(1, int(4 * np.sqrt(n)))
        nlist = min(nlist, max(1, n // 39))  # faiss wants ~39 training points per list
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.nprobe = min(self.config.ivf_nprobe, nlist)
        self._ivf_quantizer = quantizer
        # IVF stores our labels itself; under IndexIDMap2, remove_ids would compact the id
        # map but not the ids held in the inverted lists, so later hits map to wrong items.
        self._index = self._to_device(ivf)

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if self._index is None:
            self._build_ivf(vectors)
        self._index.add_with_ids(vectors, labels)

    def _remove(self, labels: np.ndarray) -> None:
        if self.kind == "hnsw":
            # HNSW cannot delete: removed labels are masked at search (their id is None).
            self._masked += len(labels)
            if self._masked > self.config.rebuild_fraction * max(1, self._ntotal()):
                self._rebuild()
            return
        self._index.remove_ids(self._faiss.IDSelectorBatch(labels))

    def _rebuild(self) -> None:
        live = [(label, i) for label, i in enumerate(self._ids) if i is not None]
        vectors = self._reconstruct(np.array([label for label, _ in live], dtype=np.int64))
        ids = [i for _, i in live]
        removed = len(self._ids) - len(ids)
        self._ids, self._label_of, self._masked = [], {}, 0
        self._new_index()
        logger.info("hnsw index rebuilt without %d removed items", removed)
        if ids:
            VectorIndex.add(self, ids, vectors)

    def _reconstruct(self, labels: np.ndarray) -> np.ndarray:
        if len(labels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._index.reconstruct(int(label)) for label in labels])

    def _ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.device != "cpu" or len(queries) >= _SERIAL_BELOW:
            sims, labels = self._index.search(queries, k)
            return labels, sims
        # A few queries gain little from OpenMP, and on a busy 2-core machine waiting for
        # the second thread cost flat and HNSW single queries 6-24 ms where one thread took
        # 0.3 ms (benchmarks/retrieval_speed.py, raw vs p50). Per calling thread, restored.
        faiss = self._faiss
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            sims, labels = self._index.search(queries, k)
        finally:
            faiss.omp_set_num_threads(threads)
        return labels, sims

    def memory_bytes(self) -> int:
        if self._index is None:
            return 0
        cpu = self._index
        if self.device == "cuda":
            cpu = self._faiss.index_gpu_to_cpu(self._index)
        return len(self._faiss.serialize_index(cpu))

    def _write(self, folder: Path) -> None:
        if self._index is None:
            return
        cpu = self._index
        if self.device == "cuda":
            cpu = self._faiss.index_gpu_to_cpu(self._index)
        self._faiss.write_index(cpu, str(folder / "index.faiss"))

    def _read(self, folder: Path) -> None:
        path = folder / "index.faiss"
        if not path.exists():
            self._index = None
            return
        index = self._faiss.read_index(str(path))
        # The file holds the search breadth it was saved with; the config given to
        # load_index decides it now.
        if self.kind == "hnsw":
            self._faiss.downcast_index(index.index).hnsw.efSearch = self.config.hnsw_ef_search
        elif self.kind == "ivf":
            ivf = self._faiss.extract_index_ivf(index)
            ivf.nprobe = min(self.config.ivf_nprobe, ivf.nlist)
        self._index = self._to_device(index)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError(
            "the faiss backend needs FAISS: pip install faiss-cpu (or faiss-gpu-cu12 on a GPU "
            "machine), or use backend='numpy'"
        ) from exc
    return faiss


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
