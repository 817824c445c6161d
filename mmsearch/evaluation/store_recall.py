"""Recall through a store: its stored vectors, its real vector index, and ``Engine.search`` end to end.

Methods ``stored``, ``index`` and ``end-to-end`` of ``runner.py`` (whose docstring defines them).
Pair media are matched to the store's files by real path (``os.path.realpath`` on the catalog's
absolute paths; pair files already resolve symlinks), so a store indexed through a symlinked folder
still matches.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from mmsearch.engine import Engine
from mmsearch.errors import ModelMismatchError, UsageError
from mmsearch.evaluation.embedding import pool_segments
from mmsearch.evaluation.recall import DEFAULT_KS, cross_modal_recall, recall_from_ranked_ids
from mmsearch.evaluation.rerank_recall import rerank_rows
from mmsearch.evaluation.results import PairEmbeddings, RecallRow, RerankSummary
from mmsearch.evaluation.searched import end_to_end_ranked
from mmsearch.index.backend import VectorBackend
from mmsearch.progress import NoProgress, Progress
from mmsearch.records import FailedFile, Modality
from mmsearch.store.folder import Store
from mmsearch.store.rows import INDEXED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreRows:
    rows: tuple[RecallRow, ...]
    index: str | None
    """The index's description (type, placement)."""
    notes: tuple[str, ...] = ()
    rerank: RerankSummary | None = None


@dataclass(frozen=True)
class StoreMatch:
    """The kept pair media that the store holds, and their stored vectors."""

    rows: np.ndarray
    """(S,) int64: rows of ``PairEmbeddings.media_vectors`` found in the store."""
    vectors: np.ndarray
    """(S, dim) stored vectors, one per matched media (pooled over windows)."""
    segment_media: dict[int, int]
    """Store segment id -> position in ``rows``."""
    excluded: tuple[FailedFile, ...]


def match_store(embedded: PairEmbeddings, store: Store) -> StoreMatch:
    """Find the kept pair media in ``store``'s catalog and read their stored vectors."""
    modality = embedded.modality
    by_real = {os.path.realpath(path): row for path, row in store.catalog.all_items().items()}
    found: list[tuple[int, int]] = []  # (embedded row, item id)
    excluded = list(embedded.failed)
    for row, media_index in enumerate(embedded.kept_media.tolist()):
        path = embedded.pairs.media[media_index]
        item = by_real.get(os.path.realpath(path))
        if item is None or item.modality != modality:
            excluded.append(FailedFile(str(path), "not in the store"))
        elif item.state != INDEXED:
            excluded.append(FailedFile(str(path), f"failed in the store: {item.error or item.state}"))
        else:
            found.append((row, item.id))
    dim = store.dim(modality)
    if not found or dim is None:
        raise UsageError(f"{store.path}: none of the {len(embedded.kept_media)} pair media are indexed in this store "
                         f"(index them into it first)")
    with store.catalog.snapshot() as read:
        segment_ids = read.item_segment_ids([item for _, item in found]).get(modality, [])
    segment_rows = store.catalog.segment_rows(segment_ids)
    stored = store.catalog.vectors_for(segment_ids, dim)
    position = {item: pos for pos, (_, item) in enumerate(found)}
    per_media: list[list[np.ndarray]] = [[] for _ in found]
    segment_media: dict[int, int] = {}
    for seg_id in sorted(segment_ids):
        seg_row = segment_rows.get(seg_id)
        if seg_row is not None and seg_id in stored:
            segment_media[seg_id] = position[seg_row.item_id]
            per_media[position[seg_row.item_id]].append(stored[seg_id])
    keep = [pos for pos, vectors in enumerate(per_media) if vectors]
    for pos in sorted(set(range(len(found))) - set(keep)):
        excluded.append(FailedFile(str(embedded.pairs.media[embedded.kept_media[found[pos][0]]]), "no stored vectors"))
    renumber = {old: new for new, old in enumerate(keep)}
    return StoreMatch(
        rows=np.asarray([found[pos][0] for pos in keep], dtype=np.int64),
        vectors=np.vstack([pool_segments(np.vstack(per_media[pos])) for pos in keep]).astype(np.float32),
        segment_media={seg: renumber[pos] for seg, pos in segment_media.items() if pos in renumber},
        excluded=tuple(excluded))


def index_ranked(index: VectorBackend, queries: np.ndarray, segment_media: dict[int, int], depth: int) -> np.ndarray:
    """(Q, depth) media positions each query's index search returns, best first, -1 padded.

    Results that are not pair media are skipped; a query is searched deeper (x4) until ``depth`` distinct
    pair media came back or the whole index was asked for.
    """
    wanted = min(depth, len(set(segment_media.values())))
    ranked = np.full((len(queries), depth), -1, dtype=np.int64)
    todo = np.arange(len(queries))
    k = min(len(index), max(2 * depth, 16))
    while len(todo):
        found = index.search(queries[todo], k)
        again = []
        for query, ids in zip(todo.tolist(), found.ids.tolist()):
            seen: list[int] = []
            for seg_id in ids:
                media = segment_media.get(seg_id)
                if media is not None and media not in seen:
                    seen.append(media)
                    if len(seen) == depth:
                        break
            ranked[query, :len(seen)] = seen
            if len(seen) < wanted and k < len(index):
                again.append(query)
        todo, k = np.asarray(again, dtype=np.int64), min(len(index), k * 4)
    return ranked


def store_rows(
    embedded: PairEmbeddings,
    engine: Engine,
    *,
    ks: Iterable[int] = DEFAULT_KS,
    depth: int = 10,
    progress: Progress | None = None,
    rerank: int = 0,
    rerank_queries: int | None = None,
) -> StoreRows:
    """``stored`` (both directions), ``index`` and ``end-to-end`` (text→media) rows for ``engine``'s store; with
    ``rerank``, ``no-rerank`` and ``rerank`` rows too (``rerank_recall``; at most ``rerank_queries`` a direction)."""
    progress = progress or NoProgress()
    store, modality = engine.store, embedded.modality
    role = "clip" if modality == Modality.IMAGE else "clap"
    recorded = store.model_for(role)
    if recorded is None:
        raise UsageError(f"{store.path}: this store holds no {modality} files")
    if recorded["fingerprint"] != embedded.fingerprint:
        raise ModelMismatchError(store.path, recorded["spec"], embedded.model,
                                 role="model" if role == "clip" else "audio model")
    match = match_store(embedded, store)
    kept_captions, owner = _captions_of(embedded, match.rows)
    caption_vectors = embedded.caption_vectors[kept_captions]
    excluded_captions = embedded.pairs.num_captions - len(kept_captions)
    common = dict(media=len(match.rows), captions=len(kept_captions), excluded=match.excluded,
                  excluded_captions=excluded_captions)
    to_media, to_text = cross_modal_recall(match.vectors, caption_vectors, owner, ks, media_modality=modality)
    rows = [RecallRow("stored", to_media, **common), RecallRow("stored", to_text, **common)]
    notes: list[str] = []
    index = store.index(modality)
    description = index.describe() if index is not None else None
    direction = f"text→{modality}"
    if index is not None and len(index):
        ranked = index_ranked(index, caption_vectors, match.segment_media, depth)
        rows.append(RecallRow("index", recall_from_ranked_ids(ranked, owner, ks, direction), **common))
    media_paths = [str(embedded.pairs.media[embedded.kept_media[r]]) for r in match.rows.tolist()]
    texts = [embedded.pairs.captions[embedded.kept_captions[c]] for c in kept_captions.tolist()]
    try:
        ranked = end_to_end_ranked(engine, texts, media_paths, modality, depth, progress)
    except UsageError as exc:  # e.g. an engine that cannot embed text into the audio space yet
        notes.append(f"end-to-end {direction} not measured: {exc}")
    else:
        rows.append(RecallRow("end-to-end", recall_from_ranked_ids(ranked, owner, ks, direction), **common))
    if modality == Modality.AUDIO:
        notes.append("audio: exact and stored rows score a file by the normalised mean of its windows, index and "
                     "end-to-end rows by its best window (as search does)")
    summary = None
    if rerank:
        measured = rerank_rows(engine, media_paths, match.vectors, texts, caption_vectors, owner, rerank=rerank,
                               depth=depth, queries=rerank_queries, ks=ks, progress=progress,
                               excluded=match.excluded, excluded_captions=excluded_captions)
        rows.extend(measured.rows)
        notes.extend(measured.notes)
        summary = measured.summary
    return StoreRows(tuple(rows), description, tuple(notes), summary)


def _captions_of(embedded: PairEmbeddings, media_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indexes into the kept captions whose media is in ``media_rows``, their owner as a position in it)."""
    remap = np.full(len(embedded.kept_media), -1, dtype=np.int64)
    remap[media_rows] = np.arange(len(media_rows))
    owner = remap[embedded.caption_owner]
    kept = np.flatnonzero(owner >= 0).astype(np.int64)
    return kept, owner[kept]
