#!/usr/bin/env python
"""Recall on coco-mini (159 COCO 2017 photos x 5 captions) with `mmsearch bench recall`.

coco-mini ships two COCO caption files (train2017: 80 images, val2017: 79); this script reads both
with ``mmsearch.evaluation.load_pairs``, writes one JSONL pairs file with absolute paths, and runs
``mmsearch bench recall`` on it. Options it does not know are passed to that command, e.g.

    python benchmarks/bench_recall.py --model ViT-B-32:laion2b_s34b_b79k
    python benchmarks/bench_recall.py --model ViT-B-32:laion2b_s34b_b79k --with-store --json

``--with-store`` first indexes the 159 photos into a temporary store with the same model (or into
``--store-dir DIR``, kept), so the output also has the stored / index / end-to-end rows.
Exits 0 with a message when the corpus is absent.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = Path(os.environ.get("MMSEARCH_CORPUS") or HERE.parent.parent / "shared" / "corpus") / "coco-mini"
SPLITS = ("train2017", "val2017")


def write_pairs(corpus: Path, out: Path) -> tuple[int, int]:
    """Both COCO caption files -> one JSONL file (absolute image paths); returns (images, captions)."""
    from mmsearch.evaluation.pairs import load_pairs

    images = captions = 0
    with out.open("w", encoding="utf-8") as sink:
        for split in SPLITS:
            pairs = load_pairs(corpus / "annotations" / f"captions_{split}.json", root=corpus / split,
                               require_media=True)
            for caption, owner in zip(pairs.captions, pairs.caption_media.tolist()):
                sink.write(json.dumps({"image": str(pairs.media[owner]), "caption": caption}) + "\n")
            images, captions = images + pairs.num_media, captions + pairs.num_captions
    return images, captions


def mmsearch(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "mmsearch", *args])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the coco-mini folder")
    parser.add_argument("--with-store", action="store_true", help="also index into a store and measure through it")
    parser.add_argument("--store-dir", type=Path, help="store folder to index into (kept); implies --with-store")
    known, forwarded = parser.parse_known_args()
    if not (known.corpus / "annotations" / "captions_val2017.json").is_file():
        print(f"bench_recall: coco-mini not found at {known.corpus}; skipped (set MMSEARCH_CORPUS or --corpus)")
        return 0
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-recall-") as tmp:
        pairs = Path(tmp) / "coco-mini.jsonl"
        images, captions = write_pairs(known.corpus, pairs)
        print(f"bench_recall: {images} images, {captions} captions -> {pairs}", file=sys.stderr)
        command = ["bench", "recall", "--pairs", str(pairs), *forwarded]
        if known.with_store or known.store_dir:
            store = known.store_dir or Path(tmp) / "store"
            index_options = [opt for pair in _options(forwarded, ("--model", "--batch-size", "--precision", "--device",
                                                                 "--workers")) for opt in pair]
            status = mmsearch("index", *(str(known.corpus / s) for s in SPLITS), "--store", str(store),
                              "--audio-model", "none", *index_options)
            if status:
                return status
            command += ["--store", str(store)]
        return mmsearch(*command)


def _options(args: list[str], names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(name, value) of the options in ``names`` found in ``args`` (as ``--x v`` or ``--x=v``)."""
    found = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                found.append((name, value))
            elif i + 1 < len(args):
                found.append((name, args[i + 1]))
    return found


if __name__ == "__main__":
    sys.exit(main())
