#!/usr/bin/env python
"""Composed queries on coco-mini: R@k of each fusion method against single-part queries.

What it measures. The coco-mini photos (159 COCO 2017 images, 5 captions each) are indexed into a store
(``--store DIR``, reused when it already holds exactly those photos). ``--queries`` composed queries are
drawn with ``--seed``: a target photo B (every photo in turn, in a seeded order, then again), another
photo A != B, and one of B's captions. Each query is searched with ``kind="image"`` through
``Engine.search`` as

- ``text B``: B's caption alone;
- ``image A``: the photo A alone, as a query file (A is indexed too, so it usually finds itself first);
- ``like A``: the indexed photo A alone (a ``like`` part: its stored vector; A is left out of the hits);
- ``image A + text B``: A's file and B's caption, fused ``early``, ``rrf`` and ``score``;
- ``like A + text B``: the indexed A and B's caption, fused the same three ways;
- ``image A×W + text B``: as above with the image part weighted ``--image-weight`` (default 0.5);
- ``oracle: image B``: B's own file, a sanity row: exact search must put B first (R@1 = 100 %).

A query scores a hit at k when B is among its first k hits. Every row reads the whole ranking, so the
median and mean rank of B are printed too, ``A first`` (the share of queries whose first hit is A itself,
which a query holding A's file tends to find; ``like`` rows leave A out of the hits: ``a_returned``
in ``--json``, the share of queries whose hits hold A at all, is 0 for them), and the time per query
(embedding + search + fusion, in ``Engine.search``). Recall and ``A first`` are percentages in the table,
fractions in ``--json``.

Run it from the repository root (a few minutes with the tiny model, longer with ViT-B-32 on a CPU):

    .venv/bin/python benchmarks/bench_compose.py                                   # test-tiny:random
    .venv/bin/python benchmarks/bench_compose.py --model ViT-B-32:random --store /tmp/compose-bench/vit-b-32
    .venv/bin/python benchmarks/bench_compose.py --queries 200 --seed 0 --json > compose.json
    .venv/bin/python benchmarks/bench_compose.py --limit 24 --queries 20          # a 24-photo subset

With random weights (``test-tiny:random``, ``ViT-B-32:random``; no trained checkpoint can be had offline)
the figures are near chance by construction: a random model's caption and image vectors are unrelated,
so B is found about as often as any photo, R@k ≈ k / photos (printed as ``chance``). What such a run does
show is that every fusion path runs end to end on real files (decoding, both towers, stored vectors, the
late lists, the exclusion of ``like`` items) and how far from chance it lands. Whether each fusion rule
adds up what it should is not measured here: that arithmetic is pinned by tests/search/test_fusion.py.
With trained weights (``--model ViT-B-32:laion2b_s34b_b79k`` where it is available) the composed rows
are the ones to compare with ``text B`` and ``image A``.

Indexing runs the torch image tower in float32 (``precision="fp32"``), so no time goes into
``--precision auto``'s timing. Exits 0 with a message when the corpus is absent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from machine import cpu_model

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = Path(os.environ.get("MMSEARCH_CORPUS") or HERE.parent.parent / "shared" / "corpus") / "coco-mini"
SPLITS = ("train2017", "val2017")
KS = (1, 5, 10)
DEFAULT_STORE = Path("/tmp/compose-bench")


@dataclass(frozen=True)
class Photo:
    path: Path
    captions: tuple[str, ...]


@dataclass(frozen=True)
class Composed:
    """One composed query: the target ``b`` and the other photo ``a`` (indexes into the photo list), and
    the caption of ``b`` used."""

    a: int
    b: int
    caption: str


@dataclass(frozen=True)
class Method:
    name: str
    fusion: str
    parts: Callable[..., tuple]
    """(photo A, id of A, photo B, caption of B, image weight) -> the query's parts."""


def load_coco(corpus: Path) -> list[Photo]:
    """coco-mini's photos with their captions (both COCO caption files), in path order."""
    from mmsearch.evaluation.pairs import load_pairs

    photos: dict[Path, list[str]] = {}
    for split in SPLITS:
        pairs = load_pairs(corpus / "annotations" / f"captions_{split}.json", root=corpus / split, format="coco",
                           require_media=True)
        for caption, owner in zip(pairs.captions, pairs.caption_media.tolist()):
            photos.setdefault(Path(pairs.media[owner]), []).append(caption)
    return [Photo(path, tuple(captions)) for path, captions in sorted(photos.items())]


def stage_subset(photos: list[Photo], count: int, folder: Path, seed: int) -> list[Photo]:
    """``count`` of ``photos`` (a seeded choice) copied into ``folder``; the copies, in path order."""
    import numpy as np

    if not 2 <= count <= len(photos):
        raise SystemExit(f"bench_compose: --limit must be between 2 and {len(photos)}, not {count}")
    chosen = sorted(np.random.default_rng(seed).choice(len(photos), size=count, replace=False).tolist())
    folder.mkdir(parents=True, exist_ok=True)
    staged = []
    for i in chosen:
        target = folder / photos[i].path.name
        if not target.is_file() or target.stat().st_size != photos[i].path.stat().st_size:
            shutil.copy2(photos[i].path, target)
        staged.append(Photo(target, photos[i].captions))
    return staged


def make_queries(photos: list[Photo], count: int, seed: int) -> list[Composed]:
    """``count`` composed queries: targets in a seeded order (every photo once before any twice), each
    with another photo drawn uniformly and one of the target's captions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(photos)
    targets: list[int] = []
    while len(targets) < count:
        targets.extend(rng.permutation(n).tolist())
    queries = []
    for b in targets[:count]:
        a = int(rng.integers(n - 1))
        a += a >= b  # uniform over the others
        captions = photos[b].captions
        queries.append(Composed(a, b, captions[int(rng.integers(len(captions)))]))
    return queries


def methods(image_weight: float) -> list[Method]:
    from mmsearch.search.queries import Part

    def text_b(pa, ida, pb, cap, w):
        return (Part("text", cap),)

    def image_a(pa, ida, pb, cap, w):
        return (Part("image", pa),)

    def like_a(pa, ida, pb, cap, w):
        return (Part("like", ida),)

    def image_a_text_b(pa, ida, pb, cap, w):
        return (Part("image", pa), Part("text", cap))

    def like_a_text_b(pa, ida, pb, cap, w):
        return (Part("like", ida), Part("text", cap))

    def weighted(pa, ida, pb, cap, w):
        return (Part("image", pa, w), Part("text", cap, 1.0))

    def oracle(pa, ida, pb, cap, w):
        return (Part("image", pb),)

    rows = [Method("text B", "auto", text_b), Method("image A", "auto", image_a), Method("like A", "auto", like_a)]
    for fusion in ("early", "rrf", "score"):
        rows.append(Method("image A + text B", fusion, image_a_text_b))
    for fusion in ("early", "rrf", "score"):
        rows.append(Method("like A + text B", fusion, like_a_text_b))
    if image_weight and image_weight != 1.0:
        for fusion in ("early", "rrf", "score"):
            rows.append(Method(f"image A×{image_weight:g} + text B", fusion, weighted))
    rows.append(Method("oracle: image B", "auto", oracle))
    return rows


def open_indexed(store: Path, model: str, photos: list[Photo], roots: list[Path]):
    """The engine of ``store`` holding exactly ``photos`` (indexed now unless it already does), the
    catalog ids of the photos, and the seconds indexing took (None when reused)."""
    import mmsearch
    from mmsearch.store.rows import INDEXED

    engine = mmsearch.open_store(store, create=True, model=model, audio_model="none", precision="fp32")
    wanted = {os.path.abspath(p.path) for p in photos}
    items = engine.store.catalog.all_items()
    seconds = None
    if not wanted <= {path for path, row in items.items() if row.state == INDEXED}:
        started = time.perf_counter()
        report = engine.index(roots)
        seconds = time.perf_counter() - started
        if report.failed:
            raise SystemExit(f"bench_compose: {len(report.failed)} photos failed to index: {report.failed[:3]}")
        items = engine.store.catalog.all_items()
    others = sorted(set(items) - wanted)
    if others:
        engine.close()
        raise SystemExit(f"bench_compose: {store} also holds {len(others)} other files (e.g. {others[0]}): "
                         f"every indexed file competes, so use another --store")
    return engine, {path: items[path].id for path in wanted}, seconds


def rank_of(hits, target: str) -> int | None:
    for rank, hit in enumerate(hits, 1):
        if os.path.realpath(hit.path) == target:
            return rank
    return None


def run(photos: list[Photo], roots: list[Path], store: Path, *, model: str = "test-tiny:random",
        queries: int = 200, seed: int = 0, ks: tuple[int, ...] = KS, image_weight: float = 0.5) -> dict:
    """Index ``photos`` (found under ``roots``) into ``store`` and run every method on ``queries``
    composed queries; returns the report (``rows``: method, fusion, recall {k: fraction}, ranks, timing)."""
    from mmsearch.search.queries import Query

    engine, ids, index_seconds = open_indexed(store, model, photos, roots)
    try:
        n = len(photos)
        drawn = make_queries(photos, queries, seed)
        paths = [os.path.abspath(p.path) for p in photos]
        real = [os.path.realpath(p) for p in paths]
        rows = []
        for method in methods(image_weight):
            ranks: list[int | None] = []
            a_first = a_returned = 0
            used: set[str] = set()
            started = time.perf_counter()
            for q in drawn:
                parts = method.parts(paths[q.a], ids[paths[q.a]], paths[q.b], q.caption, image_weight)
                result = engine.search(Query(parts=parts), kind="image", k=n, fusion=method.fusion)
                used.add(result.fusion or "single")
                ranks.append(rank_of(result.hits, real[q.b]))
                a_rank = rank_of(result.hits, real[q.a])
                a_first += a_rank == 1
                a_returned += a_rank is not None
            elapsed = time.perf_counter() - started
            found = [r for r in ranks if r is not None]
            rows.append({
                "method": method.name, "fusion": method.fusion,
                "used": ",".join(sorted(used)),  # what Engine.search reported it ran, over all queries
                "recall": {str(k): sum(1 for r in found if r <= k) / len(ranks) for k in ks},
                "median_rank": statistics.median(found) if found else None,
                "mean_rank": round(statistics.fmean(found), 2) if found else None,
                "missing": len(ranks) - len(found),
                "a_first": a_first / len(ranks),
                "a_returned": a_returned / len(ranks),
                "ms_per_query": round(1000 * elapsed / len(ranks), 2),
            })
        return {
            "model": model, "store": str(store), "photos": n, "queries": len(drawn), "seed": seed,
            "image_weight": image_weight, "ks": list(ks), "chance": {str(k): k / n for k in ks},
            "index_seconds": None if index_seconds is None else round(index_seconds, 1),
            "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "rows": rows,
        }
    finally:
        engine.close()


def table(report: dict) -> str:
    ks = report["ks"]
    head = ["method", "fusion", *(f"R@{k}" for k in ks), "median rank", "mean rank", "A first", "ms/query"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        fusion = row["fusion"] if row["fusion"] != "auto" else "—"
        cells = [row["method"], fusion, *(f"{100 * row['recall'][str(k)]:.1f}" for k in ks),
                 f"{row['median_rank']:g}" if row["median_rank"] is not None else "—",
                 f"{row['mean_rank']:.1f}" if row["mean_rank"] is not None else "—",
                 f"{100 * row['a_first']:.1f}",
                 f"{row['ms_per_query']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    chance = ", ".join(f"R@{k} {100 * report['chance'][str(k)]:.1f} %" for k in ks)
    lines.append("")
    lines.append(f"chance ({report['photos']} photos): {chance}; median rank {(report['photos'] + 1) / 2:g}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the coco-mini folder")
    parser.add_argument("--store", type=Path, help="store folder (kept and reused; default "
                        "/tmp/compose-bench/MODEL[-limitN-seedS])")
    parser.add_argument("--model", default="test-tiny:random", help="test-tiny:random (default), ViT-B-32:random, ...")
    parser.add_argument("--queries", type=int, default=200, help="composed queries (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the queries and of --limit's choice")
    parser.add_argument("--limit", type=int, help="only this many photos (a seeded choice, copied next to the store)")
    parser.add_argument("--image-weight", type=float, default=0.5,
                        help="weight of image A in the weighted rows (text B has 1; 1 or 0: no such rows)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    if not (args.corpus / "annotations" / "captions_val2017.json").is_file():
        print(f"bench_compose: coco-mini not found at {args.corpus}; skipped (set MMSEARCH_CORPUS or --corpus)")
        return 0
    if args.queries < 1:
        parser.error("--queries must be at least 1")
    photos = load_coco(args.corpus)
    name = args.model.replace(":", "-").replace("/", "_") + (f"-limit{args.limit}-seed{args.seed}" if args.limit else "")
    store = args.store or DEFAULT_STORE / name
    roots = [args.corpus / split for split in SPLITS]
    if args.limit:
        folder = store.with_name(store.name + "-photos")
        photos, roots = stage_subset(photos, args.limit, folder, args.seed), [folder]
    print(f"bench_compose: {len(photos)} photos, {args.queries} queries, model {args.model}, store {store}",
          file=sys.stderr)
    report = run(photos, roots, store, model=args.model, queries=args.queries, seed=args.seed,
                 image_weight=args.image_weight)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(f"model {report['model']}, {report['photos']} photos, {report['queries']} composed queries "
              f"(seed {report['seed']}), kind=image, exact search")
        print(f"CPU: {report['cpu']} ({report['cores']} cores), Python {report['python']}")
        if report["index_seconds"] is not None:
            print(f"indexed in {report['index_seconds']} s")
        print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
