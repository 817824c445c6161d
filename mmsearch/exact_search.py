"""Exact inner-product search in NumPy / FAISS kernels: the reference every index type is checked
against, and the small helpers the index types share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neighbours:
    scores: np.ndarray
    """(n_queries, k) float32, best first."""
    ids: np.ndarray
    """(n_queries, k) int64; -1 where fewer than k vectors matched."""


def _storage_matrix(storage, ntotal: int) -> np.ndarray:
    """A read-only view of an ``IndexFlat``'s vectors, (ntotal, d)."""
    import faiss

    if not ntotal:
        return np.empty((0, storage.d), np.float32)
    return faiss.rev_swig_ptr(storage.get_xb(), ntotal * storage.d).reshape(ntotal, storage.d)


def inner_products(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n, q) inner products of each matrix row with each query row, by FAISS's single-threaded SIMD
    kernel: for small products (a calibration sample against one query) it beats a BLAS call, whose
    thread hand-offs cost milliseconds on a busy machine."""
    import faiss

    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    out = np.empty((len(queries), len(matrix)), np.float32)
    for row, query in enumerate(queries):
        faiss.fvec_inner_products_ny(faiss.swig_ptr(out[row]), faiss.swig_ptr(query), faiss.swig_ptr(matrix),
                                     matrix.shape[1], len(matrix))
    return out.T


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


def _pad(found: Neighbours, k: int) -> Neighbours:
    """Widen to k columns with -1 ids (and -inf scores), and give FAISS's missing results those values."""
    scores, ids = found.scores, found.ids
    if scores.shape[1] < k:
        extra = k - scores.shape[1]
        scores = np.hstack([scores, np.full((len(scores), extra), -np.inf, np.float32)])
        ids = np.hstack([ids, np.full((len(ids), extra), -1, np.int64)])
    missing = ids < 0
    if missing.any():
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
    return Neighbours(scores, ids)
