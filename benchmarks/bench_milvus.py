#!/usr/bin/env python
"""FAISS against a Milvus server on the same vectors: recall@10 against exact search, and query latency.

Both are driven through mmsearch's own backends (``index.factory.create_index`` for FAISS,
``index.milvus.open_collection`` for Milvus), with the same index type and the same build and search
parameters, over the same synthetic clustered vectors (``bench.synthetic.ClusteredSphere``: a Gaussian
mixture on the unit sphere, not uniform noise) and the same held-out queries. Queries go one at a time,
as a user's search does; the latency is the backend's ``search`` call, end to end (for Milvus: the gRPC
round trip, at Strong consistency).

Without ``--milvus-uri`` it starts the embedded Milvus 2.3.5 the tests use (``tests/milvus_server.py``: in
network namespaces of its own, reached through a 127.0.0.1 forwarder written in Python, which adds its
own cost to every Milvus round trip; a real server is reached directly).

    .venv/bin/python benchmarks/bench_milvus.py --vectors 100000 --json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from machine import cpu_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the embedded server's launcher (tests/milvus_server.py)

from mmsearch.bench.synthetic import ClusteredSphere  # noqa: E402
from mmsearch.index.exact import exact_top_k, recall_at_k  # noqa: E402
from mmsearch.index.factory import create_index  # noqa: E402
from mmsearch.index.milvus import open_collection  # noqa: E402

K = 10
PARAMS = {"flat": {}, "hnsw": {"M": 32, "efConstruction": 80, "efSearch": 64},
          "ivf-flat": {"nlist": 1024, "nprobe": 16}}
"""One set of build and search parameters per type, given to both engines."""


def latencies(index, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Each query alone: (found ids, seconds per query)."""
    found, seconds = [], []
    index.search(queries[:1], K)  # warm-up (first-use costs)
    for query in queries:
        started = time.perf_counter()
        result = index.search(query[None, :], K)
        seconds.append(time.perf_counter() - started)
        found.append(result.ids[0])
    return np.vstack(found), seconds


def summary(kind: str, engine: str, build: float, found: np.ndarray, truth: np.ndarray, seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"engine": engine, "type": kind, "params": PARAMS[kind], "build_s": round(build, 2),
            "recall@10": round(recall_at_k(found, truth, K), 4),
            "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
            "qps_batch1": round(len(seconds) / sum(seconds), 1)}


def run_faiss(kind: str, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    started = time.perf_counter()
    index = create_index(kind, vectors.shape[1], PARAMS[kind])
    if index.trainable:
        index.train(vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), 50_000), replace=False)])
    index.add(ids, vectors)
    build = time.perf_counter() - started
    found, seconds = latencies(index, queries)
    return summary(kind, "faiss", build, found, truth, seconds)


def run_milvus(uri: str, kind: str, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray,
               truth: np.ndarray) -> dict:
    from pymilvus import utility

    name = f"mmsearch_bench_{uuid.uuid4().hex[:8]}_{kind.replace('-', '_')}"
    index = open_collection(uri, name, kind, vectors.shape[1], PARAMS[kind])
    try:
        started = time.perf_counter()
        index.add(ids, vectors)
        uploaded = time.perf_counter() - started
        index.flush()  # sealed segments get their index built
        utility.wait_for_index_building_complete(name, using=index.connection.alias, timeout=1800)
        build = time.perf_counter() - started
        found, seconds = latencies(index, queries)
        row = summary(kind, "milvus", build, found, truth, seconds)
        row["upload_s"] = round(uploaded, 2)
        return row
    finally:
        index.drop()
        index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--types", default="flat,hnsw,ivf-flat")
    parser.add_argument("--milvus-uri", default=None, help="a running Milvus server (default: start the embedded one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    data = ClusteredSphere(dim=args.dim, seed=0)
    vectors = data.rows(0, args.vectors)
    ids = np.arange(1, args.vectors + 1, dtype=np.int64)
    queries = data.queries(args.queries)
    truth = exact_top_k(queries, vectors, ids, K).ids

    server = None
    uri = args.milvus_uri
    if uri is None:
        from milvus_server import MilvusServer

        server = MilvusServer(Path(tempfile.mkdtemp(prefix="mmsearch-bench-milvus-")))
        uri = server.start()
    rows = []
    try:
        for kind in args.types.split(","):
            rows.append(run_faiss(kind, ids, vectors, queries, truth))
            rows.append(run_milvus(uri, kind, ids, vectors, queries, truth))
            if not args.json:
                for row in rows[-2:]:
                    print(row, flush=True)
    finally:
        if server is not None:
            server.stop()
    report = {"cpu": cpu_model(), "vectors": args.vectors, "dim": args.dim, "queries": args.queries, "k": K,
              "data": data.describe(), "milvus": "embedded 2.3.5 via 127.0.0.1 forwarder" if server else uri,
              "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
