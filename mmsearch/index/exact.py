"""Exact inner-product search and recall@k: the reference every backend is checked against, written once.

``ExactTopK`` keeps the exact top-k of fixed queries over vectors given a chunk at a time (bounded
memory at 10M vectors); ``exact_top_k`` is the same over one matrix. Ties are broken by the order the
vectors were given in (a stable sort), so the answer is deterministic.

``recall_at_k`` is the one measure of an approximate answer used everywhere (tuning, benchmarks, tests):
for each query, the share of its true top-k ids (``-1`` padding ignored) found among its first k
results; the recall is the mean of those shares over the queries that have at least one true id.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .backend import Neighbours


class ExactTopK:
    """Exact top-``k`` by inner product of fixed ``queries`` over vectors seen a chunk at a time."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        self.k = int(k)
        self.scores = np.full((len(self.queries), self.k), -np.inf, np.float32)
        self.ids = np.full((len(self.queries), self.k), -1, np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> "ExactTopK":
        """Fold in a chunk of (ids, vectors); returns self."""
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return self
        scores = np.hstack([self.scores, self.queries @ np.asarray(vectors, np.float32).T])
        every = np.hstack([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))])
        top = np.argpartition(-scores, min(self.k, scores.shape[1] - 1), axis=1)[:, :self.k]
        top_scores = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        self.scores = np.take_along_axis(top_scores, order, 1).astype(np.float32)
        self.ids = np.take_along_axis(np.take_along_axis(every, top, 1), order, 1)
        self.ids[~np.isfinite(self.scores)] = -1
        return self

    def result(self) -> Neighbours:
        return Neighbours(self.scores, self.ids)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> Neighbours:
    """Brute-force top-``min(k, len(vectors))`` of ``queries`` over ``vectors`` (whose ids are ``ids``)."""
    return ExactTopK(queries, min(int(k), len(vectors))).update(ids, vectors).result()


def empty_neighbours(n: int, k: int) -> Neighbours:
    return Neighbours(np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64))


def padded(found: Neighbours, k: int) -> Neighbours:
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


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of the share of each query's true top-k (``truth``'s first k ids that are >= 0)
    found among its first k results (``found``); queries with no true id are left out. A FRACTION (0..1)."""
    found, truth = np.asarray(found), np.asarray(truth)
    if found.ndim != 2 or truth.ndim != 2 or len(found) != len(truth):
        raise UsageError(f"found and true ids must be (queries, K) arrays of equal length, got {found.shape} "
                         f"and {truth.shape}")
    if k < 1 or k > min(found.shape[1], truth.shape[1]):
        raise UsageError(f"recall@{k}: k must be between 1 and the depth retrieved "
                         f"({min(found.shape[1], truth.shape[1])})")
    shares = []
    for found_row, true_row in zip(found[:, :k].tolist(), truth[:, :k].tolist()):
        wanted = {i for i in true_row if i >= 0}
        if wanted:
            shares.append(len(wanted.intersection(found_row)) / len(wanted))
    if not shares:
        raise UsageError("recall@k: no query has any true neighbour")
    return float(np.mean(shares))
