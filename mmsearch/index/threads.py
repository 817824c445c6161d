"""How many threads FAISS searches with: one for a query or a few, its default for batches."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

SMALL_BATCH = 4
"""Searches of at most this many queries run FAISS on one thread (in the thread that searches): a query
or two over a flat index is memory-bound, and FAISS's OpenMP threads contending with the query encoder's
threads (onnxruntime spins for a while after each run) made a 100k flat search 42 ms on 2 cores, against
12.7 ms on one thread (benchmarks/RESULTS.md, Serving). Larger batches keep FAISS's default."""


@contextmanager
def threads_for(batch: int) -> Iterator[None]:
    """Run a search of ``batch`` queries with the calling thread's OpenMP count set for it, then put the count
    back: torch shares the OpenMP runtime, and a model run next in this thread (a query tower, the
    re-ranking model) must keep all its threads. Two calls into OpenMP, whose setting is per thread."""
    import faiss

    before = faiss.omp_get_max_threads()
    wanted = 1 if batch <= SMALL_BATCH else before
    if wanted == before:
        yield
        return
    faiss.omp_set_num_threads(wanted)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
