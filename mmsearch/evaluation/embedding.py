"""Embed the media and captions of a pair set with the same decode + encode steps as indexing.

Media go through a pipeline from ``mmsearch.pipelines`` (``decode(path)`` in worker threads, then
``encode(inputs)`` in batches), exactly as ``mmsearch index`` would embed them; captions go through the
encoder's text tower in batches. A media file that yields several vectors (an audio file longer than
one window) is represented by the L2-normalised MEAN of its window vectors. A media file that cannot
be decoded (or does not exist) is left out, with its reason; callers drop its captions too.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mmsearch.encoders.base import l2_normalise
from mmsearch.errors import DecodeError
from mmsearch.progress import NoProgress, Progress
from mmsearch.records import FailedFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaEmbeddings:
    vectors: np.ndarray
    """(K, dim) float32 unit vectors, one per media that decoded, in input order."""
    kept: np.ndarray
    """(K,) int64: index into the input paths of each row of ``vectors``."""
    failed: tuple[FailedFile, ...]
    """Inputs that could not be embedded, in input order, with a short reason."""
    segments: int
    """Model inputs encoded (windows for audio, one per image)."""


@dataclass(frozen=True)
class TextEmbeddings:
    vectors: np.ndarray
    """(N, dim) float32 unit vectors, one per text, in input order."""
    truncated: int
    """How many texts were longer than the model's context and were cut."""


def pool_segments(vectors: np.ndarray) -> np.ndarray:
    """One unit vector for a file from its segment vectors: the normalised mean (a single vector as is)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) == 1:
        return vectors[0]
    return l2_normalise(vectors.mean(axis=0, keepdims=True))[0]


def _decode(pipeline: Any, path: Path) -> list[tuple[Any, Any]] | DecodeError:
    if not Path(path).is_file():
        return DecodeError(path, "no such file")
    try:
        parts = list(pipeline.decode(Path(path)))
    except DecodeError as exc:
        return exc
    if not parts:
        return DecodeError(path, "nothing to embed in this file")
    return parts


def _ordered_decodes(pool: ThreadPoolExecutor, pipeline: Any, paths: Sequence[Path], ahead: int) -> Iterator:
    pending: deque[Future] = deque()
    queued = iter(paths)
    for path in queued:
        pending.append(pool.submit(_decode, pipeline, path))
        if len(pending) >= ahead:
            break
    while pending:
        yield pending.popleft().result()
        nxt = next(queued, None)
        if nxt is not None:
            pending.append(pool.submit(_decode, pipeline, nxt))


def embed_media(
    paths: Sequence[Path],
    pipeline: Any,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    progress: Progress | None = None,
) -> MediaEmbeddings:
    """Decode ``paths`` with ``pipeline`` in ``workers`` threads (default: up to 4) and encode them in batches."""
    progress = progress or NoProgress()
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    per_media: list[list[np.ndarray]] = [[] for _ in paths]
    inputs: list[Any] = []
    owners: list[int] = []
    failed: list[FailedFile] = []
    ok = np.zeros(len(paths), dtype=bool)
    segments = 0

    def flush() -> None:
        nonlocal inputs, owners, segments
        if not inputs:
            return
        vectors = np.asarray(pipeline.encode(inputs), dtype=np.float32)
        for owner, vector in zip(owners, vectors):
            per_media[owner].append(vector)
        segments += len(inputs)
        inputs, owners = [], []

    progress.start(len(paths), f"embedding {pipeline.modality} files", "file")
    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="mmsearch-bench") as pool:
            for number, result in enumerate(_ordered_decodes(pool, pipeline, paths, max(1, workers) * 4)):
                if isinstance(result, DecodeError):
                    failed.append(FailedFile(str(paths[number]), result.reason))
                    log.info("left out: %s", result)
                else:
                    ok[number] = True
                    for _segment, model_input in result:
                        inputs.append(model_input)
                        owners.append(number)
                        if len(inputs) >= batch_size:
                            flush()
                progress.advance(1)
            flush()
    finally:
        progress.finish()
    kept = np.flatnonzero(ok).astype(np.int64)
    dim = int(pipeline.dim)
    vectors = (np.vstack([pool_segments(np.vstack(per_media[i])) for i in kept]).astype(np.float32)
               if len(kept) else np.zeros((0, dim), np.float32))
    return MediaEmbeddings(vectors, kept, tuple(failed), segments)


def embed_texts(
    texts: Sequence[str],
    encoder: Any,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> TextEmbeddings:
    """Unit vectors from ``encoder.encode_texts`` in batches (over-long texts are truncated and counted)."""
    progress = progress or NoProgress()
    parts: list[np.ndarray] = []
    truncated = 0
    progress.start(len(texts), "embedding captions", "caption")
    try:
        for start in range(0, len(texts), batch_size):
            encoded = encoder.encode_texts(list(texts[start:start + batch_size]))
            parts.append(np.asarray(encoded.vectors, dtype=np.float32))
            truncated += sum(bool(t) for t in encoded.truncated)
            progress.advance(len(parts[-1]))
    finally:
        progress.finish()
    if truncated:
        log.info("%d captions were longer than the text model's context and were truncated", truncated)
    vectors = np.vstack(parts) if parts else np.zeros((0, int(encoder.identity.dim)), np.float32)
    return TextEmbeddings(vectors, truncated)
