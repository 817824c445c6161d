"""Text query latency: from process start (the CLI, cold) and from a warm engine (library, model loaded).

    python benchmarks/bench_query_latency.py --store STORE [--runs 5] [--queries 50] [--json]

STORE must already be indexed (e.g. by benchmarks/bench_index_throughput.py or `mmsearch index`);
its own model is used. Figures: median and p90 seconds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUERIES = ["a dog running on the beach", "two people riding bicycles in a city", "a plate of food on a table",
           "a red car parked on a street", "children playing football in a park", "a cat sleeping on a sofa"]


def cold(store: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmsearch", "search", QUERIES[i % len(QUERIES)], "--store", str(store),
                        "--json", "-k", "10"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def warm(store: Path, queries: int) -> tuple[list[float], float]:
    from mmsearch.config import Settings
    from mmsearch.engine import Engine
    from mmsearch.search.queries import Query

    started = time.perf_counter()
    engine = Engine.open(Settings.resolve(store=store))
    engine.search(Query(text="warm-up"), k=10)
    load = time.perf_counter() - started
    times = []
    for i in range(queries):
        started = time.perf_counter()
        engine.search(Query(text=QUERIES[i % len(QUERIES)] + f" {i}"), k=10)
        times.append(time.perf_counter() - started)
    engine.close()
    return times, load


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_s": round(statistics.median(ordered), 4), "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
            "runs": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warm_times, load = warm(args.store, args.queries)
    result = {"from_process_start": summary(cold(args.store, args.runs)), "warm_engine": summary(warm_times),
              "engine_open_and_first_query_s": round(load, 3)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, figures in result.items():
            print(f"{name:32} {figures}")


if __name__ == "__main__":
    main()
