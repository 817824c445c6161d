"""FAISS indexes over L2-normalised float32 vectors whose ids are catalog segment ids.

Inner product on unit vectors is cosine similarity. The exact index (``flat``) is the default; it
runs on the GPU through FAISS when ``faiss.get_num_gpus() > 0``, and through torch (matrix product +
top-k in float16) when torch sees a GPU but the installed faiss has no GPU support.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbours:
    scores: np.ndarray
    """(n_queries, k) float32, best first."""
    ids: np.ndarray
    """(n_queries, k) int64; -1 where fewer than k vectors matched."""


def _faiss():
    import faiss

    return faiss


def faiss_gpu_count() -> int:
    faiss = _faiss()
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def _as_ids(ids: np.ndarray | list[int]) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {vectors.shape}")
    return vectors


class VectorIndex:
    """An exact inner-product index with explicit ids; subclasses add approximate types."""

    kind = "flat"

    def __init__(self, dim: int, faiss_index=None, *, use_gpu: bool | None = None):
        faiss = _faiss()
        self.dim = dim
        self._cpu = faiss_index if faiss_index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._gpu = None
        if use_gpu is None:
            use_gpu = faiss_gpu_count() > 0
        if use_gpu:
            self._to_gpu()

    # -- placement -------------------------------------------------------------------------------------
    def _to_gpu(self) -> None:
        faiss = _faiss()
        try:
            self._resources = faiss.StandardGpuResources()
            self._gpu = faiss.index_cpu_to_gpu(self._resources, 0, self._cpu)
            log.info("%s index on GPU", self.kind)
        except Exception as exc:  # an index type the GPU build cannot hold: stay on the CPU
            log.warning("keeping %s index on the CPU: %s", self.kind, exc)
            self._gpu = None

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    @property
    def _active(self):
        return self._gpu if self._gpu is not None else self._cpu

    # -- contents --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    def ids(self) -> np.ndarray:
        faiss = _faiss()
        return faiss.vector_to_array(self._cpu.id_map).astype(np.int64) if len(self) else np.empty(0, np.int64)

    def add(self, ids, vectors) -> None:
        ids, vectors = _as_ids(ids), _as_vectors(vectors, self.dim)
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        if not len(ids):
            return
        self._cpu.add_with_ids(vectors, ids)
        if self._gpu is not None:
            self._gpu.add_with_ids(vectors, ids)

    def remove(self, ids) -> int:
        faiss = _faiss()
        ids = _as_ids(ids)
        if not len(ids) or not len(self):
            return 0
        removed = int(self._cpu.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))
        if removed and self._gpu is not None:
            self._to_gpu()  # GPU flat indexes do not support removal: re-copy the CPU index
        return removed

    def search(self, queries, k: int, allowed_ids: np.ndarray | None = None) -> Neighbours:
        """Top-``k`` by inner product; ``allowed_ids`` restricts the search to those ids (no full scan after)."""
        faiss = _faiss()
        queries = _as_vectors(queries, self.dim)
        k = max(1, min(int(k), max(len(self), 1)))
        if allowed_ids is not None:
            allowed_ids = _as_ids(allowed_ids)
            if not len(allowed_ids) or not len(self):
                return _empty(len(queries), k)
            k = min(k, len(allowed_ids))
            if len(allowed_ids) * 8 < len(self):
                return self._search_subset(queries, k, allowed_ids)
            selector = faiss.IDSelectorBatch(len(allowed_ids), faiss.swig_ptr(allowed_ids))
            params = faiss.SearchParameters(sel=selector)
            scores, ids = self._cpu.search(queries, k, params=params)
            return Neighbours(scores, ids)
        if not len(self):
            return _empty(len(queries), k)
        scores, ids = self._active.search(queries, k)
        return Neighbours(scores, ids)

    def _search_subset(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray) -> Neighbours:
        """Exact search over a small id subset: reconstruct those vectors and score them directly."""
        present = allowed_ids[np.isin(allowed_ids, self.ids())]
        if not len(present):
            return _empty(len(queries), k)
        vectors = np.vstack([self._cpu.reconstruct(int(i)) for i in present])
        return exact_top_k(queries, vectors, present, k)

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        faiss = _faiss()
        with atomic_path(Path(path)) as tmp:
            faiss.write_index(self._cpu, str(tmp))

    @classmethod
    def load(cls, path: Path, *, use_gpu: bool | None = None) -> "VectorIndex":
        faiss = _faiss()
        cpu = faiss.read_index(str(path))
        return cls(cpu.d, cpu, use_gpu=use_gpu)

    def describe(self) -> str:
        return f"{self.kind} (exact inner product{', GPU' if self.on_gpu else ''})"


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> Neighbours:
    """Brute-force inner-product top-k in NumPy, ids mapped; the reference every index is checked against."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return Neighbours(np.take_along_axis(scores, top, axis=1).astype(np.float32), ids[top].astype(np.int64))


def _empty(n: int, k: int) -> Neighbours:
    return Neighbours(np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64))
