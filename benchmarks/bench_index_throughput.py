#!/usr/bin/env python
"""Indexing throughput end to end vs the image model alone, with `mmsearch bench index`.

Needs a folder of at least 500 distinct photo JPEGs. coco-mini has 159, so this script first makes
them (once; reused while the folder holds --count files of the asked mode) by re-encoding coco-mini
photos with small variations so that every file has different bytes (the indexer reuses vectors of
identical files, which would flatter the numbers):

* a random crop keeping 85-100 % of each side, a horizontal flip half the time, JPEG quality 82-95;
* ``--mode photo`` (default): at COCO size (about 640 x 480), 50-200 kB each, in /tmp/mmsearch-bench-photos;
* ``--mode 12mp``: upscaled (bicubic) to 4032 x 3024 (3024 x 4032 for portrait sources) with light
  Gaussian grain (sigma 2.5) so the files are the 1-3 MB of a phone photo, in /tmp/mmsearch-bench-photos-12mp.

Then it runs ``mmsearch bench index FOLDER`` with every option it does not know, e.g.

    python benchmarks/bench_index_throughput.py --model ViT-B-32:laion2b_s34b_b79k --batch-size 64
    python benchmarks/bench_index_throughput.py --mode 12mp --model ViT-B-32:random --json

``--make-only`` builds the folder and stops. Exits 0 with a message when coco-mini is absent.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = Path(os.environ.get("MMSEARCH_CORPUS") or HERE.parent.parent / "shared" / "corpus") / "coco-mini"
OUT = {"photo": Path("/tmp/mmsearch-bench-photos"), "12mp": Path("/tmp/mmsearch-bench-photos-12mp")}
TWELVE_MP = (4032, 3024)


def make_variant(job: tuple[str, str, int, str]) -> int:
    """Write variant ``number`` of ``source`` to ``target``; returns its size in bytes."""
    import numpy as np
    from PIL import Image, ImageOps

    source, target, number, mode = job
    rng = np.random.default_rng(number)
    with Image.open(source) as original:
        image = ImageOps.exif_transpose(original).convert("RGB")
    width, height = image.size
    keep_w, keep_h = (int(side * rng.uniform(0.85, 1.0)) for side in (width, height))
    left, top = int(rng.integers(0, width - keep_w + 1)), int(rng.integers(0, height - keep_h + 1))
    image = image.crop((left, top, left + keep_w, top + keep_h))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if mode == "12mp":
        size = TWELVE_MP if keep_w >= keep_h else TWELVE_MP[::-1]
        image = ImageOps.fit(image, size, Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.float32)
        pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * 2.5
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.save(target, "JPEG", quality=int(rng.integers(82, 96)))
    return Path(target).stat().st_size


def make_folder(corpus: Path, out: Path, count: int, mode: str, processes: int) -> None:
    sources = sorted(p for split in ("train2017", "val2017") for p in (corpus / split).glob("*.jpg"))
    if not sources:
        raise SystemExit(f"bench_index_throughput: no JPEGs under {corpus}")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / f".made-{mode}-{count}"
    if marker.is_file() and len(list(out.glob("*.jpg"))) == count:
        print(f"bench_index_throughput: reusing {out} ({count} {mode} JPEGs)", file=sys.stderr)
        return
    for stale in out.glob("*.jpg"):
        stale.unlink()
    for old_marker in out.glob(".made-*"):
        old_marker.unlink()
    jobs = [(str(sources[n % len(sources)]), str(out / f"photo{n:05d}.jpg"), n, mode) for n in range(count)]
    print(f"bench_index_throughput: writing {count} {mode} JPEGs to {out} ...", file=sys.stderr)
    with ProcessPoolExecutor(processes) as pool:
        sizes = list(pool.map(make_variant, jobs, chunksize=4))
    digests = {hashlib.sha256(Path(job[1]).read_bytes()).hexdigest() for job in jobs}
    if len(digests) != count:
        raise SystemExit(f"bench_index_throughput: only {len(digests)} of {count} files are distinct")
    marker.write_text("")
    print(f"bench_index_throughput: {count} files, {min(sizes) / 1e6:.2f}-{max(sizes) / 1e6:.2f} MB "
          f"(total {sum(sizes) / 1e6:.0f} MB)", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the coco-mini folder")
    parser.add_argument("--mode", choices=sorted(OUT), default="photo")
    parser.add_argument("--count", type=int, default=500, help="JPEGs to make (default 500)")
    parser.add_argument("--out", type=Path, help="folder for the JPEGs (default by mode, under /tmp)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="processes making JPEGs")
    parser.add_argument("--make-only", action="store_true", help="make the folder, do not benchmark")
    known, forwarded = parser.parse_known_args()
    if not (known.corpus / "val2017").is_dir():
        print(f"bench_index_throughput: coco-mini not found at {known.corpus}; skipped (set MMSEARCH_CORPUS or --corpus)")
        return 0
    out = known.out or OUT[known.mode]
    make_folder(known.corpus, out, known.count, known.mode, max(1, known.processes))
    if known.make_only:
        return 0
    return subprocess.call([sys.executable, "-m", "mmsearch", "bench", "index", str(out), *forwarded])


if __name__ == "__main__":
    sys.exit(main())
