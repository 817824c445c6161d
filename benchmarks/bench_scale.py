"""Scale benchmark: N synthetic clustered vectors imported into a fresh store, index type chosen
automatically, then build time, resident memory, recall@10 against exact search and batch-1 latency.

    .venv/bin/python benchmarks/bench_scale.py --n 1000000            # target: recall@10 >= 0.95, p50 <= 5 ms
    .venv/bin/python benchmarks/bench_scale.py --n 10000000 --memory-budget 8GiB
                                  # target: <= 8 GiB resident, recall@10 >= 0.90, p50 <= 20 ms, built <= 60 min
    .venv/bin/python benchmarks/bench_scale.py --n 50000 --dim 512     # a quick check (about a minute)
    .venv/bin/python benchmarks/bench_scale.py --n 50000 --index-type ivf-pq   # the 10M code path, small

The data (``mmsearch.bench.synthetic.ClusteredSphere``) is generated in 64k-row blocks and streamed into the
importer, so memory stays bounded; the exact top-10 of the held-out queries is computed on the way. The
store needs about 2.3 KB of disk per 512-d vector (23 GB at 10M; --workdir chooses where it goes).
Build time = import + index selection, training, adding and tuning (``maybe_reselect``); generating the
synthetic rows and the exact ground truth run in the same pass as the import but are timed apart
(``data_and_truth_seconds``), since a user imports rows that already exist (``mmsearch import-vectors``). Latency is
``VectorIndex.search`` per query (re-ranking from the catalog included) on queries not searched before
(``p50_ms``: their candidates' stored vectors may have to come from disk) and on the same queries again
(``p50_warm_ms``), and, for comparison, the full ``Searcher`` (catalog lookups, grouping per file).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from synthetic_store import drop_caches, fill_store, memory, timed

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.index.exact import recall_at_k
from mmsearch.records import Modality
from mmsearch.search.searcher import QueryVectors, Searcher
from mmsearch.store.folder import Store
from mmsearch.store.reselect import maybe_reselect, reindex

TARGETS = {1_000_000: {"recall": 0.95, "p50_ms": 5.0},
           10_000_000: {"recall": 0.90, "p50_ms": 20.0, "rss_gib": 8.0, "build_min": 60.0}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=None, help="default: N/1000, between 16 and 4096")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--memory-budget", default="8GiB")
    parser.add_argument("--index-type", default="auto", help="auto (the point of this benchmark), or force a type "
                                                             "to exercise it at a small N")
    parser.add_argument("--workdir", type=Path, default=None, help="where the store goes (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    parser.add_argument("--model", default=None, help="what the store records as the vectors' model (default: a "
                                                      "synthetic label; e.g. ViT-B-32:random lets the kept store "
                                                      "answer text queries after an index run exports its text tower)")
    parser.add_argument("--threads", type=int, default=None, help="FAISS threads (default: all cores)")
    parser.add_argument("--drop-caches", action="store_true",
                        help="also time first-time queries after emptying the OS page cache (Linux, root): the "
                             "worst case, every stored vector re-ranked read from disk")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="  %(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    space = ClusteredSphere(dim=args.dim, clusters=args.clusters or int(min(4096, max(16, args.n // 1000))))
    queries = space.queries(args.queries, salt=7)
    workdir = Path(tempfile.mkdtemp(prefix="mmsearch-scale-", dir=args.workdir))
    result = {"n": args.n, "dim": args.dim, "data": space.describe(), "queries": args.queries,
              "memory_budget": args.memory_budget, "store": str(workdir / "store")}
    try:
        started = time.perf_counter()
        with Store.open(workdir / "store", create=True) as store:
            print(f"importing {args.n:,} x {args.dim} into {workdir / 'store'}", file=sys.stderr, flush=True)
            timings: dict[str, float] = {}
            truth, import_seconds = fill_store(store, space, args.n, queries, timings=timings,
                                               **({"model": args.model} if args.model else {}))
            print(f"imported in {import_seconds:.0f} s; choosing and building the index", file=sys.stderr, flush=True)
            tick = time.perf_counter()
            if args.index_type == "auto":
                choice = maybe_reselect(store, Modality.IMAGE, budget=args.memory_budget)
            else:
                choice = reindex(store, Modality.IMAGE, args.index_type, budget=args.memory_budget)
            index_seconds = time.perf_counter() - tick
            build_seconds = import_seconds + index_seconds
            index = store.index(Modality.IMAGE)
            after_build = memory()
            found = np.vstack([index.search(q[None, :], 10).ids for q in queries])
            recall = recall_at_k(found, truth, 10)

            # first-time queries (their candidates' stored vectors and catalog rows not read before), then
            # the same queries again (warm: what repeated or popular queries cost)
            fresh = space.queries(args.queries, salt=11)
            cold = timed(lambda q: index.search(q, 10), fresh)
            warm = timed(lambda q: index.search(q, 10), fresh)
            searcher = Searcher(store)
            searcher.search(QueryVectors({"clip": queries[:1]}), kind="image", k=10)  # loads calibration sample
            whole = space.queries(200, salt=13)
            full_cold = timed(lambda q: searcher.search(QueryVectors({"clip": q}), kind="image", k=10), whole)
            full_warm = timed(lambda q: searcher.search(QueryVectors({"clip": q}), kind="image", k=10), whole)
            if args.drop_caches:
                drop_caches()
                dropped = timed(lambda q: index.search(q, 10), space.queries(args.queries, salt=17))
                result["p50_after_drop_caches_ms"] = round(float(np.percentile(dropped, 50)), 3)
                result["p95_after_drop_caches_ms"] = round(float(np.percentile(dropped, 95)), 3)
            end = memory()
            result.update(
                index={"kind": choice.kind, "params": dict(choice.params), "reason": choice.reason},
                import_seconds=round(import_seconds, 1), index_seconds=round(index_seconds, 1),
                data_and_truth_seconds=timings["data_seconds"], wall_seconds=round(time.perf_counter() - started, 1),
                build_seconds=round(build_seconds, 1), recall_at_10=round(recall, 4),
                p50_ms=round(float(np.percentile(cold, 50)), 3), p95_ms=round(float(np.percentile(cold, 95)), 3),
                p50_warm_ms=round(float(np.percentile(warm, 50)), 3),
                searcher_p50_ms=round(float(np.percentile(full_cold, 50)), 3),
                searcher_p50_warm_ms=round(float(np.percentile(full_warm, 50)), 3),
                rss_gib_after_build=round(after_build["VmRSS"] / 2**30, 3), rss_gib=round(end["VmRSS"] / 2**30, 3),
                peak_rss_gib=round(end["VmHWM"] / 2**30, 3), index_bytes=index.memory_bytes(),
                store_disk_gib=round(store.disk_bytes() / 2**30, 2))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    target = TARGETS.get(args.n)
    if target:
        checks = {"recall": result["recall_at_10"] >= target["recall"], "p50": result["p50_ms"] <= target["p50_ms"]}
        if "rss_gib" in target:
            checks["rss"] = result["peak_rss_gib"] <= target["rss_gib"]
            checks["build"] = result["build_seconds"] <= target["build_min"] * 60
        result["targets"] = {"wanted": target, "met": checks}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<20} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
