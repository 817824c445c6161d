"""Ranked lists read back from ``Engine.search``, one per caption: what the ``end-to-end`` rows (``store_recall``)
and the re-ranked rows (``rerank_recall``) count."""
from __future__ import annotations

import os

import numpy as np

from mmsearch.engine import Engine
from mmsearch.progress import Progress
from mmsearch.records import Modality
from mmsearch.search.queries import Query


def end_to_end_ranked(engine: Engine, captions: list[str], media_paths: list[str], modality: Modality,
                      depth: int, progress: Progress, *, rerank: int = 0, notes: list[str] | None = None) -> np.ndarray:
    """(Q, depth) per caption: the files ``Engine.search`` returns, as media positions (pair media) or
    ids >= len(media_paths) (any other file of the store, each distinct); -1 padded. ``rerank``: the search
    re-ranks its first ``rerank`` hits (``mmsearch search --rerank``); the searches' notes go to ``notes``."""
    position = {os.path.realpath(p): i for i, p in enumerate(media_paths)}
    other_base = len(media_paths)
    ranked = np.full((len(captions), depth), -1, dtype=np.int64)
    what = f"re-ranking the first {rerank} hits of each caption" if rerank else "searching captions end to end"
    progress.start(len(captions), what, "query")
    try:
        for q, caption in enumerate(captions):
            result = engine.search(Query(text=caption), kind=modality.value, k=depth, rerank=rerank)
            if notes is not None:
                notes.extend(result.notes)
            for r, hit in enumerate(result.hits[:depth]):
                ranked[q, r] = position.get(os.path.realpath(hit.path), other_base + hit.item_id)
            progress.advance(1)
    finally:
        progress.finish()
    return ranked
