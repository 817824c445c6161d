"""The catalog's SQLite schema, its connection settings, and its numbered migrations.

Tables: ``store_info`` (key/value: schema version, models, index choices), ``items`` (one row per file),
``segments`` (what one vector stands for: an image, a passage, an audio window) and ``vectors`` (each
segment's float32 vector). Segment ids are the ids in the vector indexes and are never reused.

Transactions are SQLite's own, begun explicitly (the sqlite3 module's implicit ones begin only before
writes): every connection block reads one consistent snapshot (WAL mode: readers never wait for the
writer), and a write transaction begins IMMEDIATE, taking the write lock before reading.

Only the store package touches these tables; everything else goes through ``catalog.Catalog``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from sqlalchemy import (Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, Text,
                        create_engine, delete, event, insert, select)
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreCorruptError, StoreNotFoundError

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

Migration = Callable[[Connection], None]
MIGRATIONS: dict[int, Migration] = {}
"""Numbered migrations: ``MIGRATIONS[n]`` upgrades a catalog from schema n to n + 1, inside the same
transaction that records version n + 1 (all or nothing)."""

PAGE_SIZE = 16384
"""SQLite page size of new catalogs. A 512-d float32 vector row is a little over 2 KB, and SQLite puts at
most one such row in a 4 KB page (its default): 4.1 KB of disk per vector. 16 KB pages hold seven:
2.3 KB per vector, and bulk writes take half the time. Existing catalogs keep the size they were made with."""

_WRITE = "mmsearch_write"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # no implicit transactions: _begin() starts them explicitly
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only while the file is still empty
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _begin(conn: Connection) -> None:
    """Every SQLAlchemy transaction is a real SQLite one: reads see one snapshot, writes lock at once."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def connect(path: Path) -> Engine:
    """An engine on the catalog file with the settings above on every connection."""
    engine = create_engine(f"sqlite:///{path}", future=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _begin)
    return engine


def mark_writing(conn: Connection) -> None:
    """Make the next transaction on ``conn`` a write one (BEGIN IMMEDIATE)."""
    conn.execution_options(**{_WRITE: True})


def get_info(conn: Connection, key: str) -> str | None:
    return conn.execute(select(store_info.c.value).where(store_info.c.key == key)).scalar_one_or_none()


def put_info(conn: Connection, key: str, value: str) -> None:
    conn.execute(delete(store_info).where(store_info.c.key == key))
    conn.execute(insert(store_info).values(key=key, value=value))


def create(conn: Connection) -> None:
    """Tables and schema version, in the caller's transaction (all or nothing)."""
    metadata.create_all(conn)
    if get_info(conn, "schema_version") is None:
        put_info(conn, "schema_version", str(SCHEMA_VERSION))


def has_tables(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            return bool(conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'table'").scalar())
    except Exception:
        return True  # not even a database: corrupt, not merely unfinished


def migrate(engine: Engine, store: Path) -> int:
    """Bring the catalog up to ``SCHEMA_VERSION``, one numbered migration per transaction; returns the
    version found. Refuses a catalog from a newer mmsearch, and one whose creation never committed."""
    try:
        with engine.connect() as conn:
            version_text = get_info(conn, "schema_version")
    except Exception as exc:
        if not has_tables(engine):
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
            with engine.connect() as conn:
                mark_writing(conn)
                with conn.begin():
                    step(conn)
                    put_info(conn, "schema_version", str(version + 1))
        except Exception as exc:
            raise StoreCorruptError(store, f"migration from schema version {version} failed "
                                           f"({str(exc).splitlines()[0][:200]}); the catalog is unchanged") from exc
        version += 1
    return found
