"""Approximate-search benchmark: for each index type, recall@10 against exact search on held-out queries,
build time (train + add), memory, and queries/s at batch 1 and 64; plus a sweep of FAISS's BLAS
threshold for exhaustive search. Pure: returns records, prints nothing.

Data: a store's own vectors (a held-out sample becomes the queries and is left out of the base), or
``bench.synthetic.ClusteredSphere`` (a clustered mixture with known structure, never uniform noise). Search
parameters are tuned as a store tunes them (on held-out queries, target recall@10 0.95), then
recall is measured on other held-out queries, which tuning never saw.
"""
from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..index.backend import VectorBackend
from ..index.builder import TUNE_QUERIES, training_size, tune
from ..index.exact import ExactTopK, exact_top_k, recall_at_k
from ..index.factory import CPU_KINDS, create_index, index_class
from ..index.faiss_base import BLAS_THRESHOLD, _faiss
from ..index.selection import GiB, params_for
from ..records import Modality
from ..store.folder import Store
from .synthetic import ClusteredSphere

log = logging.getLogger(__name__)

K = 10


@dataclass(frozen=True)
class AnnResult:
    kind: str
    params: Mapping[str, Any]
    recall_at_10: float
    build_seconds: float
    """Train + add."""
    train_seconds: float
    index_bytes: int
    """The serialised index (for ivf-pq, without the stored vectors it re-ranks with, which stay on disk)."""
    rss_delta_bytes: int
    qps_batch1: float
    qps_batch64: float
    p50_ms_batch1: float
    note: str = ""


@dataclass(frozen=True)
class BlasPoint:
    threshold: int
    batch: int
    ms_per_query: float


@dataclass(frozen=True)
class AnnReport:
    data: str
    n: int
    dim: int
    queries: int
    threads: int
    results: tuple[AnnResult, ...]
    blas: tuple[BlasPoint, ...] = ()
    blas_threshold: int = BLAS_THRESHOLD
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Dataset:
    description: str
    base: np.ndarray
    ids: np.ndarray
    queries: np.ndarray
    """Held-out queries recall is measured on."""
    tune_queries: np.ndarray
    """Other held-out queries, which search parameters are tuned on."""


def process_memory() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process in bytes, from /proc/self/status (0 where unreadable)."""
    found = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                key = line.split(":", 1)[0]
                if key in found:
                    found[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return found


def synthetic_dataset(n: int, dim: int, *, queries: int = 500, seed: int = 0, clusters: int | None = None) -> Dataset:
    data = ClusteredSphere(dim=dim, clusters=clusters or int(min(1024, max(16, n // 1000))), seed=seed)
    base = np.concatenate(list(data.stream(n)))
    return Dataset(data.describe(), base, np.arange(n, dtype=np.int64), data.queries(queries),
                   data.queries(TUNE_QUERIES, salt=1))


def store_dataset(store: Store, modality: Modality, *, queries: int = 500, limit: int | None = None,
                  seed: int = 0) -> Dataset:
    """A store's vectors; ``queries`` of them, chosen at random, are held out of the base."""
    dim = store.dim(modality)
    parts, id_parts = [], []
    for ids, matrix in store.catalog.iter_vectors(modality, dim, chunk=50_000):
        parts.append(matrix)
        id_parts.append(ids)
        if limit is not None and sum(map(len, id_parts)) >= limit + queries:
            break
    vectors, ids = np.concatenate(parts)[:(limit or 1 << 62) + queries], np.concatenate(id_parts)
    ids = ids[:len(vectors)]
    count = min(queries, len(vectors) // 10)
    tune_count = min(TUNE_QUERIES, len(vectors) // 10)
    chosen = np.random.default_rng(seed).choice(len(vectors), size=count + tune_count, replace=False)
    held = np.zeros(len(vectors), bool)
    held[chosen] = True
    return Dataset(f"store {store.path} ({modality.value} vectors, {count} held out as queries and {tune_count} "
                   f"for tuning)", np.ascontiguousarray(vectors[~held]), ids[~held],
                   np.ascontiguousarray(vectors[chosen[:count]]), np.ascontiguousarray(vectors[chosen[count:]]))


def _array_source(ids: np.ndarray, base: np.ndarray) -> Callable:
    order = np.argsort(ids)
    sorted_ids = ids[order]

    def fetch(wanted: np.ndarray):
        at = np.clip(np.searchsorted(sorted_ids, wanted), 0, len(sorted_ids) - 1)
        found = sorted_ids[at] == wanted
        return wanted[found], base[order[at[found]]]
    return fetch


def exact_truth(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    exact = ExactTopK(queries, k)
    for start in range(0, len(base), 65_536):
        exact.update(ids[start:start + 65_536], base[start:start + 65_536])
    return exact.ids


def _timed_search(index: VectorBackend, queries: np.ndarray, batch: int, seconds: float) -> tuple[float, float]:
    """(queries per second, median ms per call) over at most ``seconds``."""
    calls, done, started = [], 0, time.perf_counter()
    while done < len(queries) and (time.perf_counter() - started) < seconds or not calls:
        chunk = queries[done % len(queries):][:batch]
        if len(chunk) < batch:
            chunk = queries[:batch]
        tick = time.perf_counter()
        index.search(chunk, K)
        calls.append(time.perf_counter() - tick)
        done += len(chunk)
    return done / sum(calls), float(np.median(calls) * 1e3)


def bench_kind(kind: str, data: Dataset, truth: np.ndarray, *, params: Mapping[str, Any] | None = None,
               seconds: float = 1.0, target: float = 0.95) -> AnnResult:
    n, dim = data.base.shape
    chosen = {**params_for(kind, n, dim, 64 * GiB), **(params or {})}
    gc.collect()
    before = process_memory()["VmRSS"]
    source = _array_source(data.ids, data.base)
    started = time.perf_counter()
    index = create_index(kind, dim, chosen, source=source)
    if index.trainable:
        rng = np.random.default_rng(1)
        sample = data.base[np.sort(rng.choice(n, size=training_size(index, n), replace=False))]
        index.train(sample)
        del sample
    trained = time.perf_counter()
    for start in range(0, n, 100_000):
        index.add(data.ids[start:start + 100_000], data.base[start:start + 100_000])
    built = time.perf_counter()
    rss = process_memory()["VmRSS"] - before
    note = ""
    if not index.exact:
        tune_truth = exact_truth(data.base, data.ids, data.tune_queries)
        _, note = tune(index, data.tune_queries, tune_truth, target=target, queries_are="held-out tuning queries")
    recall = recall_at_k(index.search(data.queries, K).ids, truth, K)
    qps1, p50 = _timed_search(index, data.queries, 1, seconds)
    qps64, _ = _timed_search(index, data.queries, 64, seconds)
    if kind == "ivf-pq":
        note = (note + "; " if note else "") + "re-ranks from stored vectors (held on disk by a store, not counted)"
    return AnnResult(kind, dict(index.params), round(recall, 4), round(built - started, 3), round(trained - started, 3),
                     index.memory_bytes(), int(rss), round(qps1, 1), round(qps64, 1), round(p50, 3), note)


def blas_sweep(base: np.ndarray, queries: np.ndarray, *, batches: Sequence[int] = (1, 4, 8, 16, 20, 32, 64),
               thresholds: Sequence[int] = (128_000, 20, BLAS_THRESHOLD), limit: int = 100_000,
               seconds: float = 0.3) -> tuple[BlasPoint, ...]:
    """ms per query of exhaustive (flat) search at each batch size under each BLAS threshold."""
    faiss = _faiss()
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(np.ascontiguousarray(base[:limit]))
    saved = faiss.cvar.distance_compute_blas_threshold
    points = []
    try:
        for threshold in thresholds:
            faiss.cvar.distance_compute_blas_threshold = int(threshold)
            for batch in batches:
                chunk = np.ascontiguousarray(np.resize(queries, (batch, queries.shape[1])))
                flat.search(chunk, K)
                calls, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds or calls < 2:
                    flat.search(chunk, K)
                    calls += 1
                points.append(BlasPoint(int(threshold), batch,
                                        round((time.perf_counter() - started) / calls / batch * 1e3, 4)))
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved
    return tuple(points)


def offered_kinds() -> list[str]:
    """The CPU types, plus the GPU types this machine can run (torch-flat only where torch sees a GPU)."""
    kinds = list(CPU_KINDS) + [k for k in ("gpu-flat", "gpu-ivf", "cagra") if index_class(k).available()]
    try:
        import torch

        if torch.cuda.is_available():
            kinds.append("torch-flat")
    except Exception:  # no usable torch: nothing more to offer
        pass
    return kinds


def run_ann_bench(data: Dataset, *, kinds: Sequence[str] | None = None, seconds: float = 1.0,
                  params: Mapping[str, Mapping[str, Any]] | None = None, blas: bool = True,
                  progress: Callable[[str], None] | None = None) -> AnnReport:
    """Benchmark ``kinds`` (default: every CPU type, plus GPU types this machine can run) on ``data``."""
    faiss = _faiss()
    kinds = list(kinds or offered_kinds())
    truth = exact_truth(data.base, data.ids, data.queries)
    check = exact_top_k(data.queries[:5], data.base, data.ids, K).ids  # the streaming reference agrees with NumPy
    assert recall_at_k(truth[:5], check, K) == 1.0
    results = []
    for kind in kinds:
        if progress is not None:
            progress(kind)
        results.append(bench_kind(kind, data, truth, params=(params or {}).get(kind), seconds=seconds))
        gc.collect()
    sweep = blas_sweep(data.base, data.queries) if blas else ()
    return AnnReport(data.description, int(data.base.shape[0]), int(data.base.shape[1]), int(len(data.queries)),
                     int(faiss.omp_get_max_threads()), tuple(results), sweep, BLAS_THRESHOLD,
                     ("recall@10 is against exact search on held-out queries; search parameters were tuned for "
                      "recall@10 >= 0.95 on other held-out queries, as a store tunes its index",))
