"""Recall and latency of an existing store's index (e.g. one kept by ``bench_scale.py --keep``), with
the stored vectors as ground truth: first-time queries, the same again (warm), and queries right after
emptying the OS page cache; optionally for several IVF-PQ re-ranking factors.

    .venv/bin/python benchmarks/bench_store_latency.py --store /tmp/scale10m/mmsearch-scale-XXXX/store \\
        --clusters 4096 --rerank 2,3,5,10 --drop-caches --json

Queries are drawn from the same synthetic space as ``bench_scale.py`` (``--clusters`` must match the
store's: N/1000 between 16 and 4096) with salts no other benchmark uses; the exact top-10 comes from one
scan of every stored vector (about 3 min at 10M x 512). ``--drop-caches`` (Linux, root) writes 3 to
/proc/sys/vm/drop_caches before each cold measurement: the worst case, stored vectors and catalog rows
read from disk. Without ``--rerank`` the index is measured with its tuned parameters.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from synthetic_store import drop_caches, timed

from mmsearch.bench.ann import process_memory
from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.index.exact import ExactTopK, recall_at_k
from mmsearch.records import Modality
from mmsearch.search.searcher import QueryVectors, Searcher
from mmsearch.store.folder import Store


def percentiles(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--clusters", type=int, required=True, help="the synthetic space's clusters (bench_scale: "
                                                                      "N/1000, between 16 and 4096)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rerank", default="", help="comma-separated IVF-PQ re-ranking factors to compare")
    parser.add_argument("--drop-caches", action="store_true")
    parser.add_argument("--open-only", action="store_true", help="only time opening the store and its index "
                                                                  "(what every new search process pays)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict = {"store": str(args.store)}
    with Store.open(args.store) as store:
        dim = store.dim(Modality.IMAGE)
        space = ClusteredSphere(dim=dim, clusters=args.clusters)
        tick = time.perf_counter()
        index = store.index(Modality.IMAGE)
        result.update(index=index.describe(), open_seconds=round(time.perf_counter() - tick, 1))
        if args.open_only:
            print(json.dumps(result, indent=2 if args.json else None))
            return 0
        queries = space.queries(args.queries, salt=23)
        tick = time.perf_counter()
        exact = ExactTopK(queries, 10)
        for ids, vectors in store.catalog.iter_vectors(Modality.IMAGE, dim, chunk=100_000):
            exact.update(ids, vectors)
        result["truth_seconds"] = round(time.perf_counter() - tick, 1)
        settings = [int(r) for r in args.rerank.split(",") if r.strip()] or [None]
        rows = []
        for number, rerank in enumerate(settings):
            if rerank is not None:
                index.set_param("rerank", rerank)
            found = np.vstack([index.search(q[None, :], 10).ids for q in queries])
            row = {"params": dict(index.params), "recall_at_10": round(recall_at_k(found, exact.ids, 10), 4)}
            fresh = space.queries(args.queries, salt=100 + number)
            row["first_time"] = percentiles(timed(lambda q: index.search(q, 10), fresh))
            row["warm"] = percentiles(timed(lambda q: index.search(q, 10), fresh))
            if args.drop_caches:
                drop_caches()
                cold = timed(lambda q: index.search(q, 10), space.queries(args.queries, salt=200 + number))
                row["after_drop_caches"] = percentiles(cold)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        result["rows"] = rows
        searcher = Searcher(store)
        searcher.search(QueryVectors({"clip": space.queries(1, salt=40)}), kind="image", k=10)  # calibration sample
        whole = space.queries(args.queries, salt=41)
        if args.drop_caches:
            drop_caches()
        search = lambda q: searcher.search(QueryVectors({"clip": q}), kind="image", k=10)  # noqa: E731
        first = "after_drop_caches" if args.drop_caches else "first_time"
        result["searcher"] = {first: percentiles(timed(search, whole)), "warm": percentiles(timed(search, whole))}
        memory = process_memory()
        result.update(rss_gib=round(memory["VmRSS"] / 2**30, 2), peak_rss_gib=round(memory["VmHWM"] / 2**30, 2))
    print(json.dumps(result, indent=2 if args.json else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
