"""Recall of re-ranked search (``mmsearch bench recall --rerank N``): rows ``no-rerank`` and ``rerank``, the
same queries without and with re-ranking, so that the difference between the two rows is the gain.

``rerank`` text→image     each caption searched as ``mmsearch search CAPTION --kind image -k DEPTH --rerank N``
                          does (``Engine.search(..., rerank=N)``): its first N image hits re-scored by the
                          matching model (``search.rerank``), the rest in search order; every file of the store
                          competes, as in ``end-to-end``.
``no-rerank`` text→image  the same captions' ``Engine.search`` without re-ranking (``end-to-end``'s ranking).
``rerank`` image→text     the store holds no captions, so no passage search can return them; each image's
                          candidates are instead the DEPTH captions nearest its stored vector (``stored``'s
                          ranking; equal scores in caption order) as passage hits, and their first N are
                          re-ranked by the engine's ``Reranker``: the code that re-ranks an image query's
                          passage hits in ``Engine.search``.
``no-rerank`` image→text  those candidate lists as they are.

Re-ranking only re-orders the first N hits, so recall@k for k >= N is ``no-rerank``'s; the rows differ at
k < N and in the ranks. ``queries`` bounds the time: at most that many captions and that many images, spread
evenly over the pairs file, are queried (both rows cover the same ones). A miss within DEPTH counts as rank
DEPTH+1, as for ``index`` and ``end-to-end``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from mmsearch.engine import Engine
from mmsearch.errors import UsageError
from mmsearch.evaluation.recall import DEFAULT_KS, recall_from_ranked_ids
from mmsearch.evaluation.results import RecallRow, RerankSummary
from mmsearch.evaluation.searched import end_to_end_ranked
from mmsearch.progress import NoProgress, Progress
from mmsearch.records import FailedFile, Hit, Modality
from mmsearch.search.queries import Query
from mmsearch.search.rerank import check_rerank

log = logging.getLogger(__name__)

SHOWN_NOTES = 3
"""Distinct notes of the re-ranked searches shown (one per unreadable image, say); the rest are counted."""


@dataclass(frozen=True)
class RerankRows:
    rows: tuple[RecallRow, ...]
    summary: RerankSummary
    notes: tuple[str, ...] = ()


def spread(count: int, limit: int | None) -> np.ndarray:
    """Positions of ``limit`` of ``count`` items spread evenly from the first to the last (all without a limit)."""
    if limit is None or limit >= count:
        return np.arange(count, dtype=np.int64)
    return np.unique(np.linspace(0, count - 1, max(1, limit)).round().astype(np.int64))


def check_rerank_options(rerank: int, queries: int | None) -> None:
    """A UsageError unless ``rerank`` hits can be re-ranked (the bound ``Engine.search`` enforces) for
    ``queries`` (None: all) queries a direction."""
    check_rerank(Query(text="caption"), Modality.IMAGE.value, rerank)
    if queries is not None and queries < 1:
        raise UsageError(f"{{opt:rerank_queries}} must be at least 1, not {queries}")


def rerank_rows(
    engine: Engine,
    media_paths: list[str],
    media_vectors: np.ndarray,
    texts: list[str],
    caption_vectors: np.ndarray,
    caption_owner: np.ndarray,
    *,
    rerank: int,
    depth: int,
    queries: int | None = None,
    ks: Iterable[int] = DEFAULT_KS,
    progress: Progress | None = None,
    excluded: tuple[FailedFile, ...] = (),
    excluded_captions: int = 0,
) -> RerankRows:
    """``no-rerank`` and ``rerank`` rows, text→image then image→text, for the store's pair images.

    ``media_paths``/``media_vectors``: the pair images the store holds and their stored vectors; ``texts``/
    ``caption_vectors``: their captions and the captions' vectors; ``caption_owner``: each caption's image,
    a position in ``media_paths``. ``excluded``/``excluded_captions``: what the store rows left out.
    """
    check_rerank_options(rerank, queries)
    progress = progress or NoProgress()
    engine.reranker.available(optional=False, notes=[])  # a model that cannot be loaded fails before any query
    identity = engine.reranker.matcher.identity
    ks = tuple(ks)
    owner = np.asarray(caption_owner, dtype=np.int64)
    captions, images = spread(len(texts), queries), spread(len(media_paths), queries)
    notes: list[str] = []
    asked = [texts[c] for c in captions.tolist()]
    plain = end_to_end_ranked(engine, asked, media_paths, Modality.IMAGE, depth, NoProgress())
    started = time.perf_counter()
    reranked = end_to_end_ranked(engine, asked, media_paths, Modality.IMAGE, depth, progress, rerank=rerank,
                                 notes=notes)
    to_image = dict(media=len(media_paths), captions=len(captions), excluded=excluded,
                    excluded_captions=excluded_captions)
    rows = [RecallRow(method, recall_from_ranked_ids(ranked, owner[captions], ks, "text→image"), **to_image)
            for method, ranked in (("no-rerank", plain), ("rerank", reranked))]
    plain, reranked = caption_lists(engine, [media_paths[i] for i in images.tolist()], media_vectors[images],
                                    texts, caption_vectors, rerank=rerank, depth=depth, progress=progress,
                                    notes=notes)
    truth = own_captions(owner, len(media_paths))
    to_text = dict(media=len(images), captions=len(texts), excluded=excluded, excluded_captions=excluded_captions)
    rows += [RecallRow(method, recall_from_ranked_ids(ranked, [truth[i] for i in images.tolist()], ks, "image→text"),
                       **to_text)
             for method, ranked in (("no-rerank", plain), ("rerank", reranked))]
    summary = RerankSummary(depth=rerank, model=identity.spec, semantic=bool(identity.semantic),
                            captions=len(captions), of_captions=len(texts), images=len(images),
                            of_images=len(media_paths), seconds=round(time.perf_counter() - started, 3))
    if not summary.semantic:
        notes.append(f"re-ranking model {summary.model} has random weights: the rerank rows are chance level")
    return RerankRows(tuple(rows), summary, _distinct(notes))


def caption_lists(
    engine: Engine,
    image_paths: list[str],
    image_vectors: np.ndarray,
    texts: list[str],
    caption_vectors: np.ndarray,
    *,
    rerank: int,
    depth: int,
    progress: Progress,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(I, depth) caption positions per image, best first, -1 padded: (as ranked by cosine, with the first
    ``rerank`` re-ranked by ``engine.reranker`` as an image query's passage hits)."""
    width = max(depth, rerank)
    plain = np.full((len(image_paths), depth), -1, dtype=np.int64)
    reranked = plain.copy()
    vectors = np.ascontiguousarray(caption_vectors, dtype=np.float32)
    progress.start(len(image_paths), f"re-ranking the first {rerank} captions of each image", "query")
    try:
        for row, (path, vector) in enumerate(zip(image_paths, image_vectors)):
            scores = vectors @ np.asarray(vector, dtype=np.float32)
            nearest = np.argsort(-scores, kind="stable")[:width].tolist()
            # the captions as passage hits: the re-ranker reads their passage, score and segment id
            hits = [Hit(path="", modality=Modality.TEXT, score=float(scores[c]), calibrated=float(scores[c]),
                        item_id=c, segment_id=c, passage=texts[c]) for c in nearest]
            query = Query(image=Path(path))
            check_rerank(query, Modality.TEXT.value, rerank)
            ordered = [hit.segment_id for hit in engine.reranker.rerank(query, hits, rerank, notes)]
            plain[row, :min(depth, len(nearest))] = nearest[:depth]
            reranked[row, :min(depth, len(ordered))] = ordered[:depth]
            progress.advance(1)
    finally:
        progress.finish()
    return plain, reranked


def own_captions(owner: np.ndarray, images: int) -> list[frozenset[int]]:
    """Per image, the positions of its captions (any of them counts for image→text)."""
    found: list[set[int]] = [set() for _ in range(images)]
    for caption, image in enumerate(owner.tolist()):
        found[image].add(caption)
    return [frozenset(captions) for captions in found]


def _distinct(notes: list[str]) -> tuple[str, ...]:
    seen = list(dict.fromkeys(notes))
    if len(seen) > SHOWN_NOTES:
        return (*seen[:SHOWN_NOTES], f"... and {len(seen) - SHOWN_NOTES} more notes from the re-ranked searches")
    return tuple(seen)
