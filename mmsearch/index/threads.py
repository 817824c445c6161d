"""How many threads FAISS searches with: one for a query or a few, its default for batches."""
from __future__ import annotations

import threading

SMALL_BATCH = 4
"""Searches of at most this many queries run FAISS on one thread (in the thread that searches): a query
or two over a flat index is memory-bound, and FAISS's OpenMP threads contending with the query encoder's
threads (onnxruntime spins for a while after each run) made a 100k flat search 42 ms on 2 cores, against
12.7 ms on one thread (benchmarks/RESULTS.md, Serving). Larger batches keep FAISS's default."""
_threads = threading.local()


def threads_for(batch: int) -> None:
    """Set the calling thread's FAISS (OpenMP) thread count for a search of ``batch`` queries (cheap: only a
    change is passed to OpenMP, whose setting is per thread)."""
    import faiss

    if not hasattr(_threads, "default"):
        _threads.default, _threads.now = faiss.omp_get_max_threads(), None
    wanted = 1 if batch <= SMALL_BATCH else _threads.default
    if wanted != _threads.now:
        faiss.omp_set_num_threads(wanted)
        _threads.now = wanted
