"""mmsearch: cross-modal search over folders of images, text and audio.

    import mmsearch

    with mmsearch.open_store("my-store", create=True) as store:
        store.index(["~/Pictures", "~/notes", "~/Sounds"])
        for hit in store.search("a dog running on the beach", kind="image", k=5).hits:
            print(hit.score, hit.path)

The data flows down through the subpackages, each importing only those below it (a test keeps it so):

    config, errors, records, progress, atomic   shared ground: settings, typed errors, frozen records
    decoding/    encoders/                      file -> model input; model input -> unit vectors
    bridge/      index/                         maps between model spaces; vector backends (FAISS, torch)
    store/                                      the store folder: catalog (all SQL), index files, upkeep
    ingest/      search/                        folders -> catalog + indexes; queries -> ranked hits
    engine                                      the one composition root: open_store(path) -> Engine
    evaluation/  bench/                         recall and throughput, measured over the public API

The library never imports Typer or the CLI (the ``mmsearch_cli`` package). Importing ``mmsearch`` does no
work: the names below are loaded on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "open_store": "mmsearch.engine", "Engine": "mmsearch.engine", "Query": "mmsearch.search.queries",
    "Settings": "mmsearch.config",
    "Hit": "mmsearch.records", "SearchResult": "mmsearch.records", "IndexReport": "mmsearch.records",
    "StoreStatus": "mmsearch.records", "FailedFile": "mmsearch.records", "Modality": "mmsearch.records",
    "MMSearchError": "mmsearch.errors",
}
__all__ = ["__version__", "open_store", "Engine", "Query", "Settings", "Hit", "SearchResult", "IndexReport",
           "StoreStatus", "FailedFile", "Modality", "MMSearchError"]

if TYPE_CHECKING:
    from mmsearch.config import Settings
    from mmsearch.engine import Engine, open_store
    from mmsearch.errors import MMSearchError
    from mmsearch.records import FailedFile, Hit, IndexReport, Modality, SearchResult, StoreStatus
    from mmsearch.search.queries import Query


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
