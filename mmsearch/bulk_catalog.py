"""Fast catalog writes for bulk imports: one transaction per chunk, rows inserted with ``executemany``
and ids assigned up front (the caller holds the store's writer lock, and the transaction is IMMEDIATE).

An imported row is an item (size 0, mtime 0, no content hash: it stands for a file mmsearch never read)
with one segment and its vector. A path already in the catalog keeps its item id; its old segments and
vectors are replaced.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .catalog import Catalog, item_ids_by_path, next_id
from .records import Modality

def write_rows(catalog: Catalog, modality: Modality, paths: Sequence[str], texts: Sequence[str | None],
               vectors: np.ndarray) -> tuple[int, int]:
    """Insert (or replace) one item + segment + vector per row, in one transaction; returns (added, replaced)."""
    if not len(paths):
        return 0, 0
    latest: dict[str, int] = {}
    for row, path in enumerate(paths):  # a path given twice: its last row wins
        latest[path] = row
    rows = np.fromiter(latest.values(), dtype=np.int64, count=len(latest))
    unique_paths = list(latest)
    now = time.time()
    with catalog.transaction() as conn:
        existing = item_ids_by_path(conn, unique_paths)
        if existing:
            catalog.drop_segments(conn, list(existing.values()))
            conn.exec_driver_sql(
                "UPDATE items SET modality = ?, size = 0, mtime_ns = 0, content_hash = NULL, state = 'indexed', "
                "error = NULL, updated_at = ? WHERE id = ?",
                [(modality.value, now, item_id) for item_id in existing.values()])
        next_item = next_id(conn, "items")
        item_ids = []
        new_items = []
        for path in unique_paths:
            item_id = existing.get(path)
            if item_id is None:
                item_id = next_item
                next_item += 1
                new_items.append((item_id, path, modality.value, 0, 0, None, "indexed", None, now))
            item_ids.append(item_id)
        if new_items:
            conn.exec_driver_sql(
                "INSERT INTO items (id, path, modality, size, mtime_ns, content_hash, state, error, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", new_items)
        first_segment = next_id(conn, "segments")
        segment_ids = range(first_segment, first_segment + len(item_ids))
        conn.exec_driver_sql(
            'INSERT INTO segments (id, item_id, modality, ordinal, text, start, "end") VALUES (?, ?, ?, 0, ?, NULL, NULL)',
            [(seg, item, modality.value, texts[row]) for seg, item, row in zip(segment_ids, item_ids, rows.tolist())])
        block = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        conn.exec_driver_sql("INSERT INTO vectors (segment_id, vector) VALUES (?, ?)",
                             [(seg, block[i].tobytes()) for i, seg in enumerate(segment_ids)])
    return len(new_items), len(existing)
