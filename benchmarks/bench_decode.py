#!/usr/bin/env python
"""How fast images can be decoded and preprocessed for the model, without the model: threads vs
processes, for a number of workers. Tells whether indexing on a fast GPU is bound by decoding.

    python benchmarks/bench_decode.py /tmp/mmsearch-bench-photos --workers 4 8 16 --json

Each file goes through ``ImagePipeline.decode`` (Pillow open, draft-mode JPEG decode at the model's
size, EXIF transpose, RGB, resize + centre crop to 8-bit pixels), as the indexer's decoding processes do;
the preprocessing is that of a random-weights ViT-B-32 (any ViT-B-32 checkpoint has the same).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

_PIPELINE = None


def _pipeline(device: str = "cpu"):
    global _PIPELINE
    if _PIPELINE is None:
        from mmsearch.encoders.clip import load_clip
        from mmsearch.ingest.pipelines import ImagePipeline

        _PIPELINE = ImagePipeline(load_clip("ViT-B-32:random", device=device))
    return _PIPELINE


def _decode(path: str) -> int:
    return len(list(_pipeline().decode(Path(path))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workers", type=int, nargs="+", default=[4])
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = sorted(str(p) for p in args.folder.glob("*.jp*g"))[:args.limit]
    if not files:
        print(f"bench_decode: no JPEGs in {args.folder}")
        return 2
    _pipeline()
    kinds = [("threads", ThreadPoolExecutor), ("processes", ProcessPoolExecutor)]
    rows = []
    for workers in args.workers:
        for kind, pool_class in kinds:
            with pool_class(workers) as pool:
                list(pool.map(_decode, files[:workers * 2]))  # start-up (model build in each process)
                started = time.perf_counter()
                decoded = sum(pool.map(_decode, files, chunksize=1 if kind == "threads" else 16))
                seconds = time.perf_counter() - started
            rows.append({"kind": kind, "workers": workers, "images": decoded,
                         "images_per_second": round(decoded / seconds, 1)})
            if not args.json:
                print(f"{kind:9s} x{workers:3d}: {decoded / seconds:8.1f} images/s")
    if args.json:
        print(json.dumps({"folder": str(args.folder), "files": len(files), "rows": rows},
                         indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
