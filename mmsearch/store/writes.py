"""Writing the catalog within one transaction: ``CatalogWriter`` is what ``Catalog.transaction()``
yields. Everything written through one writer commits together when the block ends, or not at all.

New rows get their ids here: segments above every id ever handed out (never reused, even after a
deletion, so a stale index file can never point at a new segment), items above every id the table holds.
The caller holds the store's writer lock, and the transaction began IMMEDIATE (SQLite's write lock taken
before the first read).
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np

from ..records import Modality, Segment
from .reads import CatalogReader, chunked, marks
from .rows import ItemRow


class CatalogWriter(CatalogReader):
    """Reads and writes on one connection, inside one write transaction."""

    def next_id(self, table: str) -> int:
        """The next free id of ``items`` or ``segments``; segments (AUTOINCREMENT) never reuse an id handed
        out before, even a deleted one, so a stale index file can never point at a new segment."""
        top = self._conn.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0
        if table == "segments":
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'segments'").fetchone()
            top = max(top, row[0] if row else 0)
        return int(top) + 1

    def put_item(self, *, path: str, modality: Modality, size: int, mtime_ns: int, content_hash: str | None,
                 state: str, error: str | None = None) -> int:
        """Insert or replace the item row for ``path`` (keeping its id); returns the id."""
        return self.put_items([ItemRow(0, path, modality, size, mtime_ns, content_hash, state, error)])[0]

    def put_items(self, rows: Sequence[ItemRow], *, existing: Mapping[str, int] | None = None) -> list[int]:
        """``put_item`` for many rows (distinct paths; their ``id`` is ignored) in a few statements; returns
        their ids in order. ``existing``: the ids of those paths the catalog holds, when the caller has
        already looked them up (``item_ids_by_path``)."""
        if existing is None:
            existing = self.item_ids_by_path([row.path for row in rows])
        now = time.time()
        changed = [(r.modality.value, r.size, r.mtime_ns, r.content_hash, r.state, r.error, now, existing[r.path])
                   for r in rows if r.path in existing]
        if changed:
            self._conn.executemany("UPDATE items SET modality = ?, size = ?, mtime_ns = ?, content_hash = ?, "
                                   "state = ?, error = ?, updated_at = ? WHERE id = ?", changed)
        next_item = self.next_id("items")
        ids, new = [], []
        for r in rows:
            item_id = existing.get(r.path)
            if item_id is None:
                item_id, next_item = next_item, next_item + 1
                new.append((item_id, r.path, r.modality.value, r.size, r.mtime_ns, r.content_hash, r.state, r.error,
                            now))
            ids.append(item_id)
        if new:
            self._conn.executemany("INSERT INTO items (id, path, modality, size, mtime_ns, content_hash, state, "
                                   "error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", new)
        return ids

    def add_segments(self, item_id: int, modality: Modality, parts: Sequence[Segment], matrix: np.ndarray) -> list[int]:
        """Insert segments with their vectors; returns their new ids in order."""
        return self.add_segments_many([(item_id, modality, parts, matrix)])[0]

    def add_segments_many(self, entries: Sequence[tuple[int, Modality, Sequence[Segment], np.ndarray]]) -> list[list[int]]:
        """``add_segments`` for many items in two statements."""
        first = self.next_id("segments")
        ids: list[list[int]] = []
        segment_rows, vector_rows = [], []
        for item_id, modality, parts, matrix in entries:
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            own = list(range(first, first + len(parts)))
            first += len(parts)
            ids.append(own)
            for seg_id, part, vector in zip(own, parts, matrix):
                segment_rows.append((seg_id, item_id, modality.value, part.ordinal, part.text, part.start, part.end,
                                     part.page))
                vector_rows.append((seg_id, vector.tobytes()))
        if segment_rows:
            self._conn.executemany('INSERT INTO segments (id, item_id, modality, ordinal, text, start, "end", page) '
                                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", segment_rows)
            self._conn.executemany("INSERT INTO vectors (segment_id, vector) VALUES (?, ?)", vector_rows)
        return ids

    def copy_segments(self, source_item: int, target_item: int) -> list[tuple[Modality, list[int], np.ndarray]]:
        """Give ``target_item`` copies of ``source_item``'s segments and vectors (same content, new file);
        returns (modality, new ids, vectors) per index they went to (a video's: image and audio)."""
        rows = self._conn.execute('SELECT segments.modality, segments.ordinal, segments.text, segments.start, '
                                  'segments."end", segments.page, vectors.vector FROM segments JOIN vectors ON '
                                  "vectors.segment_id = segments.id WHERE segments.item_id = ? "
                                  "ORDER BY segments.ordinal", (source_item,)).fetchall()
        by_modality: dict[str, list[tuple]] = {}
        for row in rows:
            by_modality.setdefault(row[0], []).append(row)
        copied = []
        for name, group in by_modality.items():
            modality = Modality(name)
            parts = [Segment(ordinal, text, start, end, page) for _, ordinal, text, start, end, page, _ in group]
            matrix = np.vstack([np.frombuffer(row[6], dtype=np.float32) for row in group])
            copied.append((modality, self.add_segments(target_item, modality, parts, matrix), matrix))
        return copied

    def move_item(self, item_id: int, new_path: str, size: int, mtime_ns: int) -> None:
        self._conn.execute("UPDATE items SET path = ?, size = ?, mtime_ns = ?, updated_at = ? WHERE id = ?",
                           (new_path, size, mtime_ns, time.time(), item_id))

    def touch_item(self, item_id: int, size: int, mtime_ns: int) -> None:
        self._conn.execute("UPDATE items SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, item_id))

    def drop_segments(self, item_ids: Sequence[int]) -> dict[Modality, list[int]]:
        """Delete the segments (and vectors) of these items; returns the removed segment ids per modality."""
        removed = self.item_segment_ids(item_ids)
        for chunk in chunked([int(i) for i in item_ids]):
            self._conn.execute(f"DELETE FROM vectors WHERE segment_id IN (SELECT id FROM segments WHERE item_id IN "
                               f"({marks(chunk)}))", chunk)
            self._conn.execute(f"DELETE FROM segments WHERE item_id IN ({marks(chunk)})", chunk)
        return removed

    def delete_items(self, item_ids: Sequence[int]) -> dict[Modality, list[int]]:
        """Delete these items with their segments and vectors; returns the removed segment ids per modality."""
        removed = self.drop_segments(item_ids)
        for chunk in chunked([int(i) for i in item_ids]):
            self._conn.execute(f"DELETE FROM items WHERE id IN ({marks(chunk)})", chunk)
        return removed

    def delete_segments(self, segment_ids: Sequence[int]) -> None:
        """Delete these segments and their vectors (the items stay)."""
        for chunk in chunked(sorted(set(int(i) for i in segment_ids))):
            self._conn.execute(f"DELETE FROM vectors WHERE segment_id IN ({marks(chunk)})", chunk)
            self._conn.execute(f"DELETE FROM segments WHERE id IN ({marks(chunk)})", chunk)

    def delete_vectors(self, segment_ids: Sequence[int]) -> None:
        """Delete stored vectors by segment id (those whose segment is gone)."""
        for chunk in chunked(sorted(set(int(i) for i in segment_ids))):
            self._conn.execute(f"DELETE FROM vectors WHERE segment_id IN ({marks(chunk)})", chunk)
