"""Search overhead: queries/s through mmsearch (``VectorIndex``; ``Searcher``: index + catalog lookups +
grouping per file + calibration) against raw FAISS on the very same index, batch 1 (and the index layer
in batches of 64), plus the cost of --path filters.

    .venv/bin/python benchmarks/bench_search_overhead.py --n 200000 --types flat,ivf-flat,hnsw
    .venv/bin/python benchmarks/bench_search_overhead.py --n 1000000 --types ivf-flat --threads 16
    .venv/bin/python benchmarks/bench_search_overhead.py --n 1000000 --types hnsw --threads 1 --store /tmp/s1m

``--store`` keeps the store for later runs (an HNSW graph over 1M vectors takes 20 minutes to build on one
thread): it is filled when it holds no vectors, and an index already of the type asked for is kept.

The store is filled with synthetic clustered vectors through the importer (one image item per vector).
Rows: raw FAISS ``index.search`` on the FAISS structure; ``VectorIndex.search`` (mmsearch's wrapper,
re-ranking included for ivf-pq); ``Searcher.search`` (what `mmsearch search` runs after embedding the
query). The target (engine >= 0.9x raw FAISS with the same index and parameters) is read two ways:
the index layer (``VectorIndex``: ids, tombstones, filters, re-ranking; batch 1 and batched) and the
whole ``Searcher`` (batch 1). The per-query overhead in ms is printed too, since the ratio falls as the
index gets faster.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from synthetic_store import fill_store

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.records import Modality
from mmsearch.search.searcher import QueryVectors, Searcher
from mmsearch.store.folder import Store
from mmsearch.store.reselect import reindex


def per_query(fn, queries, seconds: float) -> float:
    """Mean seconds per call of fn(query) over at most ``seconds`` (at least 20 calls)."""
    fn(queries[0])
    calls, started = 0, time.perf_counter()
    while calls < 20 or (time.perf_counter() - started < seconds and calls < len(queries) * 5):
        fn(queries[calls % len(queries)])
        calls += 1
    return (time.perf_counter() - started) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--types", default="flat,ivf-flat,hnsw")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=64, help="batch size of the batched rows (raw FAISS and "
                                                                  "VectorIndex)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--store", type=Path, default=None, help="keep the store here and reuse it on later runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    space = ClusteredSphere(dim=args.dim, clusters=int(min(4096, max(16, args.n // 1000))))
    queries = space.queries(args.queries, salt=3)
    workdir = Path(tempfile.mkdtemp(prefix="mmsearch-overhead-", dir=args.workdir))
    rows = []
    try:
        with Store.open(args.store or workdir / "store", create=True) as store:
            store.acquire_writer()  # indexes read in, as a fresh store's are, not memory-mapped
            if store.dim(Modality.IMAGE) is None or not store.vector_count(Modality.IMAGE):
                fill_store(store, space, args.n, queries[:0])
            elif store.vector_count(Modality.IMAGE) != args.n:
                raise SystemExit(f"{args.store} holds {store.vector_count(Modality.IMAGE):,} vectors, not {args.n:,}")
            for kind in [t.strip() for t in args.types.split(",") if t.strip()]:
                if store.index(Modality.IMAGE).kind != kind:
                    reindex(store, Modality.IMAGE, kind)
                index = store.index(Modality.IMAGE)
                structure = index.faiss_index
                searcher = Searcher(store)
                raw = per_query(lambda q: structure.search(q[None, :], 10), queries, args.seconds)
                wrapped = per_query(lambda q: index.search(q[None, :], 10), queries, args.seconds)
                batches = [queries[i:i + args.batch] for i in range(0, len(queries) - args.batch + 1, args.batch)]
                raw_batch = per_query(lambda b: structure.search(b, 10), batches, args.seconds) / args.batch
                wrapped_batch = per_query(lambda b: index.search(b, 10), batches, args.seconds) / args.batch
                full = per_query(lambda q: searcher.search(QueryVectors({"clip": q[None, :]}), kind="image", k=10),
                                 queries, args.seconds)
                globs = {}
                for pattern in ("/synthetic/00001/*", "*/00001/*"):
                    tick = time.perf_counter()
                    ids = store.catalog.segment_ids(Modality.IMAGE, pattern)
                    first = time.perf_counter() - tick
                    fresh = Searcher(store)
                    filtered = per_query(lambda q: fresh.search(QueryVectors({"clip": q[None, :]}), kind="image",
                                                                k=10, path_glob=pattern), queries, args.seconds / 2)
                    globs[pattern] = {"matching": int(len(ids)), "catalog_ms": round(first * 1e3, 2),
                                      "searcher_ms_per_query": round(filtered * 1e3, 3)}
                rows.append({"kind": kind, "params": dict(index.params), "raw_faiss_qps": round(1 / raw, 1),
                             "vector_index_qps": round(1 / wrapped, 1), "vector_index_vs_raw": round(raw / wrapped, 3),
                             f"raw_faiss_qps_batch{args.batch}": round(1 / raw_batch, 1),
                             f"vector_index_qps_batch{args.batch}": round(1 / wrapped_batch, 1),
                             f"vector_index_vs_raw_batch{args.batch}": round(raw_batch / wrapped_batch, 3),
                             "searcher_qps": round(1 / full, 1),
                             "searcher_vs_raw": round(raw / full, 3), "overhead_ms": round((full - raw) * 1e3, 3),
                             "path_filters": globs})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"n": args.n, "dim": args.dim, "threads": faiss.omp_get_max_threads(), "data": space.describe(),
              "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.n:,} x {args.dim}, {result['threads']} FAISS threads; batch 1, and batch {args.batch} where marked")
    print(f"{'type':<9} {'raw q/s':>9} {'index q/s':>10} {'search q/s':>11} {'ratio':>6} {'+ms/q':>7} "
          f"{'raw/b q/s':>10} {'index/b q/s':>12}  --path filters")
    for row in rows:
        shown = "; ".join(f"{p}: {g['matching']} ids in {g['catalog_ms']} ms, {g['searcher_ms_per_query']} ms/q"
                          for p, g in row["path_filters"].items())
        print(f"{row['kind']:<9} {row['raw_faiss_qps']:>9.1f} {row['vector_index_qps']:>10.1f} "
              f"{row['searcher_qps']:>11.1f} {row['searcher_vs_raw']:>6.2f} {row['overhead_ms']:>7.3f} "
              f"{row[f'raw_faiss_qps_batch{args.batch}']:>10.1f} {row[f'vector_index_qps_batch{args.batch}']:>12.1f}  "
              f"{shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
