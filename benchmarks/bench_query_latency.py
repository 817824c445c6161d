"""Query latency: whole processes from start (the CLI, timed from outside), and a warm engine in-process.

    python benchmarks/bench_query_latency.py --store STORE [--runs 7] [--queries 50] [--image FILE]
        [--rclip-images DIR --rclip-datadir D] [--json]

STORE must already be indexed (e.g. `mmsearch index DIR --store STORE`); its own model is used, and text
queries take whatever path the store offers (`mmsearch status`: onnx or torch). Rows:

* ``text_from_start``: `python -m mmsearch search TEXT --store STORE --json -k 10`, a new process per
  query, wall-clock from spawn to exit; ``text_from_start_torch``: the same with
  MMSEARCH_QUERY_ENCODER=torch (the path before the ONNX export, for comparison);
* ``image_from_start`` (with --image): `search --image FILE` likewise (torch's image tower);
* ``warm_text``: `Engine.search` in one process once warm (after its text tower has moved to the
  prepacked session a process gets after a few queries), per query;
* ``rclip_text_from_start`` (with --rclip-*): rclip 3.3.0 answering the same queries on the same folder,
  through ../shared/peers/rclip_run.py (query only: --keep-db --no-indexing), timed the same way and
  interleaved with ours so that both see the same machine. Its own in-process total is given too.

Figures: median and p90 seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = Path(os.environ.get("MMSEARCH_PEERS") or HERE.parent.parent / "shared" / "peers")
RCLIP_PYTHON = Path(os.environ.get("PEER_VENVS", "/tmp/peer-venvs")) / "rclip" / "bin" / "python"
QUERIES = ["a dog running on the beach", "two people riding bicycles in a city", "a plate of food on a table",
           "a red car parked on a street", "children playing football in a park", "a cat sleeping on a sofa"]


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def ours(store: Path, query: list[str], env: dict[str, str] | None = None) -> float:
    return timed([sys.executable, "-m", "mmsearch", "search", *query, "--store", str(store), "--json", "-k", "10"],
                 env=env)


def rclip(images: Path, datadir: Path, text: str) -> tuple[float, float]:
    """(wall seconds from spawn to exit, rclip's own in-process total)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        seconds = timed([str(RCLIP_PYTHON), str(PEERS / "rclip_run.py"), "--images", str(images), "--query", text,
                         "--model", "ViT-B-32", "--datadir", str(datadir), "--keep-db", "--no-indexing",
                         "--json-out", out.name])
        return seconds, json.loads(Path(out.name).read_text())["cli_total_s"]


def warm(store: Path, queries: int) -> tuple[list[float], float]:
    from mmsearch.encoders.exported import WARM_AFTER
    from mmsearch.engine import Query, open_store

    started = time.perf_counter()
    engine = open_store(store)
    engine.search("warm-up", k=10)
    load = time.perf_counter() - started
    for i in range(WARM_AFTER):  # a long-lived process: its text tower moves to a prepacked session
        engine.search(f"warm-up {i}", k=10)
    session = getattr(engine.towers.clip(Query(text="warm-up"), []), "_session", None)
    if getattr(session, "warming", None) is not None:
        session.warming.join()
    times = []
    for i in range(queries):
        started = time.perf_counter()
        engine.search(f"{QUERIES[i % len(QUERIES)]} {i}", k=10)
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
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--image", type=Path, help="also time an image query from process start")
    parser.add_argument("--rclip-images", type=Path, help="the folder rclip indexed (the same as the store's)")
    parser.add_argument("--rclip-datadir", type=Path, help="rclip's data dir from its indexing run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch_env = {**os.environ, "MMSEARCH_QUERY_ENCODER": "torch"}
    rows: dict[str, list[float]] = {"text_from_start": [], "text_from_start_torch": []}
    peer_own: list[float] = []
    for run in range(args.runs):
        text = QUERIES[run % len(QUERIES)]
        rows["text_from_start"].append(ours(args.store, [text]))
        rows["text_from_start_torch"].append(ours(args.store, [text], env=torch_env))
        if args.image is not None:
            rows.setdefault("image_from_start", []).append(ours(args.store, ["--image", str(args.image)]))
        if args.rclip_images is not None and args.rclip_datadir is not None:
            wall, own = rclip(args.rclip_images, args.rclip_datadir, text)
            rows.setdefault("rclip_text_from_start", []).append(wall)
            peer_own.append(own)
    warm_times, load = warm(args.store, args.queries)
    result = {name: summary(times) for name, times in rows.items()}
    result["warm_text"] = summary(warm_times)
    result["engine_open_and_first_query_s"] = round(load, 3)
    if peer_own:
        result["rclip_own_total"] = summary(peer_own)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, figures in result.items():
            print(f"{name:32} {figures}")


if __name__ == "__main__":
    main()
