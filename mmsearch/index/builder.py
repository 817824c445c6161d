"""Building an index from stored vectors: train on a sample, add everything, and tune the search
parameter (``nprobe``, ``efSearch``) for recall on held-out stored vectors against exact search.

This module knows vectors, not stores: it reads through the ``backend.StoredVectors`` it is given and
returns the built backend with its final choice. Recording the choice, swapping the file and deciding
when to re-select are the store's business (``store.reselect``).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ..progress import NoProgress, Progress
from .backend import StoredVectors, VectorBackend
from .exact import ExactTopK, recall_at_k
from .factory import create_index, index_class
from .selection import TARGET_RECALL, IndexChoice, cpu_equivalent, estimate_bytes

log = logging.getLogger(__name__)

TUNE_QUERIES = 200
TUNE_K = 10
LADDERS = {"nprobe": [2 ** i for i in range(0, 12)], "efSearch": [16, 32, 64, 128, 256, 512, 1024, 2048],
           "itopk_size": [32, 64, 128, 256, 512]}
RERANK_FEWER = (1, 2, 3, 5)
"""IVF-PQ re-ranks ``k * rerank`` candidates (10 by default); tuning tries these smaller factors once
``nprobe`` reaches the target and keeps the smallest that still does."""
TUNED = {"ivf-flat": "nprobe", "gpu-ivf": "nprobe", "ivf-pq": "nprobe", "hnsw": "efSearch", "cagra": "itopk_size"}
ADD_CHUNK = 50_000


def tune(index: VectorBackend, queries: np.ndarray, truth: np.ndarray, *, k: int = TUNE_K,
         target: float = TARGET_RECALL, queries_are: str = "held-out stored vectors") -> tuple[float, str]:
    """Set the index's search parameter to the smallest value reaching ``target`` recall@k against
    ``truth`` (the best value tried when none does); returns (recall, a note for the choice's reason,
    which calls the queries ``queries_are``; empty for a type with nothing to tune)."""
    name = TUNED.get(index.kind)
    if name is None or index.exact:
        return 1.0, ""
    limit = int(index.params.get("nlist", 1 << 30)) if name == "nprobe" else 1 << 30
    ladder = [value for value in LADDERS[name] if value <= min(limit, 1024 if name == "nprobe" else limit)] or [1]

    def measure() -> float:
        return recall_at_k(index.search(queries, k).ids, truth, k)

    best = (-1.0, ladder[0])
    for value in ladder:
        index.set_param(name, value)
        recall = measure()
        if recall > best[0] + 1e-9:
            best = (recall, value)
        if recall >= target:
            break
    index.set_param(name, best[1])
    note = ""
    if best[0] >= target and index.kind == "ivf-pq" and index.source is not None:
        # as few candidates as reach the target: each is a stored vector read from the catalog, from disk
        # when it is not in the page cache
        original = int(index.params["rerank"])
        for rerank in (value for value in RERANK_FEWER if value < original):
            index.set_param("rerank", rerank)
            recall = measure()
            if recall >= target:
                best = (recall, best[1])
                note = f", rerank={rerank}"
                break
        else:
            index.set_param("rerank", original)
    if best[0] < target and index.kind == "ivf-pq":
        for rerank in (20, 40):
            index.set_param("rerank", rerank)
            recall = measure()
            if recall > best[0]:
                best = (recall, best[1])
            else:
                index.set_param("rerank", rerank // 2)
                break
            if recall >= target:
                break
    return best[0], (f"{name}={best[1]}{note} tuned for recall@{k} = {best[0]:.3f} (target {target}) on "
                     f"{len(queries)} {queries_are} vs exact search")


def training_size(index: VectorBackend, n: int) -> int:
    """How many stored vectors a trainable index is trained on: enough for its lists, at most all."""
    nlist = int(index.params.get("nlist", 1))
    return int(min(n, max(65_536, 40 * nlist)))


def build_index(stored: StoredVectors, choice: IndexChoice, *, target: float = TARGET_RECALL,
                progress: Progress | None = None, label: str = "") -> tuple[VectorBackend, IndexChoice]:
    """A new index of ``choice``'s type over every vector of ``stored``, trained and tuned; returns it with
    the choice as built (the type this machine can run, tuned parameters, the reason with the recall
    reached). ``progress`` counts the vectors added; ``label`` names them for the progress bar."""
    started = time.perf_counter()
    progress = progress or NoProgress()
    kind = choice.kind
    if not index_class(kind).available():
        kind = cpu_equivalent(kind)
        log.warning("%s index cannot run on this machine: building %s instead", choice.kind, kind)
    index = create_index(kind, stored.dim, choice.params, source=stored.fetch)
    ids = stored.ids()
    rng = np.random.default_rng(0)
    if index.trainable and len(ids):
        sample = np.sort(rng.choice(ids, size=training_size(index, len(ids)), replace=False))
        index.train(stored.fetch(sample)[1])
        log.info("%s index trained on %d vectors in %.1f s", kind, len(sample), time.perf_counter() - started)
    exact = None
    if not index.exact and len(ids) > 20:  # held-out queries: added only after tuning
        query_ids, queries = stored.fetch(np.sort(rng.choice(ids, size=min(TUNE_QUERIES, len(ids) // 10),
                                                              replace=False)))
        exact = ExactTopK(queries, TUNE_K)
    progress.start(len(ids), f"building the {label + ' ' if label else ''}index ({kind})", "vector")
    try:
        for chunk_ids, vectors in stored.chunks(ADD_CHUNK):
            count = len(chunk_ids)
            if exact is not None:
                keep = ~np.isin(chunk_ids, query_ids)
                chunk_ids, vectors = chunk_ids[keep], vectors[keep]
                exact.update(chunk_ids, vectors)
            index.add(chunk_ids, vectors)
            progress.advance(count)
    finally:
        progress.finish()
    log.info("%s index: %d vectors added after %.1f s; tuning", kind, len(index), time.perf_counter() - started)
    reason = choice.reason
    if exact is not None:
        _, note = tune(index, queries, exact.ids, target=target)
        index.add(query_ids, queries)
        reason += f"; {note}" if note else ""
    log.info("%s index of %d vectors built in %.1f s", kind, len(index), time.perf_counter() - started)
    final = choice.with_(kind=kind, params=dict(index.params), reason=reason, n_vectors=len(ids),
                         estimated_bytes=estimate_bytes(kind, len(ids), stored.dim, index.params))
    return index, final
