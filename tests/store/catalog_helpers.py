"""What the catalog tests share: small seeded vectors, a file added through a writer, plain sqlite3 reads
beside the catalog's own, and a fresh catalog per test."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from mmsearch.records import Modality, Segment
from mmsearch.store.rows import INDEXED

DIM = 4



def vectors(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


def add_file(write, path: str, modality: Modality = Modality.IMAGE, segments: int = 1, seed: int = 0,
             state: str = INDEXED) -> tuple[int, list[int], np.ndarray]:
    """An item with ``segments`` segments and vectors, through a CatalogWriter: (item id, segment ids, vectors)."""
    item_id = write.put_item(path=path, modality=modality, size=100 + seed, mtime_ns=1_000 + seed,
                             content_hash=f"hash-{path}", state=state)
    parts = [Segment(i, f"passage {i}" if modality is Modality.TEXT else None,
                     float(i) if modality is Modality.AUDIO else None,
                     float(i) + 10.0 if modality is Modality.AUDIO else None) for i in range(segments)]
    matrix = vectors(segments, seed)
    return item_id, write.add_segments(item_id, modality, parts, matrix), matrix


def raw(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """A query on a plain sqlite3 connection, beside the catalog's own."""
    connection = sqlite3.connect(str(path))
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def columns(path: Path, table: str) -> set[str]:
    return {row[1] for row in raw(path, f"PRAGMA table_info({table})")}


def tables(path: Path) -> set[str]:
    return {row[0] for row in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
