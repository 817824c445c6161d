"""One indexing run: find what changed under the given folders, embed only that, commit in batches.

Order of writes, per batch: one SQLite transaction holds the items, their segments and their vectors;
only after it commits are the vectors added to the in-memory FAISS indexes, which are saved atomically
at the end (and now and then during long runs). A crash therefore never leaves a row without its vector;
index files that lag behind the catalog are reconciled when the store is next opened.

Hostile files never abort a run: each file is hashed in a worker thread under a time limit
(``file_timeout``) and decoded in a worker process (``workers``: a decoder that crashes, hangs or runs out
of memory fails that file alone), re-checked after decoding (a file that changed or vanished meanwhile is
not indexed from a half-old read), and whatever fails is recorded with its reason. Failures of the file's bytes are
retried when the file changes; failures to read it at all (permission, changed/vanished mid-read) are
retried on every run.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator, Mapping, Protocol, Sequence

import numpy as np

from ..atomic import leftover_temp_files
from ..encoders.runtime import default_workers
from ..errors import DecodeError, ModelLoadError
from ..progress import NoProgress, Progress
from ..records import FailedFile, IndexReport, MediaFile, Modality
from ..store.folder import Store
from ..store.reselect import BackgroundReselect, maybe_reselect
from ..store.rows import FAILED, INDEXED, RETRY, ItemRow
from .batches import Batch, FileWork, Unreadable, decode_into, hash_or_error
from .discovery import discover, is_under, normalise_root
from .pipelines import Pipeline, VideoPipeline
from .plan import Plan, plan_run
from .timeouts import DEFAULT_FILE_TIMEOUT, DaemonPool, TimedOut, ordered
from .workers import DEFAULT_MEMORY, DecodeWorkers

log = logging.getLogger(__name__)

SAVE_EVERY_SECONDS = 120.0


class Embedder(Protocol):
    """Embeds a run's files somewhere else than this process (``ray_embed.RayEmbedder``: on a Ray cluster);
    the indexer still commits every result itself."""

    def embed(self, work: Sequence[FileWork],
              pipelines: Mapping[Modality, Pipeline]) -> Iterator[tuple[FileWork, DecodeError | None]]:
        """Each file of ``work`` once, in any order: its segments and vectors filled in, or why it failed."""


class Indexer:
    def __init__(self, store: Store, pipelines: Sequence[Pipeline], *, batch_size: int = 32,
                 workers: int | None = None, progress: Progress | None = None,
                 file_timeout: float | None = DEFAULT_FILE_TIMEOUT, optional: Sequence[Modality] = (),
                 decode_memory: int | None = DEFAULT_MEMORY, embedder: Embedder | None = None):
        """``file_timeout``: seconds one file may spend being hashed, or decoding without producing anything
        (None: no limit); ``decode_memory``: bytes of data each decoding process may hold (None: no limit);
        ``embedder``: where files are decoded and embedded (None: decoding processes here, models here)."""
        self.store = store
        self.embedder = embedder
        self.file_timeout = file_timeout
        self.decode_memory = decode_memory
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
        self.store.add_roots(roots)  # what a served file must still lie under
        self._reselect = BackgroundReselect(self.store)
        for leftover in leftover_temp_files(self.store.path):  # from a writer killed mid-save
            leftover.unlink(missing_ok=True)
        known = self.store.catalog.all_items()
        found = [m for m in discover(roots, exclude=[self.store.path]) if m.modality in self.pipelines]
        seen = {str(media.path) for media in found}  # skipped modalities below are kept, not removed
        notes: list[str] = []
        for modality in sorted({m.modality for m in found}, key=lambda m: m.value):
            usable, note = self._prepare_models(modality)  # loads the models (and refuses a mismatch) when needed
            if not usable:
                skipped = [m for m in found if m.modality == modality]
                found = [m for m in found if m.modality != modality]
                note = f"{len(skipped)} {modality.value} files skipped: {note}"
            if note:
                notes.append(note)

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
            results = ordered(pool, hash_or_error, changed, self.workers * 4, self.file_timeout)
            for media, result in zip(changed, results):
                if isinstance(result, TimedOut):
                    failed.append(FailedFile(str(media.path), self._timeout_reason(result, "reading")))
                elif isinstance(result, DecodeError):
                    failed.append(FailedFile(str(media.path), result.reason))
                    if isinstance(result, Unreadable):
                        unreadable.add(str(media.path))
                else:
                    hashed.append((media, result))
                    hashes[str(media.path)] = result
            plan = plan_run(hashed, gone, known, self.store.catalog.items_by_hash)
            unchanged += len(plan.touches)
            self._apply_moves_and_removals(plan)
            copied, orphans = self._apply_copies(plan)
            plan.embed.extend(orphans)
            segments, embed_failed, embed_unreadable = self._embed(plan.embed)
            failed.extend(embed_failed)
            unreadable |= embed_unreadable
        finally:
            pool.shutdown()
        self._reselect.finish()  # not on an error: a build still running is abandoned with its daemon thread
        notes.extend(self._reselect.notes)
        self._record_failures(failed, {str(m.path): m for m in found}, unreadable, hashes)
        self.store.save_indexes()
        indexes = {index for pipeline in self.pipelines.values() for index, _ in pipeline.spaces()}
        for modality in sorted(indexes, key=lambda m: m.value):  # grown several-fold since the last choice
            maybe_reselect(self.store, modality)
        new_paths = {str(w.media.path) for w in plan.embed} | {str(m.path) for m, _, _ in plan.copies}
        failed_paths = {f.path for f in failed}
        added = len([p for p in new_paths if p not in plan.known_paths and p not in failed_paths])
        updated = len([p for p in new_paths if p in plan.known_paths and p not in failed_paths])
        return IndexReport(
            added=added, updated=updated, removed=len(plan.removals), unchanged=unchanged,
            failed=tuple(sorted(failed, key=lambda f: f.path)), seconds=round(time.perf_counter() - started, 3),
            renamed=len(plan.moves), segments_embedded=segments, segments_reused=copied, notes=tuple(notes))

    def _prepare_models(self, modality: Modality) -> tuple[bool, str | None]:
        """Bind the models of ``modality``'s files to the store and load (and reconcile) their indexes, before
        this run writes to the catalog (so vectors added below are not also picked up by a reconcile after
        their commit). Returns (whether its files can be indexed, a note): an optional model that cannot be
        loaded skips its files, or, for videos, their soundtracks."""
        pipeline = self.pipelines[modality]
        for index_modality, part in pipeline.spaces():
            try:
                self.store.bind_model(part.role, part.encoder.identity)
            except ModelLoadError as exc:
                if index_modality not in self.optional:
                    raise
                if isinstance(pipeline, VideoPipeline):  # frames still; the soundtrack needs the audio model
                    pipeline.audio = None
                    return True, f"video soundtracks not indexed: {exc}"
                return False, str(exc)
            self.store.loaded_index(index_modality, part.dim)
        return True, None

    def _timeout_reason(self, timed_out: TimedOut, doing: str) -> str:
        return f"{timed_out.reason} {doing} the file (the per-file time limit, file_timeout)"

    # -- deciding what to do ---------------------------------------------------------------------------
    # -- writing ---------------------------------------------------------------------------------------
    def _apply_moves_and_removals(self, plan: Plan) -> None:
        with self.store.catalog.transaction() as write:
            removed = write.delete_items([row.id for row in plan.removals])
            for media, source in plan.moves:
                write.move_item(source.id, str(media.path), media.size, media.mtime_ns)
            for media, row in plan.touches:
                write.touch_item(row.id, media.size, media.mtime_ns)
        self._drop_from_indexes(removed)

    def _apply_copies(self, plan: Plan) -> tuple[int, list[FileWork]]:
        """Give new files with known content the stored vectors of that content; returns (segments reused,
        files to embed after all because their source had no vectors left)."""
        reused = 0
        orphans: list[FileWork] = []
        for start in range(0, len(plan.copies), 256):
            added: dict[Modality, list[tuple[list[int], np.ndarray]]] = {}
            dropped: dict[Modality, list[int]] = {}
            with self.store.catalog.transaction() as write:
                for media, digest, source in plan.copies[start:start + 256]:
                    if not write.item_segment_ids([source.id]):
                        orphans.append(FileWork(media, digest))
                        continue
                    item_id = write.put_item(path=str(media.path), modality=media.modality, size=media.size,
                                             mtime_ns=media.mtime_ns, content_hash=digest, state=INDEXED)
                    for modality, ids in write.drop_segments([item_id]).items():
                        dropped.setdefault(modality, []).extend(ids)
                    for modality, ids, matrix in write.copy_segments(source.id, item_id):
                        added.setdefault(modality, []).append((ids, matrix))
                        reused += len(ids)
            self._drop_from_indexes(dropped)
            for modality, chunks in added.items():
                index = self.store.loaded_index(modality, chunks[0][1].shape[1])
                for ids, matrix in chunks:
                    index.add(ids, matrix)
        return reused, orphans

    def _embed(self, work: list[FileWork]) -> tuple[int, list[FailedFile], set[str]]:
        """Decode (in worker processes), encode and commit ``work``; returns (segments embedded, failures,
        paths that were unreadable)."""
        failed: list[FailedFile] = []
        unreadable: set[str] = set()
        batches = {m: Batch(p, self.batch_size) for m, p in self.pipelines.items()}
        segments = 0
        if not work:
            return 0, failed, unreadable
        if self.embedder is not None:
            return self._embed_elsewhere(work)
        self.progress.start(len(work), "embedding", "file")
        try:
            with DecodeWorkers(min(self.workers, len(work)), limit=self.file_timeout, memory=self.decode_memory) as pool:
                for item, error in decode_into(batches, self.pipelines, pool, work):
                    if error is not None:
                        _record_failure(item, error, failed, unreadable)
                    self.progress.advance()
                    batch = batches[item.media.modality]
                    if batch.ready() >= self.batch_size:
                        segments += self._commit(batch.take_complete())
            for batch in batches.values():
                batch.encode_pending()
                segments += self._commit(batch.take_complete())
        finally:
            self.progress.finish()
        return segments, failed, unreadable

    def _embed_elsewhere(self, work: list[FileWork]) -> tuple[int, list[FailedFile], set[str]]:
        """``_embed`` through ``embedder``: its results committed here as they come, in batches."""
        failed: list[FailedFile] = []
        unreadable: set[str] = set()
        done: list[FileWork] = []
        segments = pending = 0
        self.progress.start(len(work), "embedding", "file")
        try:
            for item, error in self.embedder.embed(work, self.pipelines):
                if error is not None:
                    _record_failure(item, error, failed, unreadable)
                else:
                    done.append(item)
                    pending += len(item.segments)
                self.progress.advance()
                if pending >= self.batch_size:
                    segments += self._commit(done)
                    done, pending = [], 0
            segments += self._commit(done)
        finally:
            self.progress.finish()
        return segments, failed, unreadable

    def _commit(self, done: list[FileWork]) -> int:
        if not done:
            return 0
        with self.store.catalog.transaction() as write:
            item_ids = write.put_items([
                ItemRow(0, str(w.media.path), w.media.modality, w.media.size, w.media.mtime_ns, w.content_hash,
                        INDEXED, None)
                for w in done])
            dropped = write.drop_segments(item_ids)
            entries = [(item_id, modality, parts, matrix)
                       for work, item_id in zip(done, item_ids) for modality, parts, matrix in work.by_index()]
            new_ids = write.add_segments_many(entries)
        added = [(modality, ids, matrix) for (_, modality, _, matrix), ids in zip(entries, new_ids)]
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
        with self.store.catalog.transaction() as write:
            item_ids = []
            for failure in failed:
                media = found.get(failure.path)
                if media is None:
                    continue
                transient = failure.path in unreadable
                item_ids.append(write.put_item(path=failure.path, modality=media.modality, size=media.size,
                                               mtime_ns=media.mtime_ns,
                                               content_hash=None if transient else hashes.get(failure.path),
                                               state=RETRY if transient else FAILED, error=failure.reason))
            dropped = write.drop_segments(item_ids)
        self._drop_from_indexes(dropped)

    def _drop_from_indexes(self, removed: dict[Modality, list[int]]) -> None:
        for modality, ids in removed.items():
            if ids:
                index = self.store.index(modality)
                if index is not None:
                    index.remove(np.asarray(ids, dtype=np.int64))


def _record_failure(item: FileWork, error: DecodeError, failed: list[FailedFile], unreadable: set[str]) -> None:
    """Note why ``item`` was not embedded (and whether it is retried on every run: ``Unreadable``)."""
    failed.append(FailedFile(str(item.media.path), error.reason))
    if isinstance(error, Unreadable):
        unreadable.add(str(item.media.path))
