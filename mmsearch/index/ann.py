"""Approximate CPU index types: IVF-Flat, IVF-PQ (re-ranked with stored vectors) and HNSW.

Each keeps the contract of ``VectorIndex``: ids are catalog segment ids, ``remove`` works (natively for
IVF, as tombstones for HNSW), and an ``allowed_ids`` filter goes into FAISS as an ``IDSelector`` with
the search widened in proportion to how much the filter leaves out (``nprobe`` / ``efSearch``).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import numpy as np

from ..errors import UsageError
from .backend import Neighbours, VectorSource
from .faiss_base import VectorIndex, _faiss

log = logging.getLogger(__name__)

MIN_POINTS_PER_CENTROID = 39
"""FAISS warns (on stderr) when k-means gets fewer training points than this per centroid."""
MAX_EF_SEARCH = 4096
HNSW_QUANTIZER_M = 32


def coarse_quantizer(dim: int, params: Mapping[str, Any]):
    """The index of an IVF type's list centroids: exact (``IndexFlatIP``) by default; with the parameter
    ``quantizer="hnsw"`` (given to ``create_index``; auto-selection keeps to ``MAX_NLIST`` exact lists)
    an HNSW graph over the centroids, which makes assigning a vector to its list cheaper where there are
    tens of thousands of lists. On two cores, with 16k lists, it still added only ~10k vectors/s."""
    faiss = _faiss()
    if params.get("quantizer", "flat") == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, HNSW_QUANTIZER_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 40
        return graph
    return faiss.IndexFlatIP(dim)


def _set_quantizer_search(index, nprobe: int) -> None:
    """An HNSW coarse quantizer must look at least ``nprobe`` centroids deep (twice that, for accuracy)."""
    faiss = _faiss()
    quantizer = faiss.downcast_index(index.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = int(min(MAX_EF_SEARCH, max(64, 2 * nprobe)))


GRAPH_KMEANS_ITERATIONS = 10
"""k-means iterations for IVF types with a graph quantizer (FAISS's default is 25): at 16k lists each
iteration costs a graph build and a search per training vector; the search parameters are tuned for
recall afterwards anyway."""


def _spherical_if_graph(index, params: Mapping[str, Any]):
    """With a graph quantizer, k-means keeps its centroids on the unit sphere, where the vectors are and
    where inner-product search in a graph behaves, and runs ``GRAPH_KMEANS_ITERATIONS`` iterations."""
    if params.get("quantizer", "flat") == "hnsw":
        index.cp.spherical = True
        index.cp.niter = GRAPH_KMEANS_ITERATIONS
    return index


class IVFFlatIndex(VectorIndex):
    """Inverted lists of full float32 vectors; ``nprobe`` of ``nlist`` lists are scanned per query."""

    kind = "ivf-flat"
    exact = False
    trainable = True
    defaults: Mapping[str, Any] = {"nlist": 1024, "nprobe": 16}

    def _new_faiss_index(self):
        faiss = _faiss()
        index = faiss.IndexIVFFlat(coarse_quantizer(self.dim, self.params), self.dim, int(self.params["nlist"]),
                                   faiss.METRIC_INNER_PRODUCT)
        return _spherical_if_graph(index, self.params)

    def _apply_params(self) -> None:
        self.params["nprobe"] = int(max(1, min(int(self.params["nprobe"]), int(self._index.nlist))))
        self._index.nprobe = self.params["nprobe"]
        _set_quantizer_search(self._index, self.params["nprobe"])

    def _held_ids(self) -> np.ndarray:
        faiss = _faiss()
        invlists = self._index.invlists
        parts = []
        for list_no in range(invlists.nlist):
            size = invlists.list_size(list_no)
            if size:
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).astype(np.int64))
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def _storage(self):
        return None

    def _fit_to_sample(self, n: int) -> dict[str, Any]:
        """Parameters shrunk so that ``n`` training points are enough (no FAISS warnings, no failure)."""
        nlist = int(max(1, min(int(self.params["nlist"]), n // MIN_POINTS_PER_CENTROID)))
        return {"nlist": nlist}

    def _train(self, vectors: np.ndarray) -> None:
        fitted = self._fit_to_sample(len(vectors))
        if any(self.params.get(key) != value for key, value in fitted.items()):
            if self._index.ntotal:
                raise ValueError("cannot retrain an index that holds vectors")
            log.info("%s: %d training vectors, parameters shrunk to %s", self.kind, len(vectors), fitted)
            self.params.update(fitted)
            self._index = self._new_faiss_index()
        self._index.train(vectors)
        self._apply_params()

    def _search_params(self, selector, fraction: float, k: int):
        if selector is None and fraction >= 1.0:
            return None  # the index's own nprobe (set by _apply_params); building parameters costs ~20 us
        faiss = _faiss()
        params = faiss.SearchParametersIVF()
        # a filter that lets through a fraction f of the vectors needs about 1/f as many lists for k hits
        params.nprobe = int(min(self._index.nlist, math.ceil(self.params["nprobe"] / max(fraction, 1e-9))))
        if selector is not None:
            params.sel = selector
        return params


class IVFPQIndex(IVFFlatIndex):
    """Inverted lists of ``m``-byte product-quantised codes. With a vector source (the catalog's stored
    vectors) each query takes ``k * rerank`` candidates from the codes and re-ranks them exactly."""

    kind = "ivf-pq"
    defaults: Mapping[str, Any] = {"nlist": 1024, "nprobe": 16, "m": 16, "nbits": 8, "rerank": 10}

    def __init__(self, dim: int, params: Mapping[str, Any] | None = None, *, faiss_index=None,
                 source: VectorSource | None = None):
        m = int({**self.defaults, **(params or {})}["m"])
        if m < 1 or dim % m:
            raise UsageError(f"ivf-pq: m={m} must divide the vector dimension {dim}")
        super().__init__(dim, params, faiss_index=faiss_index, source=source)

    def _new_faiss_index(self):
        faiss = _faiss()
        index = faiss.IndexIVFPQ(coarse_quantizer(self.dim, self.params), self.dim, int(self.params["nlist"]),
                                 int(self.params["m"]), int(self.params["nbits"]), faiss.METRIC_INNER_PRODUCT)
        return _spherical_if_graph(index, self.params)

    def _fit_to_sample(self, n: int) -> dict[str, Any]:
        fitted = super()._fit_to_sample(n)
        fitted["nbits"] = int(max(1, min(int(self.params["nbits"]), math.floor(math.log2(max(n, 2) / MIN_POINTS_PER_CENTROID)))))
        return fitted

    def _fetch_k(self, k: int) -> int:
        return k * int(self.params["rerank"]) if self.source is not None else k

    def _finish(self, queries: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int) -> Neighbours:
        if self.source is None:
            return super()._finish(queries, scores, ids, k)
        return rerank(queries, ids, self.source, k)

    def describe(self) -> str:
        text = super().describe()
        return text if self.source is not None else text[:-1] + ", no re-ranking)"


def rerank(queries: np.ndarray, candidates: np.ndarray, source: VectorSource, k: int) -> Neighbours:
    """Exact top-``k`` among each query's candidate ids, with vectors read from ``source``."""
    wanted = np.unique(candidates[candidates >= 0])
    found, vectors = source(wanted) if len(wanted) else (np.empty(0, np.int64), np.empty((0, queries.shape[1])))
    if not len(found):
        return Neighbours(np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64))
    order = np.argsort(found)
    found, vectors = found[order], np.asarray(vectors, np.float32)[order]
    at = np.clip(np.searchsorted(found, candidates), 0, len(found) - 1)
    known = (candidates >= 0) & (found[at] == candidates)
    exact = np.einsum("qd,qcd->qc", queries, vectors[at])
    exact = np.where(known, exact, -np.inf).astype(np.float32)
    ids = np.where(known, candidates, -1)
    top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return Neighbours(np.take_along_axis(exact, top, axis=1), np.take_along_axis(ids, top, axis=1))


class HNSWIndex(VectorIndex):
    """Hierarchical navigable small-world graph over full vectors (CPU). The graph cannot forget a node:
    removals are tombstones excluded inside the search, and past ``TOMBSTONE_FRACTION`` the graph is
    rebuilt from the vectors it holds."""

    kind = "hnsw"
    exact = False
    tombstones_only = True
    defaults: Mapping[str, Any] = {"M": 32, "efConstruction": 80, "efSearch": 64}

    def _new_faiss_index(self):
        faiss = _faiss()
        graph = faiss.IndexHNSWFlat(self.dim, int(self.params["M"]), faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = int(self.params["efConstruction"])
        return faiss.IndexIDMap2(graph)

    def _graph(self):
        return _faiss().downcast_index(self._index.index)

    def _apply_params(self) -> None:
        self._graph().hnsw.efSearch = int(self.params["efSearch"])

    def _storage(self):
        return _faiss().downcast_index(self._graph().storage)

    def _search_params(self, selector, fraction: float, k: int):
        if selector is None and fraction >= 1.0 and k <= int(self.params["efSearch"]):
            return None  # the graph's own efSearch (set by _apply_params)
        faiss = _faiss()
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(min(MAX_EF_SEARCH, max(k, math.ceil(self.params["efSearch"] / max(fraction, 1e-9)))))
        if selector is not None:
            params.sel = selector
        return params

    def compact(self) -> None:
        super().compact()
        self._apply_params()
