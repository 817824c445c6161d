"""``mmsearch bench ann``: recall, build time, memory and speed of every index type, as a table or JSON.

Register on the bench app with ``bench_app.command("ann")(ann)``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from .errors import guarded
from .output import emit_json


@guarded
def ann(
    store: Optional[Path] = typer.Option(None, "--store", help="Benchmark on this store's vectors (a held-out "
                                                               "sample becomes the queries)."),
    synthetic: Optional[int] = typer.Option(None, "--synthetic", help="Benchmark on N synthetic clustered vectors "
                                                                      "(Gaussian mixture on the sphere) instead."),
    dim: int = typer.Option(512, "--dim", help="Dimension of the synthetic vectors."),
    kind: str = typer.Option("image", "--kind", help="With --store: which modality's vectors (image, text, audio)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="With --store: use at most this many vectors."),
    queries: int = typer.Option(500, "--queries", help="Held-out queries for recall and speed."),
    types: Optional[str] = typer.Option(None, "--types", help="Comma-separated index types (default: every CPU "
                                                              "type, plus GPU types this machine can run)."),
    seconds: float = typer.Option(1.0, "--seconds", help="Time spent measuring queries/s per type and batch size."),
    threads: Optional[int] = typer.Option(None, "--threads", help="FAISS threads (default: FAISS's choice, all cores)."),
    blas_sweep: bool = typer.Option(True, "--blas-sweep/--no-blas-sweep", help="Also time flat search per batch "
                                                                               "size under several BLAS thresholds."),
    json: bool = typer.Option(False, "--json", help="Print one JSON document instead of a table."),
) -> None:
    """Every index type against exact search: recall@10 on held-out queries, build time (train + add),
    index bytes and resident-memory growth, queries/s at batch 1 and 64, p50 latency at batch 1."""
    import faiss

    from mmsearch.bench.ann import run_ann_bench, store_dataset, synthetic_dataset
    from mmsearch.config import Settings
    from mmsearch.errors import UsageError
    from mmsearch.records import Modality
    from mmsearch.store.folder import Store

    if (store is None) == (synthetic is None):
        raise UsageError("give either --store DIR or --synthetic N")
    if threads is not None:
        faiss.omp_set_num_threads(max(1, threads))
    kinds = [t.strip() for t in types.split(",") if t.strip()] if types else None
    if synthetic is not None:
        if synthetic < 100:
            raise UsageError("--synthetic: at least 100 vectors")
        data = synthetic_dataset(synthetic, dim, queries=queries)
    else:
        settings = Settings.resolve(store=store)
        with Store.open(settings.store) as opened:
            if opened.dim(Modality(kind)) is None:
                raise UsageError(f"{settings.store}: no {kind} vectors")
            data = store_dataset(opened, Modality(kind), queries=queries, limit=limit)
    report = run_ann_bench(data, kinds=kinds, seconds=seconds, blas=blas_sweep,
                           progress=None if json else lambda k: typer.echo(f"benchmarking {k}...", err=True))
    if json:
        emit_json(asdict(report))
        return
    print(f"data     {report.data}")
    print(f"size     {report.n} vectors x {report.dim}, {report.queries} held-out queries, {report.threads} threads")
    print(f"{'type':<10} {'recall@10':>9} {'build s':>8} {'train s':>8} {'index MB':>9} {'RSS +MB':>8} "
          f"{'q/s b=1':>9} {'q/s b=64':>9} {'p50 ms':>7}  params")
    for r in report.results:
        shown = ", ".join(f"{k}={v}" for k, v in r.params.items())
        print(f"{r.kind:<10} {r.recall_at_10:>9.4f} {r.build_seconds:>8.2f} {r.train_seconds:>8.2f} "
              f"{r.index_bytes / 1e6:>9.1f} {r.rss_delta_bytes / 1e6:>8.1f} {r.qps_batch1:>9.1f} "
              f"{r.qps_batch64:>9.1f} {r.p50_ms_batch1:>7.3f}  {shown}")
    if report.blas:
        batches = sorted({p.batch for p in report.blas})
        print(f"flat search, ms per query by batch size (distance_compute_blas_threshold; mmsearch sets "
              f"{report.blas_threshold}):")
        print(f"{'threshold':>10} " + " ".join(f"{b:>8}" for b in batches))
        for threshold in dict.fromkeys(p.threshold for p in report.blas):
            row = {p.batch: p.ms_per_query for p in report.blas if p.threshold == threshold}
            print(f"{threshold:>10} " + " ".join(f"{row[b]:>8.3f}" for b in batches))
    for note in report.notes:
        print(f"note     {note}")
