#!/usr/bin/env python
"""Exact search on a GPU through torch (``torch-flat``): queries/s at a batch size, batch-1 latency,
recall@10 against float32 exact search, GPU memory.

    python benchmarks/bench_gpu_search.py --n 10000000 --batch 1024  # target (H100): >= 20,000 q/s
    python benchmarks/bench_gpu_search.py --n 1000000 --block-elements 268435456 536870912

The vectors are draws from a ``mmsearch.bench.synthetic.ClusteredSphere`` mixture (made on the GPU), added through
``create_index("torch-flat")`` as a store would add them (the FAISS master on the CPU, the float16 replica
on the GPU). Timed: ``VectorIndex.search`` on batches of held-out queries (host arrays in, host arrays
out, as the engine calls it), after a warm-up batch; each block size in --block-elements is timed in
turn (``TORCH_SCORE_ELEMENTS``: how many scores are computed at once), with each group size in --groups
(``TOPK_GROUP``); batch-1 latency uses the fastest pair. The reference for recall is a
float32 matrix product on the GPU (TF32 off) over the same vectors for --check queries.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.index import gpu as gpu_indexes
from mmsearch.index.exact import recall_at_k
from mmsearch.index.factory import create_index


def make_rows(space: ClusteredSphere, n: int, chunk: int = 65_536) -> np.ndarray:
    """``n`` draws from ``space``'s mixture (its centres, bases and Zipf weights), made on the GPU: the same
    distribution as ``space.rows`` (not the same rows), in seconds rather than CPU-minutes at 10M."""
    import torch

    centres, bases, weights = (torch.from_numpy(a).cuda() for a in space._model())
    generator = torch.Generator(device="cuda").manual_seed(space.seed)
    out = np.empty((n, space.dim), np.float32)
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        labels = torch.multinomial(weights.float(), count, replacement=True, generator=generator)
        latent = torch.randn(count, space.rank, 1, device="cuda", generator=generator) / space.rank ** 0.5
        noise = torch.randn(count, space.dim, device="cuda", generator=generator)
        rows = centres[labels] + space.noise / space.dim ** 0.5 * noise
        rows += space.spread * torch.bmm(bases[labels], latent).squeeze(2)
        out[start:start + count] = torch.nn.functional.normalize(rows, dim=1).cpu().numpy()
    return out


def exact_reference(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """float32 top-k rows, the base copied to the GPU a million rows at a time (TF32 off)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    q = torch.from_numpy(queries).cuda()
    best_s = best_i = None
    for start in range(0, base.shape[0], 1_000_000):
        s = q @ torch.from_numpy(base[start:start + 1_000_000]).cuda().T
        top = torch.topk(s, k, dim=1)
        vals, pos = top.values, top.indices + start
        if best_s is not None:
            vals, pos = torch.cat([best_s, vals], 1), torch.cat([best_i, pos], 1)
            top = torch.topk(vals, k, dim=1)
            vals, pos = top.values, torch.gather(pos, 1, top.indices)
        best_s, best_i = vals, pos
    return best_i.cpu().numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per block size")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--check", type=int, default=512, help="queries checked against float32 exact search")
    parser.add_argument("--block-elements", type=int, nargs="+", default=[gpu_indexes.TORCH_SCORE_ELEMENTS])
    parser.add_argument("--groups", type=int, nargs="+", default=[gpu_indexes.TOPK_GROUP],
                        help="TOPK_GROUP values to time (scores per group in the top-k selection)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu_search: torch sees no CUDA GPU; skipped")
        return 0
    space = ClusteredSphere(dim=args.dim, clusters=int(min(4096, max(16, args.n // 1000))))
    started = time.perf_counter()
    base = make_rows(space, args.n)
    made = time.perf_counter() - started
    queries = space.queries(max(args.batch, args.check), salt=7)

    started = time.perf_counter()
    index = create_index("torch-flat", args.dim)
    step = 1_000_000
    for start in range(0, args.n, step):
        index.add(np.arange(start, min(args.n, start + step), dtype=np.int64), base[start:start + step])
    torch.cuda.synchronize()
    added = time.perf_counter() - started
    assert index.on_gpu, "torch-flat did not put its replica on the GPU"

    truth = exact_reference(base, queries[:args.check], args.k)
    del base
    found = index.search(queries[:args.check], args.k).ids
    recall = recall_at_k(found, truth, args.k)

    rows = []
    for elements, group in [(e, g) for e in args.block_elements for g in args.groups]:
        gpu_indexes.TORCH_SCORE_ELEMENTS, gpu_indexes.TOPK_GROUP = elements, group
        batch = queries[:args.batch]
        index.search(batch, args.k)  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(args.batches):
            index.search(batch, args.k)
        seconds = time.perf_counter() - started
        rows.append({"block_elements": elements, "group": group, "batch": args.batch,
                     "queries_per_second": round(args.batch * args.batches / seconds, 1),
                     "ms_per_batch": round(1000 * seconds / args.batches, 2)})
    best = max(rows, key=lambda r: r["queries_per_second"])
    gpu_indexes.TORCH_SCORE_ELEMENTS, gpu_indexes.TOPK_GROUP = best["block_elements"], best["group"]
    latencies = []
    for query in queries[:200]:
        t = time.perf_counter()
        index.search(query[None], args.k)
        latencies.append(time.perf_counter() - t)
    report = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "n": args.n, "dim": args.dim,
        "k": args.k, "data": space.describe(), "make_seconds": round(made, 1), "add_seconds": round(added, 1),
        "recall_at_10_vs_fp32_exact": round(float(recall), 4), "checked_queries": args.check,
        "gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "batch1_p50_ms": round(1000 * float(np.median(latencies)), 3),
        "batch1_p95_ms": round(1000 * float(np.percentile(latencies, 95)), 3),
        "throughput": rows,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
