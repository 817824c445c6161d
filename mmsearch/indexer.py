"""One indexing run: find what changed under the given folders, embed only that, commit in batches.

Order of writes, per batch: one SQLite transaction holds the items, their segments and their vectors;
only after it commits are the vectors added to the in-memory FAISS indexes, which are saved atomically
at the end (and now and then during long runs). A crash therefore never leaves a row without its vector;
index files that lag behind the catalog are reconciled when the store is next opened.

Hostile files never abort a run: each file is hashed and decoded in a worker thread under a time limit
(``file_timeout``), re-checked after decoding (a file that changed or vanished meanwhile is not indexed
from a half-old read), and whatever fails is recorded with its reason. Failures of the file's bytes are
retried when the file changes; failures to read it at all (permission, changed/vanished mid-read) are
retried on every run.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .atomic import leftover_temp_files
from .catalog import FAILED, INDEXED, RETRY, ItemRow
from .discovery import discover, is_under, normalise_root
from .encoders.runtime import default_workers
from .errors import DecodeError, ModelLoadError
from .hashing import content_hash
from .index_builder import BackgroundReselect, maybe_reselect
from .pipelines import Pipeline
from .progress import NoProgress, Progress
from .records import FailedFile, IndexReport, MediaFile, Modality, Segment
from .store import Store
from .timeouts import DEFAULT_FILE_TIMEOUT, DaemonPool, TimedOut, ordered

log = logging.getLogger(__name__)

SAVE_EVERY_SECONDS = 120.0


class _Unreadable(DecodeError):
    """The file could not be read as it was this time (not a fault of its bytes): retried on every run."""


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
        self._ready = 0
        """Segments of the complete files in ``files``."""

    def add(self, work: _FileWork, parts: Iterable[tuple[Segment, Any]],
            check: Callable[[MediaFile], None] | None = None) -> None:
        """Queue a file's inputs, running the model whenever a batch is full; ``check`` runs once they are
        all read. On a DecodeError midway (or from ``check``) the file is taken out again and the error
        propagates."""
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
            if check is not None:
                check(work.media)
            work.decoded = True
            if work.complete:
                self._ready += len(work.segments)
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
            if owner.complete:  # its last vector (a file still being read is not decoded yet)
                self._ready += len(owner.segments)
        self.inputs, self.owners = [], []

    def ready(self) -> int:
        return self._ready

    def take_complete(self) -> list[_FileWork]:
        done = [w for w in self.files if w.complete]
        self.files = [w for w in self.files if not w.complete]
        self._ready = 0
        return done


class Indexer:
    def __init__(self, store: Store, pipelines: Sequence[Pipeline], *, batch_size: int = 32,
                 workers: int | None = None, progress: Progress | None = None,
                 file_timeout: float | None = DEFAULT_FILE_TIMEOUT, optional: Sequence[Modality] = ()):
        """``file_timeout``: seconds one file may spend being hashed or decoded (None: no limit)."""
        self.store = store
        self.file_timeout = file_timeout
        self.pipelines = {p.modality: p for p in pipelines}
        self.optional = frozenset(optional)
        """Modalities whose files are skipped, with a note, when their model cannot be loaded."""
        self.batch_size = batch_size
        self.workers = workers or default_workers("cpu")
        self.progress = progress or NoProgress()
        self._last_save = time.monotonic()
        self._reselect = BackgroundReselect(store)

    # -- the run ---------------------------------------------------------------------------------------
    def run(self, roots: Sequence[Path | str]) -> IndexReport:
        started = time.perf_counter()
        roots = [normalise_root(r) for r in roots]
        self.store.acquire_writer()
        self._reselect = BackgroundReselect(self.store)
        for leftover in leftover_temp_files(self.store.path):  # from a writer killed mid-save
            leftover.unlink(missing_ok=True)
        known = self.store.catalog.all_items()
        found = [m for m in discover(roots, exclude=[self.store.path]) if m.modality in self.pipelines]
        seen = {str(media.path) for media in found}  # skipped modalities below are kept, not removed
        notes: list[str] = []
        for modality in sorted({m.modality for m in found}, key=lambda m: m.value):
            pipeline = self.pipelines[modality]  # loads that modality's model (and refuses a mismatch) only when needed
            try:
                self.store.bind_model(pipeline.role, pipeline.encoder.identity)
            except ModelLoadError as exc:
                if modality not in self.optional:
                    raise
                skipped = [m for m in found if m.modality == modality]
                found = [m for m in found if m.modality != modality]
                notes.append(f"{len(skipped)} {modality.value} files skipped: {exc}")
                continue
            # Load (and reconcile) the index before this run writes to the catalog, so that vectors added
            # below are not also picked up by a reconcile after their commit.
            self.store.loaded_index(modality, pipeline.dim)

        unchanged, changed = 0, []
        for media in found:
            row = known.get(str(media.path))
            if row is not None and row.state != RETRY and \
                    (row.size, row.mtime_ns, row.modality) == (media.size, media.mtime_ns, media.modality):
                unchanged += 1
            else:
                changed.append(media)
        root_names = {str(root) for root in roots}
        gone = [row for path, row in known.items() if path not in seen and is_under(path, root_names)]

        failed: list[FailedFile] = []
        unreadable: set[str] = set()
        hashes: dict[str, str] = {}
        pool = DaemonPool(self.workers, name="mmsearch-decode")
        try:
            hashed = []
            results = ordered(pool, _hash_or_error, changed, self.workers * 4, self.file_timeout)
            for media, result in zip(changed, results):
                if isinstance(result, TimedOut):
                    failed.append(FailedFile(str(media.path), self._timeout_reason(result, "reading")))
                elif isinstance(result, DecodeError):
                    failed.append(FailedFile(str(media.path), result.reason))
                    if isinstance(result, _Unreadable):
                        unreadable.add(str(media.path))
                else:
                    hashed.append((media, result))
                    hashes[str(media.path)] = result
            plan = self._plan(hashed, gone, known)
            unchanged += len(plan.touches)
            self._apply_moves_and_removals(plan)
            copied, orphans = self._apply_copies(plan)
            plan.embed.extend(orphans)
            segments, embed_failed, embed_unreadable = self._embed(pool, plan.embed)
            failed.extend(embed_failed)
            unreadable |= embed_unreadable
        finally:
            pool.shutdown()
        self._reselect.finish()  # not on an error: a build still running is abandoned with its daemon thread
        notes.extend(self._reselect.notes)
        self._record_failures(failed, {str(m.path): m for m in found}, unreadable, hashes)
        self.store.save_indexes()
        for modality in self.pipelines:  # grown several-fold since the last choice (made in the background or not)
            maybe_reselect(self.store, modality)
        new_paths = {str(w.media.path) for w in plan.embed} | {str(m.path) for m, _, _ in plan.copies}
        failed_paths = {f.path for f in failed}
        added = len([p for p in new_paths if p not in plan.known_paths and p not in failed_paths])
        updated = len([p for p in new_paths if p in plan.known_paths and p not in failed_paths])
        return IndexReport(
            added=added, updated=updated, removed=len(plan.removals), unchanged=unchanged,
            failed=tuple(sorted(failed, key=lambda f: f.path)), seconds=round(time.perf_counter() - started, 3),
            renamed=len(plan.moves), segments_embedded=segments, segments_reused=copied, notes=tuple(notes))

    def _timeout_reason(self, timed_out: TimedOut, doing: str) -> str:
        return f"{timed_out.reason} {doing} the file (limit set by --file-timeout)"

    # -- deciding what to do ---------------------------------------------------------------------------
    def _plan(self, hashed: list[tuple[MediaFile, str]], gone: list[ItemRow], known: dict[str, ItemRow]) -> _Plan:
        plan = _Plan(known_paths=set(known))
        gone_by_hash: dict[tuple[str, Modality], deque[ItemRow]] = {}
        for row in gone:
            if row.content_hash and row.state == INDEXED:
                gone_by_hash.setdefault((row.content_hash, row.modality), deque()).append(row)
        moved_rows: set[int] = set()
        need_source = []
        for media, digest in hashed:
            row = known.get(str(media.path))
            if row is not None and row.content_hash == digest and row.modality == media.modality \
                    and row.state != RETRY:
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
        plan.removals.extend(row for row in gone if row.id not in moved_rows)
        removed_rows = {row.id for row in plan.removals}
        sources = self.store.catalog.items_by_hash(d for _, d, _ in need_source)
        for media, digest, row in need_source:
            source = sources.get(digest)
            # a moved row still holds its vectors (moves commit first); a removed one will not
            if source is not None and source.modality == media.modality and source.id not in removed_rows \
                    and source.path != str(media.path):
                plan.copies.append((media, digest, source))
            else:
                plan.embed.append(_FileWork(media, digest))
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

    def _apply_copies(self, plan: _Plan) -> tuple[int, list[_FileWork]]:
        """Give new files with known content the stored vectors of that content; returns (segments reused,
        files to embed after all because their source had no vectors left)."""
        catalog = self.store.catalog
        reused = 0
        orphans: list[_FileWork] = []
        for start in range(0, len(plan.copies), 256):
            added: dict[Modality, list[tuple[list[int], np.ndarray]]] = {}
            dropped: dict[Modality, list[int]] = {}
            with catalog.transaction() as conn:
                for media, digest, source in plan.copies[start:start + 256]:
                    if not catalog.item_segment_ids(conn, [source.id]):
                        orphans.append(_FileWork(media, digest))
                        continue
                    item_id = catalog.put_item(conn, path=str(media.path), modality=media.modality, size=media.size,
                                               mtime_ns=media.mtime_ns, content_hash=digest, state=INDEXED)
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
        return reused, orphans

    def _embed(self, pool: DaemonPool, work: list[_FileWork]) -> tuple[int, list[FailedFile], set[str]]:
        """Decode, encode and commit ``work``; returns (segments embedded, failures, paths that were unreadable)."""
        failed: list[FailedFile] = []
        unreadable: set[str] = set()
        batches = {m: _Batch(p, self.batch_size) for m, p in self.pipelines.items()}
        segments = 0
        self.progress.start(len(work), "embedding", "file")
        try:
            decoded = ordered(pool, lambda w: self._decode(w.media), work, self.workers * 2 + self.batch_size,
                              self.file_timeout)
            for item, parts in zip(work, decoded):
                batch = batches[item.media.modality]
                try:
                    if isinstance(parts, TimedOut):
                        raise DecodeError(item.media.path, self._timeout_reason(parts, "decoding"))
                    if isinstance(parts, DecodeError):
                        raise parts
                    # eagerly decoded files were re-checked in the worker; lazy ones once read to the end
                    batch.add(item, parts, check=None if isinstance(parts, list) else _unchanged_since_found)
                except DecodeError as exc:
                    failed.append(FailedFile(str(item.media.path), exc.reason))
                    if isinstance(exc, _Unreadable):
                        unreadable.add(str(item.media.path))
                self.progress.advance()
                if batch.ready() >= self.batch_size:
                    segments += self._commit(batch.take_complete())
            for batch in batches.values():
                batch.encode_pending()
                segments += self._commit(batch.take_complete())
        finally:
            self.progress.finish()
        return segments, failed, unreadable

    def _decode(self, media: MediaFile) -> Iterable[tuple[Segment, Any]] | DecodeError:
        try:
            parts = self.pipelines[media.modality].decode(media.path)
            if isinstance(parts, list):  # read to the end already: re-check the file here, off the main thread
                _unchanged_since_found(media)
            return parts
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
            item_ids = catalog.put_items(conn, [
                ItemRow(0, str(w.media.path), w.media.modality, w.media.size, w.media.mtime_ns, w.content_hash,
                        INDEXED, None)
                for w in done])
            dropped = catalog.drop_segments(conn, item_ids)
            matrices = [np.vstack(work.vectors) for work in done]
            new_ids = catalog.add_segments_many(conn, [(item_id, work.media.modality, work.segments, matrix)
                                                       for work, item_id, matrix in zip(done, item_ids, matrices)])
        added = [(work.media.modality, ids, matrix) for work, ids, matrix in zip(done, new_ids, matrices)]
        self._drop_from_indexes(dropped)
        for modality, ids, matrix in added:
            self.store.loaded_index(modality, matrix.shape[1]).add(ids, matrix)
        for modality in {modality for modality, _, _ in added}:  # grown several-fold: re-chosen in the background
            self._reselect.check(modality, len(self.store.index(modality)))
        if time.monotonic() - self._last_save > SAVE_EVERY_SECONDS:
            self.store.save_indexes()
            self._last_save = time.monotonic()
        return sum(len(ids) for _, ids, _ in added)

    def _record_failures(self, failed: list[FailedFile], found: dict[str, MediaFile], unreadable: set[str],
                         hashes: dict[str, str]) -> None:
        """One transaction: each failed file's row says why (its old segments go: they no longer describe it).
        The stat recorded is the one found at the start, so a file that changed since is retried."""
        if not failed:
            return
        catalog = self.store.catalog
        with catalog.transaction() as conn:
            item_ids = []
            for failure in failed:
                media = found.get(failure.path)
                if media is None:
                    continue
                transient = failure.path in unreadable
                item_ids.append(catalog.put_item(conn, path=failure.path, modality=media.modality, size=media.size,
                                                 mtime_ns=media.mtime_ns,
                                                 content_hash=None if transient else hashes.get(failure.path),
                                                 state=RETRY if transient else FAILED, error=failure.reason))
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
        if media.path.is_symlink() and not media.path.exists():
            # A broken or looping link is a failure (retried once the link changes), not a passing read error.
            return DecodeError(media.path, f"broken symbolic link to {os.readlink(media.path)} "
                                           f"({exc.strerror or exc})")
        if isinstance(exc, FileNotFoundError):
            return _Unreadable(media.path, "file vanished while being indexed")
        return _Unreadable(media.path, f"cannot read file ({exc.strerror or exc})")


def _unchanged_since_found(media: MediaFile) -> None:
    """Refuse a file whose bytes may have changed between discovery, hashing and decoding."""
    try:
        info = os.stat(media.path)
    except FileNotFoundError:
        raise _Unreadable(media.path, "file vanished while being indexed") from None
    except OSError as exc:
        raise _Unreadable(media.path, f"cannot stat file ({exc.strerror or exc})") from None
    if (info.st_size, info.st_mtime_ns) != (media.size, media.mtime_ns):
        raise _Unreadable(media.path, "file changed while being indexed (it is tried again on the next run)")


