#!/usr/bin/env python
"""Re-ranking latency: what `mmsearch search TEXT --kind image --rerank 20` costs per query, on the CPU and,
when torch sees one, on the GPU.

    .venv/bin/python benchmarks/bench_rerank.py                 # blip-base:random, --rerank 20, 159 photos
    .venv/bin/python benchmarks/bench_rerank.py --json
    .venv/bin/python benchmarks/bench_rerank.py --rerank-model test-tiny:random --depth 4 --images 12 --runs 1

The store: the 159 coco-mini photos (``MMSEARCH_CORPUS``, else ../shared/corpus; 640x480 generated JPEGs when
the corpus is absent) and ``--texts`` of its caption files (five captions, a passage or two each), indexed into
a temporary store with ``test-tiny:random``. The index model does not change what re-ranking costs: per query,
DEPTH candidate images decoded and through BLIP's vision tower (ViT-B/16 at 384 px), then DEPTH passes of its
text tower, each cross-attending to one image's 577 states. ``blip-base:random`` is
Salesforce/blip-itm-base-coco's architecture with random weights: the same compute, no download.

Rows, per device, in one engine kept open (as `mmsearch serve` keeps one), seconds per query, median of --runs;
query text "a dog running on the beach", kind image, k 10:

* ``search``: no re-ranking (the tiny index model's text tower and the index).
* ``rerank_cold``: --rerank DEPTH with the re-ranker's cache of vision states off: every candidate decoded and
  through the vision tower, as for a query over images no query has re-ranked before.
* ``rerank_warm``: the same query again, its candidates' vision states cached: the text tower only.
* ``rerank_other``: other texts (other candidates) once every image's vision states are cached (the cache holds
  512 MiB, about 290 BLIP-base images; filling it is the ``fill`` row, seconds per image): a long-lived engine.
* ``model_only``: ``matcher.image_states`` on the DEPTH candidates of the query (decoded and preprocessed
  beforehand, untimed) + ``matcher.match`` of the query with them. ``cold_to_model_only`` = rerank_cold /
  model_only: what decoding, caching and the search add around the model.

Also reported: the CPU model, torch's thread count at start and in the thread that searched (where the
re-ranking model runs), and the seconds to load the matching model (random weights: initialisation only).
* ``image_search`` / ``image_rerank`` / ``image_model_only``: an image query (one of the photos), kind text,
  k 10, without and with --rerank DEPTH over the passages: one vision pass for the query image (never cached)
  and DEPTH text passes; model only likewise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = Path(os.environ.get("MMSEARCH_CORPUS") or HERE.parent.parent / "shared" / "corpus")
INDEX_MODEL = "test-tiny:random"
QUERY = "a dog running on the beach"
OTHER_QUERIES = ["two people riding bicycles in a city", "a plate of food on a table", "a red car parked on a street",
                 "children playing football in a park", "a cat sleeping on a sofa", "a train at a station"]


def corpus_files(corpus: Path, images: int, texts: int, workdir: Path) -> tuple[list[Path], list[Path], str]:
    """(photos, caption text files, what they are): coco-mini's, else generated ones."""
    photos = sorted((corpus / "coco-mini").glob("*2017/*.jpg"))[:images]
    captions = sorted((corpus / "text" / "coco-captions").glob("*.txt"))[:texts]
    if len(photos) >= images and len(captions) >= texts:
        return photos, captions, f"{len(photos)} coco-mini photos + {len(captions)} of its caption files"
    photos, captions = generated(workdir, images, texts)
    return photos, captions, f"{images} generated 640x480 JPEGs + {texts} generated texts (no corpus at {corpus})"


def generated(workdir: Path, images: int, texts: int) -> tuple[list[Path], list[Path]]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = workdir / "generated"
    folder.mkdir(parents=True, exist_ok=True)
    photos, captions = [], []
    y, x = np.mgrid[0:480, 0:640]
    for i in range(images):  # smooth colour fields with noise: JPEG sizes like photos'
        base = np.stack([(x * rng.uniform(0.1, 0.4) + y * rng.uniform(0.1, 0.4) + rng.uniform(0, 255)) % 256
                         for _ in range(3)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        photos.append(folder / f"photo{i:03d}.jpg")
        Image.fromarray(pixels).save(photos[-1], quality=90)
    words = "a the dog cat person car street table food park beach red blue small large riding sitting".split()
    for i in range(texts):
        captions.append(folder / f"caption{i:03d}.txt")
        captions[-1].write_text("\n".join(" ".join(rng.choice(words, 10)) for _ in range(5)) + "\n")
    return photos, captions


def median_of(runs: int, call) -> dict:
    """Median and all of ``runs`` timed calls of ``call()`` (seconds)."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(seconds), 4), "runs_s": [round(s, 4) for s in seconds]}


def measure(store: Path, device: str, model: str, depth: int, runs: int, query_image: Path) -> dict:
    import torch

    from mmsearch.decoding.images import load_image
    from mmsearch.engine import open_store
    from mmsearch.search.rerank import CACHE_BYTES

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows: dict[str, dict] = {}
    with open_store(store, device=device, rerank_model=model, precision="fp32") as engine:
        reranker = engine.reranker
        started = time.perf_counter()
        reranker.available(optional=False, notes=[])
        load_s = time.perf_counter() - started
        matcher = reranker.matcher

        def text(query: str, rerank: int = 0):
            return engine.search(query, kind="image", k=10, rerank=rerank)

        def model_only(pixels, texts: list[str]) -> None:
            states = matcher.image_states(pixels)
            sync()
            matcher.match(texts, states)

        reranker.cache_bytes = 0  # nothing is kept: every re-ranked query decodes and runs the vision tower
        text("warm-up: the first forward passes", depth)
        rows["search"] = median_of(runs, lambda: text(QUERY))
        threads = torch.get_num_threads()  # in the thread that searched, where the re-ranker's model runs
        rows["rerank_cold"] = median_of(runs, lambda: text(QUERY, depth))
        reranker.cache_bytes = CACHE_BYTES  # (empty: nothing was kept while it was 0)
        images = len(engine.search(QUERY, kind="image", k=1000).hits)
        started = time.perf_counter()
        text(QUERY, images)  # every image decoded, through the vision tower and cached (and scored once)
        fill = time.perf_counter() - started
        rows["fill"] = {"images": images, "seconds": round(fill, 3), "per_image_s": round(fill / max(1, images), 4)}
        rows["rerank_warm"] = median_of(runs, lambda: text(QUERY, depth))  # its candidates' states cached
        others = iter(OTHER_QUERIES * runs)
        rows["rerank_other"] = median_of(runs, lambda: text(next(others), depth))
        candidates = [Path(hit.path) for hit in engine.search(QUERY, kind="image", k=depth).hits]
        pixels = matcher.pixels([load_image(path, target_size=matcher.image_size) for path in candidates])
        model_only(pixels, [QUERY])
        rows["model_only"] = median_of(runs, lambda: model_only(pixels, [QUERY]))
        passages = [hit.passage for hit in engine.search(image=query_image, kind="text", k=depth).hits]
        if passages:
            rows["image_search"] = median_of(runs, lambda: engine.search(image=query_image, kind="text", k=10))
            rows["image_rerank"] = median_of(runs, lambda: engine.search(image=query_image, kind="text", k=10,
                                                                         rerank=depth))
            one = matcher.pixels([load_image(query_image, target_size=matcher.image_size)])
            rows["image_model_only"] = median_of(runs, lambda: model_only(one, passages))
    name = torch.cuda.get_device_name() if device.startswith("cuda") else cpu_model()
    ratio = round(rows["rerank_cold"]["median_s"] / rows["model_only"]["median_s"], 3)
    return {"device": device, "device_name": name, "model_load_s": round(load_s, 2), "torch_threads_reranking": threads,
            "cold_to_model_only": ratio, "images_in_store": images, "candidates": len(candidates),
            "passage_candidates": len(passages), "rows": rows}


LABELS = {"search": "text, no re-ranking", "rerank_cold": "text, rerank {d}, cold (vision tower on {d})",
          "rerank_warm": "text, rerank {d}, the same query again",
          "rerank_other": "text, rerank {d}, other texts, all cached", "fill": "filling the cache, per image",
          "model_only": "model only: vision on {d} + match",
          "image_search": "image→text, no re-ranking", "image_rerank": "image→text, rerank {d}",
          "image_model_only": "image→text model only: vision on 1 + match {d}"}


def print_table(report: dict) -> None:
    print(f"re-ranking latency: {report['rerank_model']}, --rerank {report['depth']}, k 10; median of "
          f"{report['runs']} runs")
    print(f"store: {report['store']}, indexed with {INDEX_MODEL}")
    print(f"CPU: {report['cpu_model']}, {report['cpu_count']} cores; torch {report['torch']} with "
          f"{report['torch_threads']} threads")
    for result in report["devices"]:
        if result["torch_threads_reranking"] != report["torch_threads"]:
            print(f"note: on {result['device']} the re-ranking model ran with {result['torch_threads_reranking']} "
                  f"torch threads: the searching thread's OpenMP count, set by FAISS for a single-query search")
    print(f"{'device':<8} {'row':<48} {'s / query':>10}")
    for result in report["devices"]:
        name = result["device"]
        print(f"{name:<8} {'loading the model (s)':<48} {result['model_load_s']:>10.2f}")
        for key, row in result["rows"].items():
            seconds = row["per_image_s"] if key == "fill" else row["median_s"]
            print(f"{name:<8} {LABELS[key].format(d=report['depth']):<48} {seconds:>10.3f}")
        print(f"{name:<8} {'ratio rerank cold / model only':<48} {result['cold_to_model_only']:>9.2f}x")
        if result["device"].startswith("cuda"):
            print(f"{name:<8} ({result['device_name']})")
    print(f"({report['seconds']:.0f} s in all)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rerank-model", default="blip-base:random", help="the matching model (default: "
                        "blip-base:random, blip-itm-base-coco's compute)")
    parser.add_argument("--depth", type=int, default=20, help="hits re-ranked per query (--rerank N)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row (the median is reported)")
    parser.add_argument("--images", type=int, default=159, help="photos in the store (above ~290 BLIP-base "
                        "images the cache cannot hold them all and rerank_other is no longer all cached)")
    parser.add_argument("--texts", type=int, default=40, help="caption text files in the store (passages)")
    parser.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, and cuda when torch sees one)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the corpus folder")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary store goes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    from mmsearch.engine import open_store

    started, threads = time.perf_counter(), torch.get_num_threads()
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    workdir = Path(tempfile.mkdtemp(prefix="mmsearch-bench-rerank-", dir=args.workdir))
    try:
        photos, captions, what = corpus_files(args.corpus, args.images, args.texts, workdir)
        with open_store(workdir / "store", create=True, model=INDEX_MODEL, audio_model="none",
                        precision="fp32") as engine:
            engine.index([*photos, *captions], export=False)
        results = [measure(workdir / "store", device, args.rerank_model, args.depth, args.runs, photos[0])
                   for device in devices]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"rerank_model": args.rerank_model, "depth": args.depth, "runs": args.runs, "store": what,
              "index_model": INDEX_MODEL, "query": QUERY, "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "torch_threads": threads, "devices": results,
              "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
