"""The catalog's schema over time: numbered migrations (one per transaction, all or nothing, refused
when the catalog is newer than this mmsearch or a step is missing), and stores made by an older
mmsearch (hand-written tables, 4 KB pages) that still open, read and write."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from catalog_helpers import DIM, add_file, columns, raw, tables, vectors

from mmsearch.errors import StoreCorruptError
from mmsearch.records import Modality
from mmsearch.store import schema
from mmsearch.store.catalog import Catalog
from mmsearch.store.folder import CATALOG_NAME, Store
from mmsearch.store.rows import INDEXED, ItemRow, SegmentRow


def make_v1(path: Path) -> None:
    """A catalog at schema version 1 (no ``segments.page``) with one file in it, closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    made = Catalog(path, create=True)
    with made.transaction() as write:
        add_file(write, "/photos/kept.jpg", segments=2, seed=1)
    made.close()
    connection = sqlite3.connect(str(path))
    with connection:
        connection.execute("ALTER TABLE segments DROP COLUMN page")
        connection.execute("UPDATE store_info SET value = '1' WHERE key = 'schema_version'")
    connection.close()


# -- migrations ----------------------------------------------------------------------------------------

def test_an_older_catalog_is_migrated_once_and_records_the_new_version(catalog_path, monkeypatch):
    make_v1(catalog_path)
    ran: list[int] = []

    def add_note_column(conn) -> None:
        ran.append(1)
        conn.execute("ALTER TABLE items ADD COLUMN note TEXT")
        conn.execute("CREATE TABLE tags (item_id INTEGER NOT NULL, tag TEXT NOT NULL)")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "MIGRATIONS", {1: add_note_column})
    migrated = Catalog(catalog_path)
    assert ran == [1]
    assert migrated.schema_version_found == 1
    assert migrated.info()["schema_version"] == "2"
    assert "note" in columns(catalog_path, "items") and "tags" in tables(catalog_path)
    assert list(migrated.all_items()) == ["/photos/kept.jpg"]  # the data came through
    assert len(migrated.segment_ids(Modality.IMAGE)) == 2
    migrated.close()

    again = Catalog(catalog_path)
    assert ran == [1]  # nothing runs the second time
    assert again.schema_version_found == 2
    again.close()


def test_migrations_run_in_order_one_version_at_a_time(catalog_path, monkeypatch):
    make_v1(catalog_path)
    seen: list[tuple[int, str]] = []

    def step(n: int):
        def run(conn) -> None:
            seen.append((n, conn.execute("SELECT value FROM store_info WHERE key = 'schema_version'")
                         .fetchone()[0]))
        return run

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    monkeypatch.setattr(schema, "MIGRATIONS", {3: step(3), 1: step(1), 2: step(2)})
    migrated = Catalog(catalog_path)
    assert seen == [(1, "1"), (2, "2"), (3, "3")]  # each step sees the version it upgrades from
    assert migrated.schema_version_found == 1 and migrated.info()["schema_version"] == "4"
    migrated.close()


def test_a_failed_migration_leaves_the_catalog_as_it_was(catalog_path, monkeypatch):
    make_v1(catalog_path)
    before = raw(catalog_path, "SELECT * FROM items")

    def half_done(conn) -> None:
        conn.execute("ALTER TABLE items ADD COLUMN note TEXT")
        conn.execute("CREATE TABLE tags (item_id INTEGER NOT NULL, tag TEXT NOT NULL)")
        conn.execute("UPDATE items SET path = '/changed'")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "MIGRATIONS", {1: half_done})
    with pytest.raises(StoreCorruptError) as raised:
        Catalog(catalog_path)
    assert "schema version 1" in str(raised.value) and "disk on fire" in str(raised.value)
    assert raw(catalog_path, "SELECT value FROM store_info WHERE key = 'schema_version'") == [("1",)]
    assert "note" not in columns(catalog_path, "items") and "tags" not in tables(catalog_path)
    assert raw(catalog_path, "SELECT * FROM items") == before

    monkeypatch.setattr(schema, "MIGRATIONS", {1: lambda conn: None})  # a fixed mmsearch upgrades it
    fixed = Catalog(catalog_path)
    assert fixed.schema_version_found == 1 and fixed.info()["schema_version"] == "2"
    fixed.close()


def test_a_failure_in_a_later_step_keeps_the_earlier_steps(catalog_path, monkeypatch):
    make_v1(catalog_path)

    def fail(conn) -> None:
        conn.execute("CREATE TABLE half (x INTEGER)")
        raise ValueError("second step broke")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(schema, "MIGRATIONS", {
        1: lambda conn: conn.execute("CREATE TABLE first (x INTEGER)"), 2: fail})
    with pytest.raises(StoreCorruptError, match="schema version 2"):
        Catalog(catalog_path)
    assert raw(catalog_path, "SELECT value FROM store_info WHERE key = 'schema_version'") == [("2",)]
    assert "first" in tables(catalog_path) and "half" not in tables(catalog_path)


def test_a_missing_migration_step_is_refused(catalog_path, monkeypatch):
    make_v1(catalog_path)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "MIGRATIONS", {})
    with pytest.raises(StoreCorruptError, match="no migration from schema version 1"):
        Catalog(catalog_path)
    assert raw(catalog_path, "SELECT value FROM store_info WHERE key = 'schema_version'") == [("1",)]


def test_a_catalog_from_a_newer_mmsearch_is_refused(catalog_path):
    make_v1(catalog_path)
    raw_connection = sqlite3.connect(str(catalog_path))
    with raw_connection:
        raw_connection.execute("UPDATE store_info SET value = ? WHERE key = 'schema_version'",
                               (str(schema.SCHEMA_VERSION + 1),))
    raw_connection.close()
    with pytest.raises(StoreCorruptError, match="newer than this mmsearch"):
        Catalog(catalog_path)
    with pytest.raises(StoreCorruptError, match="newer than this mmsearch"):
        Store.open(catalog_path.parent)


# -- stores made by an older mmsearch ------------------------------------------------------------------

OLD_TABLES = """
CREATE TABLE store_info (
    "key" VARCHAR NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY ("key")
);
CREATE TABLE items (
    id INTEGER NOT NULL,
    path TEXT NOT NULL,
    modality VARCHAR(8) NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash VARCHAR(64),
    state VARCHAR(8) NOT NULL,
    error TEXT,
    updated_at FLOAT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (path)
);
CREATE INDEX ix_items_hash ON items (content_hash);
CREATE INDEX ix_items_state ON items (state);
CREATE TABLE segments (
    id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL,
    modality VARCHAR(8) NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT,
    start FLOAT,
    "end" FLOAT,
    FOREIGN KEY(item_id) REFERENCES items (id) ON DELETE CASCADE
);
CREATE INDEX ix_segments_item ON segments (item_id);
CREATE INDEX ix_segments_modality ON segments (modality);
CREATE TABLE vectors (
    segment_id INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (segment_id),
    FOREIGN KEY(segment_id) REFERENCES segments (id) ON DELETE CASCADE
);
"""


def make_old_store(folder: Path) -> dict[int, np.ndarray]:
    """A store folder as an older mmsearch left it: 4 KB pages, rollback journal, schema version 1, one
    image and one two-passage text file. Returns the stored vectors by segment id."""
    folder.mkdir(parents=True)
    connection = sqlite3.connect(str(folder / CATALOG_NAME))
    connection.execute("PRAGMA page_size=4096")
    connection.executescript(OLD_TABLES)
    stored = dict(zip([1, 2, 3], vectors(3, seed=7)))
    with connection:
        connection.execute("INSERT INTO store_info (key, value) VALUES ('schema_version', '1')")
        connection.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (1, "/old/photo.jpg", "image", 1234, 5678, "h1", INDEXED, None, 1.0e9),
            (2, "/old/note.txt", "text", 99, 4321, "h2", INDEXED, None, 1.0e9)])
        connection.executemany('INSERT INTO segments (id, item_id, modality, ordinal, text, start, "end") '
                               "VALUES (?, ?, ?, ?, ?, ?, ?)", [
                                   (1, 1, "image", 0, None, None, None),
                                   (2, 2, "text", 0, "first passage", None, None),
                                   (3, 2, "text", 1, "second passage", None, None)])
        connection.executemany("INSERT INTO vectors VALUES (?, ?)",
                               [(seg_id, vector.tobytes()) for seg_id, vector in stored.items()])
    connection.close()
    assert raw(folder / CATALOG_NAME, "PRAGMA page_size") == [(4096,)]
    return stored


def test_a_store_made_by_an_older_mmsearch_opens_and_reads_back(tmp_path):
    folder = tmp_path / "old-store"
    stored = make_old_store(folder)
    with Store.open(folder) as store:
        catalog = store.catalog
        assert catalog.schema_version_found == 1
        assert "page" in columns(folder / CATALOG_NAME, "segments")  # migrated to schema 2
        assert catalog.all_items() == {
            "/old/photo.jpg": ItemRow(1, "/old/photo.jpg", Modality.IMAGE, 1234, 5678, "h1", INDEXED, None),
            "/old/note.txt": ItemRow(2, "/old/note.txt", Modality.TEXT, 99, 4321, "h2", INDEXED, None)}
        assert catalog.segment_ids(Modality.IMAGE).tolist() == [1]
        assert sorted(catalog.segment_ids(Modality.TEXT).tolist()) == [2, 3]
        assert catalog.segment_ids(Modality.TEXT, "/old/*.txt").tolist() in ([2, 3], [3, 2])
        got = catalog.vectors_for([1, 2, 3], DIM)
        assert set(got) == {1, 2, 3} and all(np.array_equal(got[i], stored[i]) for i in stored)
        chunks = list(catalog.iter_vectors(Modality.TEXT, DIM, chunk=1))
        assert [ids.tolist() for ids, _ in chunks] == [[2], [3]]
        assert np.array_equal(np.vstack([m for _, m in chunks]), np.vstack([stored[2], stored[3]]))
        assert catalog.segment_rows([3, 1]) == {
            3: SegmentRow(3, 2, "/old/note.txt", Modality.TEXT, "second passage", None, None, None, Modality.TEXT),
            1: SegmentRow(1, 1, "/old/photo.jpg", Modality.IMAGE, None, None, None, None, Modality.IMAGE)}
        assert catalog.segment_count(Modality.TEXT) == (2, 3)
        assert catalog.counts() == ({"image": 1, "text": 1}, {"image": 1, "text": 2})
    assert raw(folder / CATALOG_NAME, "PRAGMA page_size") == [(4096,)]


def test_a_store_made_by_an_older_mmsearch_takes_writes_and_keeps_its_page_size(tmp_path):
    folder = tmp_path / "old-store"
    stored = make_old_store(folder)
    with Store.open(folder) as store:
        with store.catalog.transaction() as write:
            item_id, new_ids, matrix = add_file(write, "/old/new.jpg", segments=2, seed=3)
            kept = write.put_item(path="/old/photo.jpg", modality=Modality.IMAGE, size=1, mtime_ns=2,
                                  content_hash="h1b", state=INDEXED)
            removed = write.delete_items([2])
        assert item_id == 3 and kept == 1
        assert new_ids == [4, 5]  # above every segment id the old store handed out
        assert removed == {Modality.TEXT: [2, 3]} or removed == {Modality.TEXT: [3, 2]}
    with Store.open(folder) as store:  # committed, and readable after reopening
        catalog = store.catalog
        assert sorted(catalog.all_items()) == ["/old/new.jpg", "/old/photo.jpg"]
        assert catalog.all_items()["/old/photo.jpg"].content_hash == "h1b"
        ids, found = next(catalog.iter_vectors(Modality.IMAGE, DIM))
        assert ids.tolist() == [1, 4, 5]
        assert np.array_equal(found, np.vstack([stored[1], matrix]))
        assert catalog.segment_ids(Modality.TEXT).tolist() == []
        with catalog.transaction() as write:  # the text file's ids stay retired
            _, text_ids, _ = add_file(write, "/old/again.txt", Modality.TEXT, seed=4)
        assert text_ids == [6]
    assert raw(folder / CATALOG_NAME, "PRAGMA page_size") == [(4096,)]


def test_a_new_catalog_uses_large_pages(catalog):
    assert schema.PAGE_SIZE == 16384
    assert raw(catalog.path, "PRAGMA page_size") == [(schema.PAGE_SIZE,)]
    assert raw(catalog.path, "PRAGMA journal_mode") == [("wal",)]
    assert catalog.schema_version_found == schema.SCHEMA_VERSION


def test_an_older_store_gets_the_read_speedups_from_its_next_writer_and_counts_from_the_index(tmp_path):
    make_old_store(tmp_path / "old")
    indexes = lambda: {row[0] for row in raw(tmp_path / "old" / CATALOG_NAME,  # noqa: E731
                                             "SELECT name FROM sqlite_master WHERE type = 'index'")}
    with Store.open(tmp_path / "old") as store:
        assert "ix_items_state_modality" not in indexes()  # a reader changes nothing
        files, _ = store.catalog.counts()
        store.acquire_writer()
        assert "ix_items_state_modality" in indexes()
        assert store.catalog.counts()[0] == files
    plan = raw(tmp_path / "old" / CATALOG_NAME, "EXPLAIN QUERY PLAN SELECT modality, count(*) FROM items "
               "WHERE state = ? GROUP BY modality", ("indexed",))
    assert "COVERING INDEX ix_items_state_modality" in " ".join(str(row) for row in plan)
