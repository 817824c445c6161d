"""One indexing run: find what changed under the given folders, embed only that, commit in batches.

Order of writes, per batch: one SQLite transaction holds the items, their segments and their vectors;
only after it commits are the vectors added to the in-memory FAISS indexes, which are saved atomically
at the end (and now and then during long runs). A crash therefore never leaves a row without its vector;
index files that lag behind the catalog are reconciled when the store is next opened.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .catalog import ItemRow
from .discovery import discover, normalise_root
from .errors import DecodeError
from .hashing import content_hash
from .pipelines import Pipeline
from .progress import NoProgress, Progress
from .records import FailedFile, IndexReport, MediaFile, Modality, Segment
from .store import Store

log = logging.getLogger(__name__)

SAVE_EVERY_SECONDS = 120.0


@dataclass
class _FileWork:
    media: MediaFile
    content_hash: str
    segments: list[Segment] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    decoded: bool = False

    @property
    def complete(self) -> bool:
        return self.decoded and len(self.vectors) == len(self.segments)


@dataclass
class _Plan:
    embed: list[_FileWork] = field(default_factory=list)
    copies: list[tuple[MediaFile, str, ItemRow]] = field(default_factory=list)
    moves: list[tuple[MediaFile, ItemRow]] = field(default_factory=list)
    touches: list[tuple[MediaFile, ItemRow]] = field(default_factory=list)
    removals: list[ItemRow] = field(default_factory=list)
    known_paths: set[str] = field(default_factory=set)


class _Batch:
    """Inputs waiting for the model and files waiting for their commit, for one modality."""

    def __init__(self, pipeline: Pipeline, batch_size: int):
        self.pipeline, self.batch_size = pipeline, batch_size
        self.inputs: list[Any] = []
        self.owners: list[_FileWork] = []
        self.files: list[_FileWork] = []

    def add(self, work: _FileWork, parts: Iterable[tuple[Segment, Any]]) -> None:
        """Queue a file's inputs, running the model whenever a batch is full. On a DecodeError midway
        the file is taken out again and the error propagates."""
        self.files.append(work)
        try:
            for segment, model_input in parts:
                work.segments.append(segment)
                self.inputs.append(model_input)
                self.owners.append(work)
                if len(self.inputs) >= self.batch_size:
                    self.encode_pending()
            if not work.segments:
                raise DecodeError(work.media.path, "nothing to index in this file")
            work.decoded = True
        except BaseException:
            self.files.remove(work)
            keep = [i for i, owner in enumerate(self.owners) if owner is not work]
            self.inputs = [self.inputs[i] for i in keep]
            self.owners = [self.owners[i] for i in keep]
            raise

    def encode_pending(self) -> None:
        if not self.inputs:
            return
        vectors = self.pipeline.encode(self.inputs)
        for owner, vector in zip(self.owners, vectors):
            owner.vectors.append(vector)
        self.inputs, self.owners = [], []

    def ready(self) -> int:
        return sum(len(w.segments) for w in self.files if w.complete)

    def take_complete(self) -> list[_FileWork]:
        done = [w for w in self.files if w.complete]
        self.files = [w for w in self.files if not w.complete]
        return done


class Indexer:
    def __init__(self, store: Store, pipelines: Sequence[Pipeline], *, batch_size: int = 32,
                 workers: int | None = None, progress: Progress | None = None):
        self.store = store
        self.pipelines = {p.modality: p for p in pipelines}
        self.batch_size = batch_size
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.progress = progress or NoProgress()
        self._last_save = time.monotonic()

    # -- the run ---------------------------------------------------------------------------------------
    def run(self, roots: Sequence[Path | str]) -> IndexReport:
        started = time.perf_counter()
        roots = [normalise_root(r) for r in roots]
        self.store.acquire_writer()
        known = self.store.catalog.all_items()
        found = [m for m in discover(roots, exclude=[self.store.path]) if m.modality in self.pipelines]
        for modality in sorted({m.modality for m in found}, key=lambda m: m.value):
            pipeline = self.pipelines[modality]  # loads that modality's model (and refuses a mismatch) only when needed
            self.store.bind_model(pipeline.role, pipeline.encoder.identity)

        unchanged, changed, seen = 0, [], set()
        for media in found:
            seen.add(str(media.path))
            row = known.get(str(media.path))
            if row is not None and (row.size, row.mtime_ns, row.modality) == (media.size, media.mtime_ns, media.modality):
                unchanged += 1
            else:
                changed.append(media)
        gone = [row for path, row in known.items() if path not in seen and _under(path, roots)]

        failed: list[FailedFile] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="mmsearch-decode") as pool:
            hashed = []
            for media, result in zip(changed, _ordered(pool, _hash_or_error, changed, self.workers * 4)):
                if isinstance(result, DecodeError):
                    failed.append(FailedFile(str(media.path), result.reason))
                else:
                    hashed.append((media, result))
            plan = self._plan(hashed, gone, known)
            unchanged += len(plan.touches)
            self._apply_moves_and_removals(plan)
            copied = self._apply_copies(plan)
            segments, embed_failed = self._embed(pool, plan.embed)
            failed.extend(embed_failed)
        self._record_failures(failed, {str(m.path): m for m in found})
        self.store.save_indexes()
        new_paths = {str(w.media.path) for w in plan.embed} | {str(m.path) for m, _, _ in plan.copies}
        failed_paths = {f.path for f in failed}
        added = len([p for p in new_paths if p not in plan.known_paths and p not in failed_paths])
        updated = len([p for p in new_paths if p in plan.known_paths and p not in failed_paths])
        return IndexReport(
            added=added, updated=updated, removed=len(plan.removals), unchanged=unchanged,
            failed=tuple(sorted(failed, key=lambda f: f.path)), seconds=round(time.perf_counter() - started, 3),
            renamed=len(plan.moves), segments_embedded=segments, segments_reused=copied)

    # -- deciding what to do ---------------------------------------------------------------------------
    def _plan(self, hashed: list[tuple[MediaFile, str]], gone: list[ItemRow], known: dict[str, ItemRow]) -> _Plan:
        plan = _Plan(known_paths=set(known))
        gone_by_hash: dict[tuple[str, Modality], deque[ItemRow]] = {}
        for row in gone:
            if row.content_hash and row.state == "indexed":
                gone_by_hash.setdefault((row.content_hash, row.modality), deque()).append(row)
        moved_rows: set[int] = set()
        need_source = []
        for media, digest in hashed:
            row = known.get(str(media.path))
            if row is not None and row.content_hash == digest and row.modality == media.modality:
                plan.touches.append((media, row))  # rewritten with the same bytes (or a failed file, unchanged)
                continue
            candidates = gone_by_hash.get((digest, media.modality))
            if candidates:
                source = candidates.popleft()
                moved_rows.add(source.id)
                if row is not None:
                    plan.removals.append(row)  # a file renamed over another one
                plan.moves.append((media, source))
                continue
            need_source.append((media, digest, row))
        sources = self.store.catalog.items_by_hash(d for _, d, _ in need_source)
        for media, digest, row in need_source:
            source = sources.get(digest)
            if source is not None and source.modality == media.modality and source.id not in moved_rows \
                    and source.path != str(media.path):
                plan.copies.append((media, digest, source))
            else:
                plan.embed.append(_FileWork(media, digest))
        plan.removals.extend(row for row in gone if row.id not in moved_rows)
        return plan

    # -- writing ---------------------------------------------------------------------------------------
    def _apply_moves_and_removals(self, plan: _Plan) -> None:
        catalog = self.store.catalog
        with catalog.transaction() as conn:
            removed = catalog.delete_items(conn, [row.id for row in plan.removals])
            for media, source in plan.moves:
                catalog.move_item(conn, source.id, str(media.path), media.size, media.mtime_ns)
            for media, row in plan.touches:
                catalog.touch_item(conn, row.id, media.size, media.mtime_ns)
        self._drop_from_indexes(removed)

    def _apply_copies(self, plan: _Plan) -> int:
        catalog = self.store.catalog
        reused = 0
        for start in range(0, len(plan.copies), 256):
            added: dict[Modality, list[tuple[list[int], np.ndarray]]] = {}
            dropped: dict[Modality, list[int]] = {}
            with catalog.transaction() as conn:
                for media, digest, source in plan.copies[start:start + 256]:
                    item_id = catalog.put_item(conn, path=str(media.path), modality=media.modality, size=media.size,
                                               mtime_ns=media.mtime_ns, content_hash=digest, state="indexed")
                    for modality, ids in catalog.drop_segments(conn, [item_id]).items():
                        dropped.setdefault(modality, []).extend(ids)
                    modality, ids, matrix = catalog.copy_segments(conn, source.id, item_id)
                    if modality is not None:
                        added.setdefault(modality, []).append((ids, matrix))
                        reused += len(ids)
            self._drop_from_indexes(dropped)
            for modality, chunks in added.items():
                index = self.store.loaded_index(modality, chunks[0][1].shape[1])
                for ids, matrix in chunks:
                    index.add(ids, matrix)
        return reused

    def _embed(self, pool: ThreadPoolExecutor, work: list[_FileWork]) -> tuple[int, list[FailedFile]]:
        failed: list[FailedFile] = []
        batches = {m: _Batch(p, self.batch_size) for m, p in self.pipelines.items()}
        segments = 0
        self.progress.start(len(work), "embedding", "file")
        try:
            decoded = _ordered(pool, lambda w: self._decode(w.media), work, self.workers * 2 + self.batch_size)
            for item, parts in zip(work, decoded):
                batch = batches[item.media.modality]
                try:
                    if isinstance(parts, DecodeError):
                        raise parts
                    batch.add(item, parts)
                except DecodeError as exc:
                    failed.append(FailedFile(str(item.media.path), exc.reason))
                self.progress.advance()
                if batch.ready() >= self.batch_size:
                    segments += self._commit(batch.take_complete())
            for batch in batches.values():
                batch.encode_pending()
                segments += self._commit(batch.take_complete())
        finally:
            self.progress.finish()
        return segments, failed

    def _decode(self, media: MediaFile) -> Iterable[tuple[Segment, Any]] | DecodeError:
        try:
            return self.pipelines[media.modality].decode(media.path)
        except DecodeError as exc:
            return exc
        except Exception as exc:  # a decoder bug must not abort the run: record it against the file
            log.exception("unexpected error decoding %s", media.path)
            return DecodeError(media.path, f"unexpected {type(exc).__name__}: {str(exc)[:200]}")

    def _commit(self, done: list[_FileWork]) -> int:
        if not done:
            return 0
        catalog = self.store.catalog
        added: list[tuple[Modality, list[int], np.ndarray]] = []
        with catalog.transaction() as conn:
            item_ids = []
            for work in done:
                media = work.media
                item_ids.append(catalog.put_item(conn, path=str(media.path), modality=media.modality, size=media.size,
                                                 mtime_ns=media.mtime_ns, content_hash=work.content_hash, state="indexed"))
            dropped = catalog.drop_segments(conn, item_ids)
            for work, item_id in zip(done, item_ids):
                matrix = np.vstack(work.vectors)
                ids = catalog.add_segments(conn, item_id, work.media.modality, work.segments, matrix)
                added.append((work.media.modality, ids, matrix))
        self._drop_from_indexes(dropped)
        for modality, ids, matrix in added:
            self.store.loaded_index(modality, matrix.shape[1]).add(ids, matrix)
        if time.monotonic() - self._last_save > SAVE_EVERY_SECONDS:
            self.store.save_indexes()
            self._last_save = time.monotonic()
        return sum(len(ids) for _, ids, _ in added)

    def _record_failures(self, failed: list[FailedFile], found: dict[str, MediaFile]) -> None:
        catalog = self.store.catalog
        with catalog.transaction() as conn:
            item_ids = []
            for failure in failed:
                media = found.get(failure.path)
                if media is None:
                    continue
                item_ids.append(catalog.put_item(conn, path=failure.path, modality=media.modality, size=media.size,
                                                 mtime_ns=media.mtime_ns, content_hash=None, state="failed",
                                                 error=failure.reason))
            dropped = catalog.drop_segments(conn, item_ids)
        self._drop_from_indexes(dropped)

    def _drop_from_indexes(self, removed: dict[Modality, list[int]]) -> None:
        for modality, ids in removed.items():
            if ids:
                index = self.store.index(modality)
                if index is not None:
                    index.remove(np.asarray(ids, dtype=np.int64))


def _hash_or_error(media: MediaFile) -> str | DecodeError:
    try:
        return content_hash(media.path)
    except OSError as exc:
        return DecodeError(media.path, f"cannot read file ({exc.strerror or exc})")


def _under(path: str, roots: Sequence[Path]) -> bool:
    return any(path == str(root) or path.startswith(str(root).rstrip(os.sep) + os.sep) for root in roots)


def _ordered(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Sequence[Any], ahead: int) -> Iterator[Any]:
    """``map`` over a thread pool that keeps at most ``ahead`` results in flight, yielding in order."""
    pending: deque = deque()
    position = 0
    while position < len(items) or pending:
        while position < len(items) and len(pending) < ahead:
            pending.append(pool.submit(fn, items[position]))
            position += 1
        yield pending.popleft().result()
