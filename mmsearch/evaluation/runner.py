"""``run_recall``: a pair set + encoders (+ optionally a store) -> a ``RecallReport`` of recall rows.

What each row's ``method`` means (all recall values in percent, see ``recall.py`` for the rank rules):

``exact``       Fresh vectors: every media file decoded and embedded as indexing would (a multi-window
                audio file is the normalised mean of its windows), every caption embedded with the
                matching text tower; brute-force cosine over ALL pair media (text→media) or ALL
                captions (media→text). No index is involved. This is the model's quality.
``stored``      The same, but with the vectors the store holds for the pair media (an audio file: the
                normalised mean of its stored windows). Differs from ``exact`` only if the store was
                built differently (precision, device, older files); the reference for ``index``.
``index``       Each caption searched through the store's real vector index (FAISS, whatever type it
                is), hits mapped to files and files that are not pair media skipped; the rank is the
                position of the caption's media among the pair media returned. ``index`` minus
                ``stored`` is the loss caused by approximate search. Text→media only.
``end-to-end``  Each caption run through ``Engine.search`` (text encoder, index, grouping per file,
                exactly ``mmsearch search --kind KIND -k DEPTH``); EVERY file in the store competes,
                and the rank is the position of the caption's media among the returned files.
                This is what a user sees on their own labelled folder. Text→media only.

``no-rerank``   With ``rerank`` N (image pairs): the same captions (and images) searched without and with
``rerank``      re-ranking of their first N hits by an image-text matching model; ``rerank_recall.py``
                defines both rows, text→image and image→text.

``index``, ``end-to-end`` and the re-ranked rows read at most ``depth`` results: a miss counts as rank
depth+1, so their median/mean ranks are lower bounds (``rank_depth`` is set). Store rows cover only the
pair media found in the store; the others are listed in the row's ``excluded``.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import numpy as np

from mmsearch.engine import Engine
from mmsearch.errors import UsageError
from mmsearch.evaluation.embedding import embed_media, embed_texts
from mmsearch.evaluation.pairs import PairSet
from mmsearch.evaluation.recall import DEFAULT_KS, cross_modal_recall
from mmsearch.evaluation.rerank_recall import check_rerank_options
from mmsearch.evaluation.results import PairEmbeddings, RecallReport, RecallRow
from mmsearch.evaluation.store_recall import store_rows
from mmsearch.ingest.pipelines import AudioPipeline, ImagePipeline
from mmsearch.progress import NoProgress, Progress
from mmsearch.records import Modality

log = logging.getLogger(__name__)

METHODS = ("exact", "stored", "index", "end-to-end", "no-rerank", "rerank")


def subset_captions(caption_media: np.ndarray, kept_media: np.ndarray, num_media: int) -> tuple[np.ndarray, np.ndarray]:
    """(caption indexes whose media is kept, their owner as a row of ``kept_media``)."""
    remap = np.full(num_media, -1, dtype=np.int64)
    remap[np.asarray(kept_media, dtype=np.int64)] = np.arange(len(kept_media))
    owner = remap[np.asarray(caption_media, dtype=np.int64)]
    kept = np.flatnonzero(owner >= 0).astype(np.int64)
    return kept, owner[kept]


def _pipeline(modality: Modality, image_encoder: Any, audio_encoder: Any) -> tuple[Any, Any]:
    """(media pipeline, text encoder) for the pair set's modality."""
    if modality == Modality.IMAGE:
        if image_encoder is None:
            raise UsageError("image pairs need an image-text model ({opt:model})")
        return ImagePipeline(image_encoder), image_encoder
    if modality == Modality.AUDIO:
        if audio_encoder is None:
            raise UsageError("audio pairs need an audio-text model ({opt:audio_model})")
        return AudioPipeline(audio_encoder), audio_encoder
    raise UsageError(f"cannot benchmark {modality} media")


def embed_pairs(
    pairs: PairSet,
    image_encoder: Any = None,
    audio_encoder: Any = None,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: Progress | None = None,
) -> PairEmbeddings:
    """Embed every media of ``pairs`` (failures left out) and the captions of the media kept."""
    modality = pairs.modality()
    pipeline, text_encoder = _pipeline(modality, image_encoder, audio_encoder)
    media = embed_media(pairs.media, pipeline, batch_size=batch_size, workers=workers, progress=progress)
    if not len(media.kept):
        first = media.failed[0] if media.failed else None
        raise UsageError(f"{pairs.source}: none of the {pairs.num_media} media could be embedded"
                         + (f" (first: {first.path}: {first.reason}; use {{opt:root}} to say where the media live)"
                            if first else ""))
    kept_captions, owner = subset_captions(pairs.caption_media, media.kept, pairs.num_media)
    texts = embed_texts([pairs.captions[i] for i in kept_captions], text_encoder, batch_size=batch_size,
                        progress=progress)
    identity = text_encoder.identity
    return PairEmbeddings(pairs, modality, identity.spec, identity.fingerprint, bool(identity.semantic),
                          media.vectors, media.kept, texts.vectors, kept_captions, owner, media.failed, texts.truncated)


def exact_rows(embedded: PairEmbeddings, ks: Iterable[int] = DEFAULT_KS) -> tuple[RecallRow, RecallRow]:
    """(text→media, media→text) by brute force over the fresh vectors."""
    to_media, to_text = cross_modal_recall(embedded.media_vectors, embedded.caption_vectors, embedded.caption_owner,
                                           ks, media_modality=embedded.modality)
    common = dict(media=len(embedded.kept_media), captions=len(embedded.kept_captions), excluded=embedded.failed,
                  excluded_captions=embedded.excluded_captions)
    return RecallRow("exact", to_media, **common), RecallRow("exact", to_text, **common)


def run_recall(
    pairs: PairSet,
    image_encoder: Any = None,
    audio_encoder: Any = None,
    *,
    ks: Iterable[int] = DEFAULT_KS,
    batch_size: int = 32,
    workers: int | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
    depth: int = 10,
    rerank: int = 0,
    rerank_queries: int | None = None,
    rerank_optional: bool = False,
) -> RecallReport:
    """Exact recall of ``pairs`` with the given encoders; with ``engine``, also recall through its store, and
    with ``rerank`` N the store's search with its first N hits re-ranked by ``engine.reranker``'s model (at
    most ``rerank_queries`` captions and as many images; default all). A re-ranking model that cannot be
    loaded raises ModelLoadError before anything is embedded, or with ``rerank_optional`` leaves the re-ranked
    rows out, with a note.

    Encoders are objects with the ``ImageTextEncoder`` / CLAP encoder methods (tests pass stubs).
    With ``engine``, the encoder for the pair set's modality must be the store's model.
    """
    started = time.perf_counter()
    ks = tuple(sorted(set(int(k) for k in ks)))
    if engine is not None and (depth < 1 or (ks and depth < ks[-1])):
        raise UsageError(f"{{opt:depth}} {depth} must be at least the largest k ({ks[-1] if ks else 1})")
    notes: list[str] = []
    if rerank and not _can_rerank(pairs, engine, rerank, rerank_queries, rerank_optional, notes):
        rerank = 0
    progress = progress or NoProgress()
    embedded = embed_pairs(pairs, image_encoder, audio_encoder, batch_size=batch_size, workers=workers,
                           progress=progress)
    rows = list(exact_rows(embedded, ks))
    index_name = reranked = None
    if engine is not None:
        measured = store_rows(embedded, engine, ks=ks, depth=depth, progress=progress, rerank=rerank,
                              rerank_queries=rerank_queries)
        rows.extend(measured.rows)
        notes.extend(measured.notes)
        index_name, reranked = measured.index, measured.rerank
    if not embedded.semantic:
        notes.append(f"{embedded.model} has random weights: these recalls are chance level, not a model's quality")
    if embedded.truncated_captions:
        notes.append(f"{embedded.truncated_captions} captions were longer than the text model's context and were truncated")
    return RecallReport(
        source=str(pairs.source), format=pairs.format, modality=embedded.modality, model=embedded.model,
        semantic=embedded.semantic, media=pairs.num_media, captions=pairs.num_captions, failed=embedded.failed,
        excluded_captions=embedded.excluded_captions, truncated_captions=embedded.truncated_captions,
        rows=tuple(rows), seconds=round(time.perf_counter() - started, 3),
        store=str(engine.store.path) if engine is not None else None, index=index_name,
        depth=depth if engine is not None else None, notes=tuple(notes), rerank=reranked)


def _can_rerank(pairs: PairSet, engine: Engine | None, rerank: int, queries: int | None, optional: bool,
               notes: list[str]) -> bool:
    """Refuse a re-ranked measurement that cannot run, and load the matching model, before the long embedding
    (``Reranker.available``: a ModelLoadError, or with ``optional`` a note and False)."""
    if engine is None:
        raise UsageError("{opt:rerank} re-ranks a store's search: add {opt:store}")
    if pairs.modality() != Modality.IMAGE:
        raise UsageError(f"{{opt:rerank}} re-ranks image search; {pairs.source} pairs {pairs.modality()} files")
    check_rerank_options(rerank, queries)
    return engine.reranker.available(optional, notes)
