#!/usr/bin/env python
"""Indexing throughput per image-tower runtime, beside rclip 3.3.0, in one run on the same photos.

For each ``--precisions`` value (fp32 and bf16: torch; onnx: the store's ONNX export on onnxruntime;
int8: its int8 graph; auto: whichever measured fastest within cosine 0.999 of fp32 on this machine) it
runs ``mmsearch bench index FOLDER --precision P --json`` in a fresh process (end to end through the
real indexer, then the model alone on the same images), then rclip's own indexing of the same folder
(``../shared/peers/rclip_run.py``, a fresh database each time) with its ONNX export of the same
architecture. Run nothing else meanwhile.

    .venv/bin/python benchmarks/bench_index_throughput.py --make-only        # the 500 photo JPEGs, once
    bash ../shared/peers/setup.sh rclip                                        # rclip's venv, once
    .venv/bin/python benchmarks/bench_index_runtimes.py --model ViT-B-32:random --json

rclip's figure is skipped (with a note) where its venv is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_model

HERE = Path(__file__).resolve().parent
PEERS = Path(os.environ.get("MMSEARCH_PEERS") or HERE.parent.parent / "shared" / "peers")
RCLIP_PYTHON = Path("/tmp/peer-venvs/rclip/bin/python")


def ours(folder: Path, model: str, precision: str, batch: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "mmsearch", "bench", "index", str(folder), "--model", model,
                           "--precision", precision, "--batch-size", str(batch), "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def rclip(folder: Path, arch: str, batch: int) -> dict | None:
    if not RCLIP_PYTHON.is_file() or not (PEERS / "rclip_run.py").is_file():
        return None
    datadir = Path(tempfile.mkdtemp(prefix="rclip-bench-"))
    out = datadir / "result.json"
    try:
        subprocess.run([str(RCLIP_PYTHON), str(PEERS / "rclip_run.py"), "--images", str(folder), "--query",
                        "a dog running on the beach", "--model", arch, "--batch", str(batch), "--datadir",
                        str(datadir / "data"), "--json-out", str(out)], capture_output=True, text=True, check=True)
        return json.loads(out.read_text())
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=Path("/tmp/mmsearch-bench-photos"))
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--precisions", default="fp32,onnx,int8,auto")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.images.is_dir():
        print(f"bench_index_runtimes: {args.images} not found (make it with bench_index_throughput.py --make-only)")
        return 0
    rows = []
    for precision in args.precisions.split(","):
        report = ours(args.images, args.model, precision, args.batch)
        rows.append({"who": "mmsearch", "precision": precision, "ran": report["precision"],
                     "end_to_end": report["images_per_second"], "model_only": report["encode_images_per_second"],
                     "images": report["images"], "choice": report.get("runtime_choice", "")})
        print(f"mmsearch --precision {precision:<5} ({report['precision']}): {report['images_per_second']:.2f} images/s "
              f"end to end, {report['encode_images_per_second']:.2f} model only", file=sys.stderr)
    peer = rclip(args.images, args.model.split(":")[0], args.batch)
    if peer is not None:
        rows.append({"who": "rclip 3.3.0", "precision": "onnx fp32", "ran": "onnxruntime",
                     "end_to_end": peer.get("index_images_per_s"),
                     "model_only": peer.get("model_images_per_s_inside_rclip"), "images": peer.get("images_encoded")})
        print(f"rclip: {peer.get('index_images_per_s')} images/s end to end", file=sys.stderr)
    else:
        print("bench_index_runtimes: rclip's venv not found (bash ../shared/peers/setup.sh rclip): no peer figure",
              file=sys.stderr)
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "model": args.model, "batch": args.batch,
              "folder": str(args.images), "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        base = next((r["end_to_end"] for r in rows if r["who"] != "mmsearch"), None)
        print(f"{result['cpu']}, {result['cores']} cores; {args.model}, batch {args.batch}, {args.images}")
        for row in rows:
            versus = f"  {row['end_to_end'] / base:.2f}x rclip" if base and row["end_to_end"] else ""
            print(f"{row['who']:<12} {row['precision']:<9} {row['ran']:<12} end to end {row['end_to_end'] or 0:7.2f}"
                  f"  model only {row['model_only'] or 0:7.2f}{versus}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
