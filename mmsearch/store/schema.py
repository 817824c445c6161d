"""The catalog's SQLite schema, its connections, and its numbered migrations (Python's own ``sqlite3``).

Tables: ``store_info`` (key/value: schema version, models, index choices), ``items`` (one row per file),
``segments`` (what one vector stands for: an image, a passage, an audio window) and ``vectors`` (each
segment's float32 vector). Segment ids are the ids in the vector indexes and are never reused.

Transactions are begun explicitly (connections are in autocommit mode otherwise): a read transaction
(``Database.read``) sees one consistent snapshot (WAL mode: readers never wait for the writer), and a
write transaction (``Database.write``) begins IMMEDIATE, taking the write lock before reading.

Only the store package touches these tables; everything else goes through ``catalog.Catalog``.
"""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import StoreCorruptError, StoreNotFoundError

SCHEMA_VERSION = 2

TABLES = (
    'CREATE TABLE IF NOT EXISTS store_info (\n\t"key" VARCHAR NOT NULL, \n\tvalue TEXT NOT NULL, \n\t'
    'PRIMARY KEY ("key")\n)',
    "CREATE TABLE IF NOT EXISTS items (\n\tid INTEGER NOT NULL, \n\tpath TEXT NOT NULL, \n\t"
    "modality VARCHAR(8) NOT NULL, \n\tsize INTEGER NOT NULL, \n\tmtime_ns INTEGER NOT NULL, \n\t"
    "content_hash VARCHAR(64), \n\tstate VARCHAR(8) NOT NULL, \n\terror TEXT, \n\tupdated_at FLOAT NOT NULL, \n\t"
    "PRIMARY KEY (id), \n\tUNIQUE (path)\n)",
    "CREATE TABLE IF NOT EXISTS segments (\n\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n\t"
    "item_id INTEGER NOT NULL, \n\tmodality VARCHAR(8) NOT NULL, \n\tordinal INTEGER NOT NULL, \n\ttext TEXT, \n\t"
    'start FLOAT, \n\t"end" FLOAT, \n\tpage INTEGER, \n\t'
    'FOREIGN KEY(item_id) REFERENCES items (id) ON DELETE CASCADE\n)',
    "CREATE TABLE IF NOT EXISTS vectors (\n\tsegment_id INTEGER NOT NULL, \n\tvector BLOB NOT NULL, \n\t"
    "PRIMARY KEY (segment_id), \n\tFOREIGN KEY(segment_id) REFERENCES segments (id) ON DELETE CASCADE\n)",
    "CREATE INDEX IF NOT EXISTS ix_items_state ON items (state)",
    "CREATE INDEX IF NOT EXISTS ix_items_hash ON items (content_hash)",
    "CREATE INDEX IF NOT EXISTS ix_segments_item ON segments (item_id)",
    "CREATE INDEX IF NOT EXISTS ix_segments_modality ON segments (modality)",
)
"""The schema as mmsearch's earlier SQLAlchemy models made it (stores made before open as they are), with
``segments.page`` since schema 2.
Segment ids are AUTOINCREMENT: never reused, so a stale index can never point at a new segment."""
SPEEDUPS = (
    "CREATE INDEX IF NOT EXISTS ix_items_state_modality ON items (state, modality)",
)
"""Indexes that only make reads faster (an older mmsearch reads the store the same with or without them):
made with the tables, and added to an older store by its next writer (``Catalog.add_speedups``). Counting
the indexed files per kind then reads this index alone, not every item row (0.36 s at 1M items)."""

Migration = Callable[[sqlite3.Connection], None]


def _add_page(conn: sqlite3.Connection) -> None:
    """Schema 2: a document passage's page (PDF page, EPUB chapter); NULL for every earlier segment."""
    conn.execute("ALTER TABLE segments ADD COLUMN page INTEGER")


MIGRATIONS: dict[int, Migration] = {1: _add_page}
"""Numbered migrations: ``MIGRATIONS[n]`` upgrades a catalog from schema n to n + 1, inside the same
transaction that records version n + 1 (all or nothing)."""

PAGE_SIZE = 16384
"""SQLite page size of new catalogs. A 512-d float32 vector row is a little over 2 KB, and SQLite puts at
most one such row in a 4 KB page (its default): 4.1 KB of disk per vector. 16 KB pages hold seven:
2.3 KB per vector, and bulk writes take half the time. Existing catalogs keep the size they were made with."""


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    connection.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only while the file is still empty
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


class Database:
    """Connections to one catalog file, kept for reuse (one per thread at a time, never shared)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode: each statement is its own consistent read or write."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = _connect(self.path)
        try:
            yield connection
        finally:
            if connection.in_transaction:  # a caller that stopped half way: nothing of it is kept
                connection.execute("ROLLBACK")
            with self._lock:
                self._idle.append(connection)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every statement through it sees the same committed state."""
        with self.connection() as connection:
            connection.execute("BEGIN")
            yield connection
            connection.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), committed when the block ends, rolled back on error."""
        with self.connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def get_info(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute('SELECT value FROM store_info WHERE "key" = ?', (key,)).fetchone()
    return row[0] if row else None


def put_info(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute('INSERT OR REPLACE INTO store_info ("key", value) VALUES (?, ?)', (key, value))


def create(conn: sqlite3.Connection) -> None:
    """Tables and schema version, in the caller's transaction (all or nothing)."""
    for statement in (*TABLES, *SPEEDUPS):
        conn.execute(statement)
    if get_info(conn, "schema_version") is None:
        put_info(conn, "schema_version", str(SCHEMA_VERSION))


def has_tables(database: Database) -> bool:
    try:
        with database.connection() as conn:
            return bool(conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])
    except Exception:
        return True  # not even a database: corrupt, not merely unfinished


def migrate(database: Database, store: Path) -> int:
    """Bring the catalog up to ``SCHEMA_VERSION``, one numbered migration per transaction; returns the
    version found. Refuses a catalog from a newer mmsearch, and one whose creation never committed."""
    try:
        with database.connection() as conn:
            version_text = get_info(conn, "schema_version")
    except Exception as exc:
        if not has_tables(database):
            raise StoreNotFoundError(store) from exc  # creation was interrupted before its commit
        raise StoreCorruptError(store, f"catalog unreadable ({str(exc).splitlines()[0][:200]})") from exc
    if version_text is None:
        raise StoreNotFoundError(store)
    found = version = int(version_text)
    if version > SCHEMA_VERSION:
        raise StoreCorruptError(store, f"schema version {version} is newer than this mmsearch ({SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise StoreCorruptError(store, f"no migration from schema version {version}")
        try:
            with database.write() as conn:
                step(conn)
                put_info(conn, "schema_version", str(version + 1))
        except Exception as exc:
            raise StoreCorruptError(store, f"migration from schema version {version} failed "
                                           f"({str(exc).splitlines()[0][:200]}); the catalog is unchanged") from exc
        version += 1
    return found
