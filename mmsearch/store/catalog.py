"""The SQLite catalog: items, their segments, the segments' vectors, store info.

Segment ids are the ids in the vector indexes. Vectors are kept here too (float32 blobs), in the same
transaction as their rows, so an index can always be rebuilt without re-embedding and no commit can
leave a row without its vector or a vector without its row.

The catalog owns every SQL statement mmsearch runs (here, in ``reads``, ``writes`` and ``schema``):
callers read through ``snapshot()`` (one consistent view) or the one-shot methods below, and write
through ``transaction()``, and only ever see numpy arrays and frozen rows (``rows``).
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..records import FailedFile, Modality
from . import schema
from .reads import CatalogReader, chunked, marks
from .rows import FAILED_STATES, INDEXED, ItemRow, SegmentRow
from .writes import CatalogWriter

SEGMENT_CACHE_ROWS = 200_000
"""Segment rows kept in memory for search results (about 60 MB at most)."""
_SEGMENT_ROWS = ('SELECT segments.id, segments.item_id, items.path, segments.modality, segments.text, segments.start, '
                 'segments."end", segments.page, items.modality FROM segments JOIN items ON items.id = segments.item_id '
                 'WHERE segments.id IN ({})')
_ITEMS = "SELECT id, path, modality, size, mtime_ns, content_hash, state, error FROM items"
_ATTRIBUTES = ('SELECT segments.id, items.id, items.path, items.mtime_ns, items.modality, (SELECT MAX(a."end") FROM '
               "segments AS a WHERE a.item_id = items.id AND a.modality = 'audio') FROM segments JOIN items ON items.id "
               "= segments.item_id WHERE segments.id IN ({})")
"""Each segment's file: its id, path, modification time, modality and duration (its last audio window's end)."""
_ITEM_STATES = ("SELECT DISTINCT items.id, items.path, items.mtime_ns, items.modality FROM segments JOIN items ON "
                "items.id = segments.item_id WHERE segments.modality = ?")


def _item(row: tuple) -> ItemRow:
    return ItemRow(row[0], row[1], Modality(row[2]), *row[3:])


class Catalog:
    def __init__(self, path: Path, *, create: bool = False):
        self.path = Path(path)
        self._database = schema.Database(self.path)
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()
        self._segment_cache: dict[int, SegmentRow] = {}
        self._segment_marker: int | None = None
        if create and not self._initialised():
            with self._database.write() as conn:  # tables and schema version in one transaction
                schema.create(conn)
        self.schema_version_found = schema.migrate(self._database, self.path.parent)
        """The schema version the catalog had when opened (before any migration)."""

    def _initialised(self) -> bool:
        try:
            return "schema_version" in self.info()
        except Exception:
            return False

    def add_speedups(self) -> None:
        """Give an older catalog the read-only indexes this version makes with new ones (``schema.SPEEDUPS``);
        the store's writer calls it. A no-op when they are there."""
        with self._database.connection() as conn:
            have = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        missing = [ddl for ddl in schema.SPEEDUPS if ddl.split(" IF NOT EXISTS ")[1].split()[0] not in have]
        if missing:
            with self._database.write() as conn:
                for ddl in missing:
                    conn.execute(ddl)

    def close(self) -> None:
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        self._database.close()

    # -- transactions ----------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[CatalogWriter]:
        """One write transaction (BEGIN IMMEDIATE), committed when the block ends, rolled back on error."""
        with self._database.write() as conn:
            yield CatalogWriter(conn)

    @contextmanager
    def snapshot(self) -> Iterator[CatalogReader]:
        """One read transaction: every read made through it sees the same committed state."""
        with self._database.read() as conn:
            yield CatalogReader(conn)

    # -- store info ------------------------------------------------------------------------------------
    def info(self) -> dict[str, str]:
        with self._database.connection() as conn:
            return dict(conn.execute('SELECT "key", value FROM store_info').fetchall())

    def set_info(self, **values: str) -> None:
        with self._database.write() as conn:
            for key, value in values.items():
                schema.put_info(conn, key, str(value))

    # -- files -----------------------------------------------------------------------------------------
    def all_items(self) -> dict[str, ItemRow]:
        with self._database.read() as conn:
            rows = conn.execute(_ITEMS).fetchall()
        return {row[1]: _item(row) for row in rows}

    def item(self, item_id: int) -> ItemRow | None:
        """The file with catalog id ``item_id``, or None."""
        with self._database.connection() as conn:
            row = conn.execute(f"{_ITEMS} WHERE id = ?", (int(item_id),)).fetchone()
        return _item(row) if row is not None else None

    def item_vectors(self, item_id: int) -> tuple[Modality | None, np.ndarray]:
        """(the index its vectors are in, its segments' stored vectors in order), all from one snapshot;
        (None, empty) for an id the catalog does not hold as indexed. A video's are its frames' (its
        soundtrack's when it has no frames)."""
        with self._database.read() as conn:
            row = conn.execute("SELECT modality FROM items WHERE id = ? AND state = ?", (int(item_id), INDEXED)).fetchone()
            if row is None:
                return None, np.empty((0, 0), np.float32)
            kind = Modality(row[0])
            for track in (Modality.IMAGE, Modality.AUDIO) if kind == Modality.VIDEO else (kind,):
                blobs = conn.execute("SELECT vectors.vector FROM segments JOIN vectors ON vectors.segment_id = "
                                     "segments.id WHERE segments.item_id = ? AND segments.modality = ? "
                                     "ORDER BY segments.ordinal", (int(item_id), track.value)).fetchall()
                if blobs:
                    break
        return track, np.frombuffer(b"".join(b[0] for b in blobs), dtype=np.float32).reshape(len(blobs), -1)

    def items_by_hash(self, hashes: Iterable[str]) -> dict[str, ItemRow]:
        """Indexed items with these content hashes (one per hash), to reuse their vectors."""
        found: dict[str, ItemRow] = {}
        with self._database.read() as conn:
            for chunk in chunked(list(set(hashes))):
                rows = conn.execute(f"{_ITEMS} WHERE content_hash IN ({marks(chunk)}) AND state = ?",
                                    (*chunk, INDEXED)).fetchall()
                for row in rows:
                    found.setdefault(row[5], _item(row))
        return found

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(indexed files per modality, segments per modality)."""
        with self.snapshot() as read:
            return read.counts()

    def failures(self) -> tuple[FailedFile, ...]:
        with self._database.connection() as conn:
            rows = conn.execute(f"SELECT path, error FROM items WHERE state IN ({marks(FAILED_STATES)}) ORDER BY path",
                                FAILED_STATES).fetchall()
        return tuple(FailedFile(path, error or "unknown error") for path, error in rows)

    # -- segments and vectors --------------------------------------------------------------------------
    def change_marker(self) -> int:
        """A number that changes whenever any connection, in this process or another, commits to the
        catalog (SQLite's ``data_version``, read on a connection kept for it and never used to write)."""
        with self._watch_lock:
            if self._watch is None:
                self._watch = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def segment_rows(self, ids: Sequence[int]) -> dict[int, SegmentRow]:
        """Segments with their file paths, by id (``segment_lookup``, narrowed to ``ids``)."""
        ids = [int(i) for i in ids]
        rows = self.segment_lookup(ids)
        return {i: rows[i] for i in ids if i in rows}

    def segment_lookup(self, ids: Sequence[int]) -> Mapping[int, SegmentRow]:
        """Rows by id holding at least those of ``ids`` the catalog has: the search path's cache itself
        (read it, never change it). Rows already read are kept until anything commits to the catalog
        (``change_marker``, the one statement a query whose rows are all cached runs), the rest read on a
        pooled connection (each statement its own consistent read). A small cache of the rows hits came
        from, not arrays over every segment: those would cost the first query of a process a scan of the
        catalog (half a second at 1M segments)."""
        marker = self.change_marker()
        cache = self._segment_cache
        if marker != self._segment_marker or len(cache) > SEGMENT_CACHE_ROWS:
            cache = self._segment_cache = {}  # a new mapping: one another thread holds stays whole
            self._segment_marker = marker
        missing = [int(i) for i in ids if i not in cache and i >= 0]
        if missing:
            for row in self._raw_rows(_SEGMENT_ROWS, missing):
                cache[row[0]] = SegmentRow(row[0], row[1], row[2], Modality(row[3]), row[4], row[5], row[6], row[7],
                                            Modality(row[8]))
        return cache

    def _raw_rows(self, query: str, ids: list[int]) -> list[tuple]:
        """``query`` (with one ``IN ({})`` list) for every id, on a pooled connection."""
        rows: list[tuple] = []
        with self._database.connection() as conn:
            for chunk in chunked(ids):
                rows.extend(conn.execute(query.format(marks(chunk)), chunk).fetchall())
        return rows

    def fetch_vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their stored vectors): what approximate indexes re-rank and filter with. On the
        search path (ivf-pq re-ranking)."""
        rows = self._raw_rows("SELECT segment_id, vector FROM vectors WHERE segment_id IN ({})",
                              np.asarray(ids, dtype=np.int64).reshape(-1).tolist())
        found = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
        return found, matrix

    def segment_files(self, ids: Sequence[int]) -> list[tuple]:
        """(segment id, item id, path, mtime_ns, file modality, duration or None) of each of ``ids`` held, for
        backends that keep a file's attributes beside its vectors (``store.backends``)."""
        return self._raw_rows(_ATTRIBUTES, np.asarray(ids, dtype=np.int64).reshape(-1).tolist())

    def file_states(self, modality: Modality) -> list[tuple[int, str, int, str]]:
        """(item id, path, mtime_ns, file modality) of every file with segments of ``modality``."""
        with self.snapshot() as read:
            return read._conn.execute(_ITEM_STATES, (modality.value,)).fetchall()

    def segment_ids(self, modality: Modality, path_glob: str | None = None, **filters) -> np.ndarray:
        """``CatalogReader.segment_ids`` in a snapshot of its own."""
        with self.snapshot() as read:
            return read.segment_ids(modality, path_glob, **filters)

    def segment_count(self, modality: Modality) -> tuple[int, int]:
        """(segments of ``modality``, the newest one's id or 0)."""
        with self.snapshot() as read:
            return read.segment_count(modality)

    def vectors_for(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        """``CatalogReader.vectors_for`` in a snapshot of its own."""
        with self.snapshot() as read:
            return read.vectors_for(ids, dim)

    def iter_vectors(self, modality: Modality, dim: int, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stored vectors of a modality as (ids, vectors) chunks, in id order, all from one snapshot."""
        last = -1
        with self.snapshot() as read:
            while True:
                ids, matrix = read.vector_chunk(modality, last, chunk, dim)
                if not len(ids):
                    return
                last = int(ids[-1])
                yield ids, matrix

