"""Reading the catalog within one transaction: ``CatalogReader`` is what ``Catalog.snapshot()`` yields,
and the base of the writer ``Catalog.transaction()`` yields. Every read made through one reader sees the
same committed state.

Besides what indexing and search read, it holds the consistency checks ``verify`` runs (each returns
the ids at fault), so that no SQL lives outside this package.
"""
from __future__ import annotations

import sqlite3
from typing import Iterable, Sequence

import numpy as np

from ..records import Modality
from .rows import FAILED_STATES, INDEXED

BATCH = 500
"""Ids per ``IN (...)`` list (SQLite allows 999 parameters by default in older builds)."""

VECTOR_CHUNK_SQL = ("SELECT vectors.segment_id, vectors.vector FROM vectors JOIN segments ON segments.id = "
                    "vectors.segment_id WHERE segments.modality = ? AND segments.id > ? ORDER BY segments.id LIMIT ?")
"""The next chunk of a modality's stored vectors with ids above a bound, in id order. Keyed and ordered on
segments.id (equal to vectors.segment_id), so SQLite walks the (modality, id) index and stops after the
chunk; ordered on vectors.segment_id it sorted every remaining row, vectors included, for each chunk:
quadratic, hours at 10M vectors."""
SEGMENTS_SQL = "SELECT id FROM segments WHERE modality = ?"
FILTERED_SEGMENTS_SQL = ("SELECT segments.id FROM items CROSS JOIN segments ON segments.item_id = items.id "
                         "WHERE segments.modality = ?")
"""With filters, items are read first (CROSS JOIN fixes the order): a glob with a literal prefix
(``/photos/2021/*``) reads only that range of the path index (``PREFIX_RANGE`` is added), not every
segment of the modality; one that starts with a wildcard reads the path index once."""
DURATION_SQL = (' AND items.id IN (SELECT item_id FROM segments WHERE modality = \'audio\' GROUP BY item_id '
                'HAVING {})')
"""An audio file's duration: the end of its last window."""
PREFIX_RANGE = " AND items.path >= ? AND items.path < ?"


def glob_prefix_range(pattern: str) -> tuple[str, str] | None:
    """[low, high) bounds on paths matching a GLOB, from its literal prefix; None when it has none."""
    cut = min([at for at in (pattern.find(ch) for ch in "*?[") if at >= 0], default=len(pattern))
    prefix = pattern[:cut]
    if not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return None
    following = ord(prefix[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates cannot be stored as UTF-8; no path holds one
        following = 0xE000
    return prefix, prefix[:-1] + chr(following)


def chunked(values: Sequence, size: int = BATCH) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def marks(values: Sequence) -> str:
    return ",".join("?" * len(values))


class CatalogReader:
    """Reads on one connection, inside one transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def _ids(self, query: str, params: Sequence = ()) -> list[int]:
        return [int(row[0]) for row in self._conn.execute(query, tuple(params))]

    # -- what indexing and search read -----------------------------------------------------------------
    def segment_ids(self, modality: Modality, path_glob: str | None = None, *,
                    modified: tuple[int | None, int | None] | None = None,
                    duration: tuple[float | None, float | None] | None = None,
                    file_kind: str | None = None) -> np.ndarray:
        """Ids of the segments of a modality, optionally only those whose file path matches a glob
        (SQLite GLOB: ``*``, ``?``, ``[...]``, case-sensitive), answered from the catalog's indexes;
        ``modified``: (from, before) modification times in ns, either None for open; ``duration``: (at
        least, at most) seconds, an audio file's length being its last window's end; ``file_kind``: only the
        segments of files of that modality (a video's frames share the image index with photos)."""
        if path_glob is None and modified is None and duration is None and file_kind is None:
            query, params = SEGMENTS_SQL, (modality.value,)
        else:
            query, params = FILTERED_SEGMENTS_SQL, (modality.value,)
            if path_glob is not None:
                query += " AND items.path GLOB ?"
                params += (path_glob,)
                bounds = glob_prefix_range(path_glob)
                if bounds is not None:
                    query += PREFIX_RANGE
                    params += bounds
            if file_kind is not None:
                query, params = query + " AND items.modality = ?", params + (file_kind,)
            low, high = modified or (None, None)
            if low is not None:
                query, params = query + " AND items.mtime_ns >= ?", params + (int(low),)
            if high is not None:
                query, params = query + " AND items.mtime_ns < ?", params + (int(high),)
            if duration is not None:
                having = " AND ".join(clause for clause, bound in (('MAX("end") >= ?', duration[0]),
                                                                   ('MAX("end") <= ?', duration[1])) if bound is not None)
                query += DURATION_SQL.format(having or "1")
                params += tuple(float(b) for b in duration if b is not None)
        return np.fromiter((row[0] for row in self._conn.execute(query, params)), dtype=np.int64)

    def segment_count(self, modality: Modality) -> tuple[int, int]:
        """(how many segments ``modality`` has, the newest one's id or 0)."""
        count, newest = self._conn.execute("SELECT count(*), max(id) FROM segments WHERE modality = ?",
                                           (modality.value,)).fetchone()
        return int(count), int(newest or 0)

    def vectors_for(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        found: dict[int, np.ndarray] = {}
        for chunk in chunked([int(i) for i in ids]):
            for seg_id, blob in self._conn.execute(
                    f"SELECT segment_id, vector FROM vectors WHERE segment_id IN ({marks(chunk)})", chunk):
                found[seg_id] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return found

    def vector_chunk(self, modality: Modality, after: int, size: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``size`` stored (ids, vectors) of ``modality`` with ids above ``after`` (see
        ``VECTOR_CHUNK_SQL``); empty arrays past the last."""
        rows = self._conn.execute(VECTOR_CHUNK_SQL, (modality.value, int(after), int(size))).fetchall()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, matrix

    def item_segment_ids(self, item_ids: Sequence[int]) -> dict[Modality, list[int]]:
        """The segments of these items, per modality."""
        by_modality: dict[Modality, list[int]] = {}
        for chunk in chunked([int(i) for i in item_ids]):
            for seg_id, modality in self._conn.execute(
                    f"SELECT id, modality FROM segments WHERE item_id IN ({marks(chunk)})", chunk):
                by_modality.setdefault(Modality(modality), []).append(seg_id)
        return by_modality

    def item_ids_by_path(self, paths: Sequence[str]) -> dict[str, int]:
        """The ids of those of ``paths`` the catalog holds."""
        found: dict[str, int] = {}
        for chunk in chunked(paths):
            found.update({path: int(item_id) for item_id, path in self._conn.execute(
                f"SELECT id, path FROM items WHERE path IN ({marks(chunk)})", chunk)})
        return found

    def segment_ids_by_path(self, paths: Sequence[str]) -> dict[str, list[int]]:
        """The segment ids of the files at ``paths`` (those the catalog holds), in segment order."""
        found: dict[str, list[int]] = {}
        for chunk in chunked(paths):
            for seg_id, path in self._conn.execute(
                    f"SELECT segments.id, items.path FROM segments JOIN items ON items.id = segments.item_id "
                    f"WHERE items.path IN ({marks(chunk)}) ORDER BY segments.id", chunk):
                found.setdefault(path, []).append(int(seg_id))
        return found

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(indexed files per modality, segments per modality)."""
        files = dict(self._conn.execute("SELECT modality, count(*) FROM items WHERE state = ? GROUP BY modality",
                                        (INDEXED,)).fetchall())
        segs = dict(self._conn.execute("SELECT modality, count(*) FROM segments GROUP BY modality").fetchall())
        return files, segs

    def vector_counts(self) -> dict[str, int]:
        """Stored vectors per modality."""
        return dict(self._conn.execute("SELECT segments.modality, count(*) FROM vectors JOIN segments ON "
                                       "segments.id = vectors.segment_id GROUP BY segments.modality").fetchall())

    # -- consistency checks (``verify``): each returns the ids at fault ---------------------------------
    def integrity_problems(self) -> list[str]:
        """SQLite's own check of the file; empty when it is sound."""
        found = [row[0] for row in self._conn.execute("PRAGMA quick_check").fetchall()]
        return [] if found == ["ok"] else found

    def vectors_of_wrong_size(self, modality: Modality, dim: int) -> list[int]:
        return self._ids("SELECT vectors.segment_id FROM vectors JOIN segments ON segments.id = vectors.segment_id "
                         "WHERE segments.modality = ? AND length(vectors.vector) != ?", (modality.value, dim * 4))

    def segments_without_item(self) -> list[int]:
        return self._ids("SELECT segments.id FROM segments LEFT OUTER JOIN items ON items.id = segments.item_id "
                         "WHERE items.id IS NULL")

    def segments_of_failed_items(self) -> list[int]:
        return self._ids("SELECT segments.id FROM segments JOIN items ON items.id = segments.item_id "
                         "WHERE items.state != ?", (INDEXED,))

    def segments_without_vectors(self) -> list[int]:
        return self._ids("SELECT segments.id FROM segments LEFT OUTER JOIN vectors ON vectors.segment_id = "
                         "segments.id WHERE vectors.segment_id IS NULL")

    def vectors_without_segments(self) -> list[int]:
        return self._ids("SELECT vectors.segment_id FROM vectors LEFT OUTER JOIN segments ON segments.id = "
                         "vectors.segment_id WHERE segments.id IS NULL")

    def items_in_unknown_state(self) -> list[int]:
        known = (INDEXED, *FAILED_STATES)
        return self._ids(f"SELECT id FROM items WHERE state NOT IN ({marks(known)})", known)

    def indexed_items_without_segments(self, ignoring: Iterable[int] = ()) -> list[int]:
        """Items recorded as indexed that have no segment once the segments ``ignoring`` are gone."""
        ignoring = set(int(i) for i in ignoring)
        empty = self._ids("SELECT id FROM items WHERE state = ? AND id NOT IN (SELECT item_id FROM segments)",
                          (INDEXED,))
        if not ignoring:
            return empty
        touched = {item for chunk in chunked(sorted(ignoring)) for item in
                   self._ids(f"SELECT DISTINCT item_id FROM segments WHERE id IN ({marks(chunk)})", chunk)}
        kept: set[int] = set()
        for chunk in chunked(sorted(touched)):
            for item_id, seg_id, state in self._conn.execute(
                    f"SELECT segments.item_id, segments.id, items.state FROM segments JOIN items ON "
                    f"items.id = segments.item_id WHERE segments.item_id IN ({marks(chunk)})", chunk):
                if seg_id not in ignoring or state != INDEXED:
                    kept.add(item_id)
        return sorted(set(empty) | (touched - kept))

    def modalities_of_segments(self, ids: Sequence[int]) -> set[Modality]:
        found: set[Modality] = set()
        for chunk in chunked(list(ids)[:10_000]):
            found |= {Modality(row[0]) for row in self._conn.execute(
                f"SELECT DISTINCT modality FROM segments WHERE id IN ({marks(chunk)})", chunk)}
        return found
