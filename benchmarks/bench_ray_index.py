#!/usr/bin/env python
"""Indexing one folder of photos in this process and through Ray (``--ray``) with 1, 2... workers.

Each run indexes the same folder into a fresh store with the same model (the in-process run first), end
to end through ``Engine.index`` (finding, hashing, decoding, embedding, committing, saving; the text-tower
export and the audio bridge are left out: they are the same whichever way the files were embedded).
The Ray runs share one cluster, started before them (its start-up is reported on its own); each run's
seconds include starting its workers (each loads the model) and tearing them down. The photos: the
shared corpus's COCO images (``../shared/corpus/coco-mini``, repeated to ``--files``), else ``--files``
seeded noise images. Every run's vectors are checked against the in-process run's (lowest cosine).

    .venv/bin/python benchmarks/bench_ray_index.py --files 500 --workers 1,2 --json
    .venv/bin/python benchmarks/bench_ray_index.py --model ViT-B-32:random --ray 127.0.0.1:6379

``--ray auto`` (the default) starts a local cluster on 127.0.0.1 with ``--cpus`` CPUs (default: all).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from machine import cpu_model

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("MMSEARCH_CORPUS") or HERE.parent.parent / "shared" / "corpus")


def make_folder(folder: Path, files: int, seed: int = 0) -> str:
    """``files`` photos in ``folder``: the corpus's COCO JPEGs (copied round-robin), else seeded noise."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = sorted((CORPUS / "coco-mini").rglob("*.jpg"))
    for n in range(files):
        target = folder / f"photo{n:05d}.jpg"
        if photos:
            shutil.copyfile(photos[n % len(photos)], target)
            with open(target, "ab") as out:
                out.write(n.to_bytes(4, "little"))  # distinct bytes, same picture
        else:
            rng = np.random.default_rng(seed + n)
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(target, quality=90)
    return "coco-mini" if photos else "seeded noise"


def vectors(engine) -> dict[str, np.ndarray]:
    catalog = engine.store.catalog
    return {path: catalog.item_vectors(row.id)[1] for path, row in catalog.all_items().items()}


def run(folder: Path, model: str, ray, batch_size: int | None, workers: int | None) -> tuple[dict, dict]:
    from mmsearch import open_store

    store = Path(tempfile.mkdtemp(prefix="mmsearch-bench-ray-"))
    try:
        with open_store(store, create=True, model=model, audio_model="none", batch_size=batch_size,
                        workers=workers) as engine:
            started = time.perf_counter()
            report = engine.index([folder], ray=ray, export=False)
            seconds = time.perf_counter() - started
            embedded = vectors(engine)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    files = report.added
    return {"seconds": round(seconds, 2), "files": files, "failed": len(report.failed),
            "files_per_s": round(files / seconds, 2) if seconds else None, "ray_workers": report.ray_workers,
            "notes": list(report.notes)}, embedded


def lowest_cosine(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float | None:
    lowest = None
    for path, matrix in reference.items():
        other = ours.get(path)
        if other is None or other.shape != matrix.shape or not len(matrix):
            return None
        cos = float(np.min(np.sum(other * matrix, axis=1) / (np.linalg.norm(other, axis=1) *
                                                              np.linalg.norm(matrix, axis=1))))
        lowest = cos if lowest is None else min(lowest, cos)
    return lowest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200, help="Photos to index (default 200).")
    parser.add_argument("--folder", type=Path, default=None, help="Index this folder instead of making one.")
    parser.add_argument("--model", default="test-tiny:random", help="e.g. ViT-B-32:random (real size, offline).")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run, comma-separated.")
    parser.add_argument("--ray", default="auto", help="auto (a local cluster on 127.0.0.1) or a cluster address.")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the local cluster (default: all).")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--decoders", type=int, default=None, help="Decoding processes (per Ray worker).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from mmsearch.ingest.ray_embed import RayOptions
    from mmsearch.ingest.ray_embed_cluster import connect, start_local

    scratch = Path(tempfile.mkdtemp(prefix="mmsearch-bench-ray-photos-"))
    try:
        folder, source = (args.folder, str(args.folder)) if args.folder else (scratch, make_folder(scratch, args.files))
        results: dict = {"machine": cpu_model(), "cores": os.cpu_count(), "model": args.model, "photos": source,
                         "batch_size": args.batch_size, "runs": []}
        here, reference = run(folder, args.model, None, args.batch_size, args.decoders)
        results["runs"].append({"how": "in-process", **here, "lowest_cosine": 1.0})
        started = time.perf_counter()
        cluster = start_local(args.cpus) if args.ray == "auto" else connect(args.ray)
        results["cluster"] = {"address": args.ray, "start_s": round(time.perf_counter() - started, 2),
                              "resources": {k: v for k, v in cluster.resources().items() if k in ("CPU", "GPU")}}
        try:
            for count in [int(n) for n in args.workers.split(",") if n.strip()]:
                figures, embedded = run(folder, args.model, RayOptions(args.ray, workers=count), args.batch_size,
                                        args.decoders)
                results["runs"].append({"how": f"ray x{count}", **figures,
                                        "lowest_cosine": lowest_cosine(embedded, reference)})
        finally:
            cluster.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(f"{results['machine']} ({results['cores']} cores), {args.model}, {source}; "
              f"Ray cluster start {results['cluster']['start_s']} s")
        for entry in results["runs"]:
            print(f"  {entry['how']:<11} {entry['files']} files in {entry['seconds']:7.2f} s = "
                  f"{entry['files_per_s']:7.2f} files/s  (lowest cosine to in-process {entry['lowest_cosine']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
