#!/usr/bin/env python
"""Would float16 weights make the exported text tower cheaper to load? Session load time, one query's
encoding time and cosine to the float32 graph, for the store's export and a float16 copy of it.

    .venv/bin/python benchmarks/bench_export_fp16.py --store /tmp/bench-store-500 [--runs 5]

The copy is onnxruntime's own conversion (``onnxruntime.transformers.float16``, inputs and outputs kept
float32), written to a temporary folder; the store is only read. Each load is timed in a fresh session
with the options queries use (the float32 graph: optimisation off, as it was optimised at export; the
float16 copy: with and without onnxruntime's optimisation). Medians over ``--runs``.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def session(path: Path, optimise: bool):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = (onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if optimise
                                        else onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.add_session_config_entry("session.disable_prepacking", "1")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(path: Path, optimise: bool, inputs: dict, runs: int) -> tuple[float, float, np.ndarray]:
    loads, encodes, vectors = [], [], None
    for _ in range(runs):
        started = time.perf_counter()
        made = session(path, optimise)
        loads.append(time.perf_counter() - started)
        made.run(None, inputs)
        started = time.perf_counter()
        vectors = made.run(None, inputs)[0]
        encodes.append(time.perf_counter() - started)
    return statistics.median(loads), statistics.median(encodes), vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    folder = args.store / "exports" / "clip-text"
    record = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mmsearch.encoders.exported import ExportedTextEncoder, ExportRecord

    encoder = ExportedTextEncoder(folder, ExportRecord.read(folder), None)
    ids, _ = encoder.token_ids(["a dog running on the beach"])
    inputs = {"ids": ids, "embedded": np.ascontiguousarray(encoder._embedding[ids], dtype=np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        half = Path(tmp) / "text-fp16.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            onnx.save(convert_float_to_float16(onnx.load(str(folder / record["model"])), keep_io_types=True), str(half))
        rows = []
        for name, path, optimise in (("float32 (as exported)", folder / record["model"], False),
                                     ("float16 weights", half, True), ("float16 weights, no optimisation", half, False)):
            load, encode, vectors = measure(path, optimise, inputs, args.runs)
            if not rows:
                reference = vectors
            cosine = float(np.sum(vectors * reference) / np.linalg.norm(vectors) / np.linalg.norm(reference))
            rows.append((name, path.stat().st_size / 2**20, load, encode, cosine))
    print(f"{'graph':<34} {'MB':>6} {'load s':>7} {'encode ms':>10} {'cosine':>10}")
    for name, size, load, encode, cosine in rows:
        print(f"{name:<34} {size:6.0f} {load:7.3f} {encode * 1000:10.1f} {cosine:10.7f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
