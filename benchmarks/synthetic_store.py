"""Shared by bench_scale.py and bench_search_overhead.py: fill a store with synthetic clustered vectors
through the importer (streamed: 10M x 512 never sits in memory), computing the exact top-k of held-out
queries on the way, so that no second pass over the data is needed for ground truth."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.index.exact import ExactTopK
from mmsearch.ingest.importer import ImportChunk, bind_import_model, import_chunks
from mmsearch.records import Modality
from mmsearch.store.folder import Store

MODEL_LABEL = "synthetic-clustered:random"
"""The model spec recorded in the store: a label (no model is ever loaded by these benchmarks)."""
CHUNK = 65_536


def path_of(row: int) -> str:
    return f"/synthetic/{row // 10_000:05d}/{row:09d}.jpg"


def fill_store(store: Store, space: ClusteredSphere, n: int, queries: np.ndarray, k: int = 10,
               log_every: float = 30.0, timings: dict[str, float] | None = None,
               model: str = MODEL_LABEL) -> tuple[np.ndarray, float]:
    """Import rows 0..n of ``space`` as image items; returns (exact top-k segment ids of ``queries``,
    seconds spent importing). The seconds count mmsearch's import alone: generating the rows and the
    exact search for the ground truth happen in the same pass but are timed apart (``timings`` gets
    "data_seconds" for them and "wall_seconds" for the whole pass). ``model``: what the store records as the
    maker of the vectors (a real architecture such as ViT-B-32:random lets it answer text queries)."""
    store.acquire_writer()
    bind_import_model(store, Modality.IMAGE, model, space.dim, "synthetic")
    exact = ExactTopK(queries, k) if len(queries) else None
    started = last = time.perf_counter()
    data_seconds = 0.0

    def chunks():
        nonlocal last, data_seconds
        for start in range(0, n, CHUNK):
            tick = time.perf_counter()
            vectors = space.rows(start, min(CHUNK, n - start))
            rows = np.arange(start, start + len(vectors), dtype=np.int64)
            if exact is not None:
                exact.update(rows, vectors)
            paths = [path_of(int(r)) for r in rows]
            data_seconds += time.perf_counter() - tick
            yield ImportChunk(vectors, paths)
            if time.perf_counter() - last > log_every:
                last = time.perf_counter()
                rate = (start + len(vectors)) / max(1e-9, last - started - data_seconds)
                print(f"  imported {start + len(vectors):,}/{n:,} ({rate:,.0f}/s)", file=sys.stderr, flush=True)

    import_chunks(store, chunks(), Modality.IMAGE)
    wall = time.perf_counter() - started
    seconds = wall - data_seconds
    if timings is not None:
        timings.update(data_seconds=round(data_seconds, 1), wall_seconds=round(wall, 1))
    truth = rows_to_segment_ids(store, exact.ids) if exact is not None else np.empty((0, k), np.int64)
    return truth, seconds


def rows_to_segment_ids(store: Store, rows: np.ndarray) -> np.ndarray:
    """Map row numbers (as generated) to the segment ids the import gave them, through their paths."""
    wanted = np.unique(rows[rows >= 0])
    by_row: dict[int, int] = {}
    with store.catalog.snapshot() as read:
        for path, seg_ids in read.segment_ids_by_path([path_of(int(r)) for r in wanted]).items():
            by_row[int(Path(path).stem)] = seg_ids[0]
    return np.vectorize(lambda r: by_row.get(int(r), -1), otypes=[np.int64])(rows)


def memory() -> dict[str, int]:
    from mmsearch.bench.ann import process_memory

    return process_memory()


def timed(search, queries: np.ndarray) -> list[float]:
    """Milliseconds of ``search(query[None, :])`` for each query row, one at a time (batch 1)."""
    times = []
    for query in queries:
        tick = time.perf_counter()
        search(query[None, :])
        times.append((time.perf_counter() - tick) * 1e3)
    return times


def drop_caches() -> None:
    """Empty the OS page cache (Linux, root): the next reads of the store come from disk."""
    import os

    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
