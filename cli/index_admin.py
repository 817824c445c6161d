"""``import-vectors`` (precomputed embeddings into a store) and ``reindex`` (choose or force the index
type). Registered on the main app by ``register``."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer

from mmsearch.config import Settings
from mmsearch.records import INDEX_MODALITIES

from .errors import guarded
from .output import BarProgress, emit_json

StoreOption = typer.Option(None, "--store", help="Store folder (default: $MMSEARCH_STORE, else indexes/default).")
JsonOption = typer.Option(False, "--json", help="Print one JSON document instead of text.")
BudgetOption = typer.Option(None, "--memory-budget", help="Memory the index may use, e.g. 8GiB or 512MiB (default: "
                                                          "the store's recorded budget, else 8GiB or half the RAM). "
                                                          "Recorded for later automatic re-selection.")


@guarded
def import_vectors(
    embeddings: List[Path] = typer.Argument(..., help="EMBEDDINGS.npy files, folders of them, or a clip-retrieval "
                                                      "output folder (img_emb/, text_emb/, metadata/)."),
    metadata: Optional[List[Path]] = typer.Option(None, "--metadata", help="Parquet or CSV file (or folder) per "
                                                  "shard, with a path column (image_path, path, url...) and "
                                                  "optionally caption/text; default: the clip-retrieval metadata/ "
                                                  "folder beside the embeddings."),
    modality: Optional[str] = typer.Option(None, "--modality", help="image, text or audio (default: from the "
                                                                     "folder name, e.g. img_emb -> image)."),
    model: Optional[str] = typer.Option(None, "--model", help="The model that made the vectors, ARCH:WEIGHTS "
                                                              "(required for a new store; checked against the "
                                                              "store's). Not loaded."),
    store: Optional[Path] = StoreOption,
    memory_budget: Optional[str] = BudgetOption,
    json: bool = JsonOption,
) -> None:
    """Import precomputed embeddings (e.g. clip-retrieval's) as catalog items with their vectors; the
    index type is re-chosen for the new collection size."""
    from mmsearch.errors import UsageError
    from mmsearch.ingest.importer import import_vectors as run_import
    from mmsearch.store.folder import CATALOG_NAME, Store

    if modality is not None and modality not in {m.value for m in INDEX_MODALITIES}:
        raise UsageError(f"--modality must be image, text or audio, not {modality!r}")
    settings = Settings.resolve(store=store)
    if model is None and not (settings.store / CATALOG_NAME).is_file():
        raise UsageError(f"{settings.store}: a new store needs --model ARCH:WEIGHTS, the model that made these vectors")
    with Store.open(settings.store, create=True) as opened:
        report = run_import(opened, embeddings, metadata=metadata or None, modality=modality, model=model,
                            memory_budget=memory_budget, progress=BarProgress(enabled=not json))
    if json:
        emit_json(asdict(report))
        return
    print(f"imported {report.rows} {report.modality} vectors (dim {report.dim}, model {report.model}) from "
          f"{report.shards} file{'s' if report.shards != 1 else ''} in {report.seconds:.1f} s: {report.added} added, "
          f"{report.replaced} replaced, {report.skipped} skipped")
    print(f"index    {report.index}")
    if report.reason:
        print(f"why      {report.reason}")


@guarded
def reindex(
    index_type: str = typer.Option("auto", "--index-type", help="auto, flat, ivf-flat, ivf-pq, hnsw, gpu-flat, "
                                                                 "gpu-ivf, cagra or torch-flat."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this modality's index: image, text or audio "
                                                             "(default: every one that holds vectors)."),
    store: Optional[Path] = StoreOption,
    memory_budget: Optional[str] = BudgetOption,
    json: bool = JsonOption,
) -> None:
    """Rebuild index files from the stored vectors as INDEX-TYPE ('auto': chosen from the collection size and
    the memory budget; any other type is kept as the collection grows). Search parameters (nprobe,
    efSearch) are tuned for recall@10 >= 0.95 on the store's own vectors."""
    from mmsearch.errors import UsageError
    from mmsearch.index.factory import KINDS
    from mmsearch.store.folder import Store
    from mmsearch.store.reselect import reindex as run_reindex

    if index_type != "auto" and index_type not in KINDS:
        raise UsageError(f"--index-type must be auto or one of {', '.join(KINDS)}, not {index_type!r}")
    modalities = [m for m in INDEX_MODALITIES if kind in (None, m.value)]
    if not modalities:
        raise UsageError(f"--kind must be image, text or audio, not {kind!r}")
    settings = Settings.resolve(store=store)
    done = {}
    with Store.open(settings.store) as opened:
        opened.acquire_writer()
        for modality in modalities:
            choice = run_reindex(opened, modality, index_type, budget=memory_budget,
                                 progress=BarProgress(enabled=not json))
            if choice is not None:
                done[modality.value] = choice
    if not done:
        raise UsageError(f"{settings.store}: no {'vectors' if kind is None else kind + ' vectors'} to index")
    if json:
        emit_json({name: {"kind": c.kind, "params": dict(c.params), "reason": c.reason, "vectors": c.n_vectors,
                          "mode": c.mode, "estimated_bytes": c.estimated_bytes} for name, c in done.items()})
        return
    for name, choice in done.items():
        print(f"{name:<8} {choice.summary()}")
        print(f"{'':<8} {choice.reason}")


def register(app: typer.Typer) -> None:
    app.command("import-vectors")(import_vectors)
    app.command("reindex")(reindex)
