"""The SQLite catalog (through SQLAlchemy 2): items, their segments, the segments' vectors, store info.

Segment ids are the ids in the FAISS indexes. Vectors are kept here too (float32 blobs), in the same
transaction as their rows, so an index can always be rebuilt without re-embedding and no commit can
leave a row without its vector or a vector without its row.

Transactions are SQLite's own, begun explicitly (the sqlite3 module's implicit ones begin only before
writes): every ``with engine.connect()`` block reads one consistent snapshot (WAL mode: readers never
wait for the writer), and ``transaction()`` begins IMMEDIATE, taking the write lock before reading.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
from sqlalchemy import (
    Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, Text,
    create_engine, delete, event, func, insert, select, update,
)
from sqlalchemy.engine import Connection, Engine

from .errors import StoreCorruptError, StoreNotFoundError
from .records import FailedFile, Modality, Segment

SCHEMA_VERSION = 1

metadata = MetaData()

store_info = Table(
    "store_info", metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

items = Table(
    "items", metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False, unique=True),
    Column("modality", String(8), nullable=False),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("content_hash", String(64)),
    Column("state", String(8), nullable=False),  # 'indexed' | 'failed' | 'retry' (see FAILED_STATES)
    Column("error", Text),
    Column("updated_at", Float, nullable=False),
    Index("ix_items_hash", "content_hash"),
    Index("ix_items_state", "state"),
)

segments = Table(
    "segments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", Integer, ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("modality", String(8), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("text", Text),
    Column("start", Float),
    Column("end", Float),
    Index("ix_segments_item", "item_id"),
    Index("ix_segments_modality", "modality"),
    sqlite_autoincrement=True,  # ids are never reused, so a stale index can never point at a new segment
)

vectors = Table(
    "vectors", metadata,
    Column("segment_id", Integer, ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True),
    Column("vector", LargeBinary, nullable=False),
)

# Numbered migrations: MIGRATIONS[n] upgrades a store from schema n to n + 1.
MIGRATIONS: dict[int, "callable"] = {}

INDEXED = "indexed"
FAILED = "failed"
"""The file's bytes could not be indexed; tried again when the file changes (size, mtime)."""
RETRY = "retry"
"""The file could not be read this time (permission, changed or vanished while read): tried again every run."""
FAILED_STATES = (FAILED, RETRY)


def item_ids_by_path(conn: Connection, paths: Sequence[str]) -> dict[str, int]:
    """The ids of those of ``paths`` the catalog holds, 500 paths per query."""
    found: dict[str, int] = {}
    for start in range(0, len(paths), 500):
        chunk = list(paths[start:start + 500])
        found.update({path: int(item_id) for item_id, path in
                      conn.execute(select(items.c.id, items.c.path).where(items.c.path.in_(chunk)))})
    return found


def next_id(conn: Connection, table: str) -> int:
    """The next free id of ``items`` or ``segments``; segments (AUTOINCREMENT) never reuse an id handed
    out before, even a deleted one, so a stale index file can never point at a new segment."""
    top = conn.exec_driver_sql(f"SELECT max(id) FROM {table}").scalar() or 0
    if table == "segments":
        row = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'segments'").scalar()
        top = max(top, row or 0)
    return int(top) + 1


@dataclass(frozen=True)
class ItemRow:
    id: int
    path: str
    modality: Modality
    size: int
    mtime_ns: int
    content_hash: str | None
    state: str
    error: str | None


@dataclass(frozen=True)
class SegmentRow:
    id: int
    item_id: int
    path: str
    modality: Modality
    text: str | None
    start: float | None
    end: float | None


PAGE_SIZE = 16384
"""SQLite page size of new catalogs. A 512-d float32 vector row is a little over 2 KB, and SQLite puts at
most one such row in a 4 KB page (its default): 4.1 KB of disk per vector. 16 KB pages hold seven:
2.3 KB per vector, and bulk writes take half the time. Existing catalogs keep the size they were made with."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # no implicit transactions: _begin() starts them explicitly
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only while the file is still empty
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


_WRITE = "mmsearch_write"


def _begin(conn: Connection) -> None:
    """Every SQLAlchemy transaction is a real SQLite one: reads see one snapshot, writes lock at once."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


SEGMENT_CACHE_ROWS = 200_000
"""Segment rows kept in memory for search results (about 60 MB at most)."""
_SEGMENT_ROWS = ('SELECT segments.id, segments.item_id, items.path, segments.modality, segments.text, segments.start, '
                 'segments."end" FROM segments JOIN items ON items.id = segments.item_id WHERE segments.id IN ({})')


def glob_prefix_range(pattern: str) -> tuple[str, str] | None:
    """[low, high) bounds on paths matching a GLOB, from its literal prefix; None when it has none."""
    cut = min([at for at in (pattern.find(ch) for ch in "*?[") if at >= 0], default=len(pattern))
    prefix = pattern[:cut]
    if not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return None
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def vector_chunk_query(modality: Modality, after: int, chunk: int):
    """The next ``chunk`` stored vectors of ``modality`` with ids above ``after``, in id order. Keyed and
    ordered on segments.id (equal to vectors.segment_id), so SQLite walks the (modality, id) index and
    stops after ``chunk`` rows; ordered on vectors.segment_id it sorted every remaining row, vectors
    included, for each chunk: quadratic, hours at 10M vectors."""
    return (select(vectors.c.segment_id, vectors.c.vector)
            .join(segments, segments.c.id == vectors.c.segment_id)
            .where(segments.c.modality == modality.value, segments.c.id > after)
            .order_by(segments.c.id).limit(chunk))


class Catalog:
    def __init__(self, path: Path, *, create: bool = False):
        self.path = Path(path)
        self.engine: Engine = create_engine(f"sqlite:///{self.path}", future=True)
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()
        self._segment_cache: dict[int, SegmentRow] = {}
        self._segment_marker: int | None = None
        event.listen(self.engine, "connect", _sqlite_pragmas)
        event.listen(self.engine, "begin", _begin)
        if create and not self._initialised():
            with self.transaction() as conn:  # tables and schema version in one transaction: all or nothing
                metadata.create_all(conn)
                if self._get(conn, "schema_version") is None:
                    self._put(conn, "schema_version", str(SCHEMA_VERSION))
        self._migrate()

    def _initialised(self) -> bool:
        try:
            return "schema_version" in self.info()
        except Exception:
            return False

    def close(self) -> None:
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        self.engine.dispose()

    # -- store info ------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE), committed when the block ends, rolled back on error."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """One read transaction: every read made through it sees the same committed state."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.engine.connect() as fresh:
                yield fresh

    @staticmethod
    def _get(conn: Connection, key: str) -> str | None:
        return conn.execute(select(store_info.c.value).where(store_info.c.key == key)).scalar_one_or_none()

    @staticmethod
    def _put(conn: Connection, key: str, value: str) -> None:
        conn.execute(delete(store_info).where(store_info.c.key == key))
        conn.execute(insert(store_info).values(key=key, value=value))

    def info(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(store_info.c.key, store_info.c.value)).all())

    def set_info(self, **values: str) -> None:
        with self.transaction() as conn:
            for key, value in values.items():
                self._put(conn, key, str(value))

    def _migrate(self) -> None:
        try:
            info = self.info()
        except Exception as exc:
            if not self._has_tables():
                raise StoreNotFoundError(self.path.parent) from exc  # creation was interrupted before its commit
            raise StoreCorruptError(self.path.parent, f"catalog unreadable ({str(exc).splitlines()[0][:200]})") from exc
        if "schema_version" not in info:
            raise StoreNotFoundError(self.path.parent)
        version = int(info["schema_version"])
        if version > SCHEMA_VERSION:
            raise StoreCorruptError(self.path.parent, f"schema version {version} is newer than this mmsearch ({SCHEMA_VERSION})")
        while version < SCHEMA_VERSION:
            with self.transaction() as conn:
                MIGRATIONS[version](conn)
                version += 1
                self._put(conn, "schema_version", str(version))

    def _has_tables(self) -> bool:
        try:
            with self.engine.connect() as conn:
                return bool(conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'table'").scalar())
        except Exception:
            return True  # not even a database: corrupt, not merely unfinished

    # -- reading ---------------------------------------------------------------------------------------
    def all_items(self) -> dict[str, ItemRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(items.c.id, items.c.path, items.c.modality, items.c.size, items.c.mtime_ns,
                                       items.c.content_hash, items.c.state, items.c.error)).all()
        return {row.path: ItemRow(row.id, row.path, Modality(row.modality), row.size, row.mtime_ns,
                                  row.content_hash, row.state, row.error) for row in rows}

    def items_by_hash(self, hashes: Iterable[str]) -> dict[str, ItemRow]:
        """Indexed items with these content hashes (one per hash), to reuse their vectors."""
        hashes = list(set(hashes))
        found: dict[str, ItemRow] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start:start + 500]
                rows = conn.execute(select(items).where(items.c.content_hash.in_(chunk), items.c.state == "indexed")).all()
                for row in rows:
                    found.setdefault(row.content_hash, ItemRow(row.id, row.path, Modality(row.modality), row.size,
                                                               row.mtime_ns, row.content_hash, row.state, row.error))
        return found

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(indexed files per modality, segments per modality)."""
        with self.engine.connect() as conn:
            files = dict(conn.execute(select(items.c.modality, func.count()).where(items.c.state == "indexed")
                                      .group_by(items.c.modality)).all())
            segs = dict(conn.execute(select(segments.c.modality, func.count()).group_by(segments.c.modality)).all())
        return files, segs

    def failures(self) -> tuple[FailedFile, ...]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(items.c.path, items.c.error).where(items.c.state.in_(FAILED_STATES))
                                .order_by(items.c.path)).all()
        return tuple(FailedFile(row.path, row.error or "unknown error") for row in rows)

    def change_marker(self) -> int:
        """A number that changes whenever any connection, in this process or another, commits to the
        catalog (SQLite's ``data_version``, read on a connection kept for it and never used to write)."""
        with self._watch_lock:
            if self._watch is None:
                self._watch = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    def segment_rows(self, ids: Sequence[int]) -> dict[int, SegmentRow]:
        """Segments with their file paths, by id. On the search path: rows already read are kept until
        anything commits to the catalog (``change_marker``), the rest read with plain SQL on a pooled
        DBAPI connection (each statement its own consistent read), about 10x cheaper than a Core query."""
        marker = self.change_marker()
        cache = self._segment_cache
        if marker != self._segment_marker or len(cache) > SEGMENT_CACHE_ROWS:
            cache.clear()
            self._segment_marker = marker
        ids = [int(i) for i in ids]
        missing = [i for i in ids if i not in cache]
        if missing:
            connection = self.engine.raw_connection()
            try:
                cursor = connection.cursor()
                for start in range(0, len(missing), 500):
                    chunk = missing[start:start + 500]
                    for row in cursor.execute(_SEGMENT_ROWS.format(",".join("?" * len(chunk))), chunk):
                        cache[row[0]] = SegmentRow(row[0], row[1], row[2], Modality(row[3]), row[4], row[5], row[6])
                cursor.close()
            finally:
                connection.close()
        return {i: cache[i] for i in ids if i in cache}

    def segment_ids(self, modality: Modality, path_glob: str | None = None, *,
                    conn: Connection | None = None) -> np.ndarray:
        """Ids of the segments of a modality, optionally only those whose file path matches a glob
        (SQLite GLOB: ``*``, ``?``, ``[...]``, case-sensitive), answered from the catalog's indexes.
        Pass ``conn`` (from ``snapshot()``) to read within an existing transaction.

        With a glob, items are read first (CROSS JOIN fixes the order): a glob with a literal prefix
        (``/photos/2021/*``) reads only that range of the path index, not every segment of the modality;
        one that starts with a wildcard reads the path index once, still not the segments table."""
        if path_glob is None:
            query, params = "SELECT id FROM segments WHERE modality = ?", (modality.value,)
        else:
            query = ("SELECT segments.id FROM items CROSS JOIN segments ON segments.item_id = items.id "
                     "WHERE items.path GLOB ? AND segments.modality = ?")
            params = (path_glob, modality.value)
            bounds = glob_prefix_range(path_glob)
            if bounds is not None:
                query += " AND items.path >= ? AND items.path < ?"
                params += bounds
        with self._reading(conn) as reader:
            return np.fromiter(reader.exec_driver_sql(query, params).scalars(), dtype=np.int64)

    def iter_vectors(self, modality: Modality, dim: int, chunk: int = 20_000,
                     ids: Sequence[int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stored vectors of a modality as (ids, vectors) chunks, in id order."""
        last = -1
        with self.engine.connect() as conn:
            while True:
                rows = conn.execute(vector_chunk_query(modality, last, chunk)).all()
                if not rows:
                    return
                seg_ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
                matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), dim)
                last = int(seg_ids[-1])
                yield seg_ids, matrix

    def vectors_for(self, ids: Sequence[int], dim: int, *, conn: Connection | None = None) -> dict[int, np.ndarray]:
        ids = [int(i) for i in ids]
        found: dict[int, np.ndarray] = {}
        with self._reading(conn) as reader:
            for start in range(0, len(ids), 500):
                rows = reader.execute(select(vectors.c.segment_id, vectors.c.vector)
                                    .where(vectors.c.segment_id.in_(ids[start:start + 500]))).all()
                for seg_id, blob in rows:
                    found[seg_id] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return found

    def item_segment_ids(self, conn: Connection, item_ids: Sequence[int]) -> dict[Modality, list[int]]:
        by_modality: dict[Modality, list[int]] = {}
        for start in range(0, len(item_ids), 500):
            rows = conn.execute(select(segments.c.id, segments.c.modality)
                                .where(segments.c.item_id.in_(list(item_ids[start:start + 500])))).all()
            for seg_id, modality in rows:
                by_modality.setdefault(Modality(modality), []).append(seg_id)
        return by_modality

    # -- writing (each call takes the caller's transaction) ----------------------------------------------
    def put_item(self, conn: Connection, *, path: str, modality: Modality, size: int, mtime_ns: int,
                 content_hash: str | None, state: str, error: str | None = None) -> int:
        """Insert or replace the item row for ``path`` (keeping its id); returns the id."""
        return self.put_items(conn, [ItemRow(0, path, modality, size, mtime_ns, content_hash, state, error)])[0]

    def put_items(self, conn: Connection, rows: Sequence[ItemRow], *,
                  existing: Mapping[str, int] | None = None) -> list[int]:
        """``put_item`` for many rows (distinct paths; their ``id`` is ignored) in a few statements; returns
        their ids in order. New rows get ids assigned here: the caller holds the writer lock inside an
        IMMEDIATE transaction. ``existing``: the ids of those paths the catalog holds, when the caller has
        already looked them up (``item_ids_by_path``)."""
        if existing is None:
            existing = item_ids_by_path(conn, [row.path for row in rows])
        now = time.time()
        changed = [(r.modality.value, r.size, r.mtime_ns, r.content_hash, r.state, r.error, now, existing[r.path])
                   for r in rows if r.path in existing]
        if changed:
            conn.exec_driver_sql("UPDATE items SET modality = ?, size = ?, mtime_ns = ?, content_hash = ?, state = ?, "
                                 "error = ?, updated_at = ? WHERE id = ?", changed)
        next_item = next_id(conn, "items")
        ids, new = [], []
        for r in rows:
            item_id = existing.get(r.path)
            if item_id is None:
                item_id, next_item = next_item, next_item + 1
                new.append((item_id, r.path, r.modality.value, r.size, r.mtime_ns, r.content_hash, r.state, r.error, now))
            ids.append(item_id)
        if new:
            conn.exec_driver_sql("INSERT INTO items (id, path, modality, size, mtime_ns, content_hash, state, error, "
                                 "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", new)
        return ids

    def drop_segments(self, conn: Connection, item_ids: Sequence[int]) -> dict[Modality, list[int]]:
        """Delete the segments (and vectors) of these items; returns the removed segment ids per modality."""
        removed = self.item_segment_ids(conn, item_ids)
        for start in range(0, len(item_ids), 500):
            chunk = list(item_ids[start:start + 500])
            conn.execute(delete(vectors).where(vectors.c.segment_id.in_(
                select(segments.c.id).where(segments.c.item_id.in_(chunk)))))
            conn.execute(delete(segments).where(segments.c.item_id.in_(chunk)))
        return removed

    def add_segments(self, conn: Connection, item_id: int, modality: Modality, parts: Sequence[Segment],
                     matrix: np.ndarray) -> list[int]:
        """Insert segments with their vectors; returns their new ids in order."""
        return self.add_segments_many(conn, [(item_id, modality, parts, matrix)])[0]

    def add_segments_many(self, conn: Connection,
                          entries: Sequence[tuple[int, Modality, Sequence[Segment], np.ndarray]]) -> list[list[int]]:
        """``add_segments`` for many items in two statements; ids are assigned here, above every id the
        table has ever handed out (the caller holds the writer lock inside an IMMEDIATE transaction)."""
        first = next_id(conn, "segments")
        ids: list[list[int]] = []
        segment_rows, vector_rows = [], []
        for item_id, modality, parts, matrix in entries:
            matrix = np.ascontiguousarray(matrix, dtype=np.float32)
            own = list(range(first, first + len(parts)))
            first += len(parts)
            ids.append(own)
            for seg_id, part, vector in zip(own, parts, matrix):
                segment_rows.append((seg_id, item_id, modality.value, part.ordinal, part.text, part.start, part.end))
                vector_rows.append((seg_id, vector.tobytes()))
        if segment_rows:
            conn.exec_driver_sql('INSERT INTO segments (id, item_id, modality, ordinal, text, start, "end") '
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", segment_rows)
            conn.exec_driver_sql("INSERT INTO vectors (segment_id, vector) VALUES (?, ?)", vector_rows)
        return ids

    def copy_segments(self, conn: Connection, source_item: int, target_item: int) -> tuple[Modality | None, list[int], np.ndarray]:
        """Give ``target_item`` copies of ``source_item``'s segments and vectors (same content, new file)."""
        rows = conn.execute(select(segments, vectors.c.vector).join(vectors, vectors.c.segment_id == segments.c.id)
                            .where(segments.c.item_id == source_item).order_by(segments.c.ordinal)).all()
        if not rows:
            return None, [], np.empty((0, 0), np.float32)
        modality = Modality(rows[0].modality)
        parts = [Segment(row.ordinal, row.text, row.start, row.end) for row in rows]
        matrix = np.vstack([np.frombuffer(row.vector, dtype=np.float32) for row in rows])
        return modality, self.add_segments(conn, target_item, modality, parts, matrix), matrix

    def move_item(self, conn: Connection, item_id: int, new_path: str, size: int, mtime_ns: int) -> None:
        conn.execute(update(items).where(items.c.id == item_id)
                     .values(path=new_path, size=size, mtime_ns=mtime_ns, updated_at=time.time()))

    def touch_item(self, conn: Connection, item_id: int, size: int, mtime_ns: int) -> None:
        conn.execute(update(items).where(items.c.id == item_id).values(size=size, mtime_ns=mtime_ns))

    def delete_items(self, conn: Connection, item_ids: Sequence[int]) -> dict[Modality, list[int]]:
        removed = self.drop_segments(conn, item_ids)
        for start in range(0, len(item_ids), 500):
            conn.execute(delete(items).where(items.c.id.in_(list(item_ids[start:start + 500]))))
        return removed
