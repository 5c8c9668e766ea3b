"""The FAISS vector index (flat, HNSW, IVF; CPU or GPU)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ragrec.errors import ConfigError
from ragrec.retrieval._index_base import IndexConfig, VectorIndex

logger = logging.getLogger(__name__)

__all__ = ["FaissIndex"]

_SERIAL_BELOW = 20  # FAISS CPU searches of fewer queries run on one OpenMP thread


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
