"""The catalog's writers and readers: what the writer guarantees about ids (kept per path, segment ids
never reused) and transactions (all or nothing); what the readers return (path globs as SQLite GLOB,
vectors in id order across chunks, segment rows cached until a commit, vectors fetched in batches)."""
from __future__ import annotations

import fnmatch

import numpy as np
import pytest

from catalog_helpers import DIM, add_file, raw, vectors

from mmsearch.records import FailedFile, Modality, Segment
from mmsearch.store.catalog import Catalog
from mmsearch.store.reads import glob_prefix_range
from mmsearch.store.rows import FAILED, INDEXED, RETRY, ItemRow, SegmentRow


# -- writes --------------------------------------------------------------------------------------------

def test_putting_an_existing_path_keeps_its_id_and_updates_its_row(catalog):
    with catalog.transaction() as write:
        first = write.put_items([ItemRow(0, "/a.jpg", Modality.IMAGE, 1, 10, "ha", INDEXED, None),
                                 ItemRow(0, "/b.txt", Modality.TEXT, 2, 20, "hb", INDEXED, None)])
    with catalog.transaction() as write:
        second = write.put_items([ItemRow(999, "/b.txt", Modality.TEXT, 3, 30, None, FAILED, "unreadable"),
                                  ItemRow(0, "/c.wav", Modality.AUDIO, 4, 40, "hc", RETRY, "busy")])
    assert second[0] == first[1]  # the id given in the row is ignored; the path's id is kept
    assert second[1] > max(first)
    assert catalog.all_items() == {
        "/a.jpg": ItemRow(first[0], "/a.jpg", Modality.IMAGE, 1, 10, "ha", INDEXED, None),
        "/b.txt": ItemRow(first[1], "/b.txt", Modality.TEXT, 3, 30, None, FAILED, "unreadable"),
        "/c.wav": ItemRow(second[1], "/c.wav", Modality.AUDIO, 4, 40, "hc", RETRY, "busy")}
    assert catalog.failures() == (FailedFile("/b.txt", "unreadable"), FailedFile("/c.wav", "busy"))


def test_new_item_ids_are_above_every_id_in_the_catalog(catalog):
    with catalog.transaction() as write:
        ids = write.put_items([ItemRow(0, f"/f{i}.jpg", Modality.IMAGE, i, i, None, INDEXED, None) for i in range(5)])
    assert ids == sorted(ids) and len(set(ids)) == 5
    with catalog.transaction() as write:
        write.delete_items([ids[1], ids[2]])  # holes below the top
        new = write.put_items([ItemRow(0, "/g.jpg", Modality.IMAGE, 0, 0, None, INDEXED, None),
                               ItemRow(0, "/f4.jpg", Modality.IMAGE, 9, 9, None, INDEXED, None),
                               ItemRow(0, "/h.jpg", Modality.IMAGE, 0, 0, None, INDEXED, None)])
    assert new[1] == ids[4]
    assert new[0] > max(ids) and new[2] == new[0] + 1


def test_adding_segments_returns_their_ids_per_file_in_order(catalog):
    with catalog.transaction() as write:
        a = write.put_item(path="/a.jpg", modality=Modality.IMAGE, size=1, mtime_ns=1, content_hash=None,
                           state=INDEXED)
        b = write.put_item(path="/b.txt", modality=Modality.TEXT, size=1, mtime_ns=1, content_hash=None,
                           state=INDEXED)
        empty = write.put_item(path="/c.txt", modality=Modality.TEXT, size=1, mtime_ns=1, content_hash=None,
                               state=INDEXED)
        ids = write.add_segments_many([(a, Modality.IMAGE, [Segment(0)], vectors(1, 1)),
                                       (empty, Modality.TEXT, [], np.empty((0, DIM), np.float32)),
                                       (b, Modality.TEXT, [Segment(0, "x"), Segment(1, "y")], vectors(2, 2))])
    assert ids == [[1], [], [2, 3]]
    assert catalog.segment_rows([2, 3]) == {2: SegmentRow(2, b, "/b.txt", Modality.TEXT, "x", None, None, None, Modality.TEXT),
                                            3: SegmentRow(3, b, "/b.txt", Modality.TEXT, "y", None, None, None, Modality.TEXT)}


def test_deleting_returns_the_removed_segment_ids_per_modality(catalog):
    with catalog.transaction() as write:
        image, image_ids, _ = add_file(write, "/a.jpg", Modality.IMAGE, segments=1, seed=1)
        text, text_ids, _ = add_file(write, "/b.txt", Modality.TEXT, segments=3, seed=2)
        audio, audio_ids, _ = add_file(write, "/c.wav", Modality.AUDIO, segments=2, seed=3)
    with catalog.transaction() as write:
        dropped = write.drop_segments([text, audio])
        deleted = write.delete_items([image])
        assert write.delete_items([12345]) == {}
    assert {m: sorted(ids) for m, ids in dropped.items()} == {Modality.TEXT: text_ids, Modality.AUDIO: audio_ids}
    assert deleted == {Modality.IMAGE: image_ids}
    assert sorted(catalog.all_items()) == ["/b.txt", "/c.wav"]  # dropping segments keeps the files
    assert all(len(catalog.segment_ids(m)) == 0 for m in Modality)
    assert raw(catalog.path, "SELECT count(*) FROM vectors") == [(0,)]


def test_segment_ids_are_never_reused_after_deletion(catalog):
    with catalog.transaction() as write:
        _, first, _ = add_file(write, "/a.jpg", segments=2, seed=1)
        newest_item, newest, _ = add_file(write, "/b.jpg", segments=2, seed=2)
    with catalog.transaction() as write:
        write.delete_items([newest_item])  # the newest segments go
    with catalog.transaction() as write:
        _, again, _ = add_file(write, "/c.jpg", segments=1, seed=3)
    assert again[0] > max(newest) > max(first)
    catalog.close()
    reopened = Catalog(catalog.path)
    with reopened.transaction() as write:
        write.delete_segments(again)
    with reopened.transaction() as write:
        _, after_reopen, _ = add_file(write, "/d.jpg", segments=1, seed=4)
    assert after_reopen[0] > again[0]
    reopened.close()


def test_copied_segments_have_exactly_the_same_vectors_and_parts(catalog):
    with catalog.transaction() as write:
        source, source_ids, matrix = add_file(write, "/a.wav", Modality.AUDIO, segments=3, seed=5)
        target = write.put_item(path="/copy.wav", modality=Modality.AUDIO, size=1, mtime_ns=1, content_hash=None,
                                state=INDEXED)
        [(modality, copied_ids, copied)] = write.copy_segments(source, target)
        nothing = write.put_item(path="/empty.wav", modality=Modality.AUDIO, size=1, mtime_ns=1,
                                 content_hash=None, state=FAILED)
        assert write.copy_segments(nothing, target) == []
    assert modality is Modality.AUDIO
    assert len(copied_ids) == 3 and min(copied_ids) > max(source_ids)
    assert np.array_equal(copied, matrix)
    stored = catalog.vectors_for(copied_ids, DIM)
    assert all(np.array_equal(stored[i], matrix[n]) for n, i in enumerate(copied_ids))
    rows = catalog.segment_rows(source_ids + copied_ids)
    for original, copy in zip(source_ids, copied_ids):
        assert rows[copy].path == "/copy.wav" and rows[copy].item_id == target
        assert (rows[copy].text, rows[copy].start, rows[copy].end) == (rows[original].text, rows[original].start,
                                                                       rows[original].end)


def test_a_transaction_that_raises_commits_nothing(catalog):
    with catalog.transaction() as write:
        add_file(write, "/kept.jpg", seed=1)
    before_items, before_ids = catalog.all_items(), catalog.segment_ids(Modality.IMAGE).tolist()
    with pytest.raises(RuntimeError, match="interrupted"), catalog.transaction() as write:
        _, ids, _ = add_file(write, "/lost.jpg", segments=3, seed=2)
        write.put_item(path="/kept.jpg", modality=Modality.IMAGE, size=0, mtime_ns=0, content_hash=None,
                       state=FAILED, error="never")
        raise RuntimeError("interrupted")
    assert catalog.all_items() == before_items
    assert catalog.segment_ids(Modality.IMAGE).tolist() == before_ids
    assert catalog.vectors_for(ids, DIM) == {}
    assert catalog.fetch_vectors(ids, DIM)[0].tolist() == []
    assert raw(catalog.path, "SELECT count(*) FROM vectors") == [(1,)]


# -- reads ---------------------------------------------------------------------------------------------

GLOB_PATHS = [
    "/photos/2021/a.jpg", "/photos/2021/b.png", "/photos/2021/a.JPG", "/photos/2021/sub/deep.jpg",
    "/photos/2022/c.jpg", "/photos2/d.jpg", "/Photos/e.jpg", "/photos/ünïcødé/日本.jpg", "/photos/ñ.jpg",
    "/photos/x[1].jpg", "/music/a.jpg", "/photos/z.jpg", "/photos/\u00e9t\u00e9/\u2603.png",
]
GLOBS = [
    "*", "*.jpg", "*.png", "*/2021/*", "*[[]*", "*日本*",
    "/photos/*", "/photos/2021/*", "/photos/202?/*.jpg", "/photos/?.jpg", "/photos/[abxyz]*", "/photos/[a-z].jpg",
    "/photos/x[[]1].jpg", "/photos/2021/a.[jJ][pP][gG]", "/photos/ünïcødé/??.jpg", "/photos/ünïcødé/*",
    "/photos/été/?.png", "/Photos/*", "/photos", "/music/a.jpg", "/nothing/*", "/photos2*",
]


@pytest.fixture
def glob_catalog(catalog):
    """One image segment per path in GLOB_PATHS, and a text segment on every other one."""
    expected: dict[str, dict[Modality, int]] = {}
    with catalog.transaction() as write:
        for n, path in enumerate(GLOB_PATHS):
            item_id = write.put_item(path=path, modality=Modality.IMAGE, size=n, mtime_ns=n, content_hash=None,
                                     state=INDEXED)
            own = {Modality.IMAGE: write.add_segments(item_id, Modality.IMAGE, [Segment(0)], vectors(1, n))[0]}
            if n % 2:
                own[Modality.TEXT] = write.add_segments(item_id, Modality.TEXT, [Segment(1, "caption")],
                                                        vectors(1, 100 + n))[0]
            expected[path] = own
    return catalog, expected


@pytest.mark.parametrize("pattern", GLOBS)
def test_a_path_glob_selects_the_segments_of_the_matching_files(glob_catalog, pattern):
    catalog, segments_of = glob_catalog
    for modality in (Modality.IMAGE, Modality.TEXT):
        wanted = sorted(own[modality] for path, own in segments_of.items()
                        if modality in own and fnmatch.fnmatchcase(path, pattern))
        assert sorted(catalog.segment_ids(modality, pattern).tolist()) == wanted, (pattern, modality)


def test_globs_select_what_they_should(glob_catalog):
    catalog, segments_of = glob_catalog

    def paths(pattern: str) -> set[str]:
        ids = set(catalog.segment_ids(Modality.IMAGE, pattern).tolist())
        return {path for path, own in segments_of.items() if own[Modality.IMAGE] in ids}

    assert paths("*[[]*") == {"/photos/x[1].jpg"}
    assert paths("/photos/?.jpg") == {"/photos/ñ.jpg", "/photos/z.jpg"}  # ? is one character, not one byte
    assert paths("/photos/2021/*") == {"/photos/2021/a.jpg", "/photos/2021/b.png", "/photos/2021/a.JPG",
                                       "/photos/2021/sub/deep.jpg"}  # * crosses folders
    assert paths("/photos/2021/*.jpg") == {"/photos/2021/a.jpg", "/photos/2021/sub/deep.jpg"}  # case-sensitive
    assert paths("/photos2*") == {"/photos2/d.jpg"}
    assert len(paths("*")) == len(GLOB_PATHS)
    assert catalog.segment_ids(Modality.AUDIO, "*").tolist() == []


def test_without_a_glob_every_segment_of_the_modality_is_selected(glob_catalog):
    catalog, segments_of = glob_catalog
    assert sorted(catalog.segment_ids(Modality.IMAGE).tolist()) == sorted(
        o[Modality.IMAGE] for o in segments_of.values())
    assert sorted(catalog.segment_ids(Modality.TEXT).tolist()) == sorted(
        o[Modality.TEXT] for o in segments_of.values() if Modality.TEXT in o)


def test_glob_prefix_range_bounds_the_paths_a_glob_can_match():
    assert glob_prefix_range("/photos/2021/*") == ("/photos/2021/", "/photos/20210")
    assert glob_prefix_range("/a?b") == ("/a", "/b")
    assert glob_prefix_range("/x[1]") == ("/x", "/y")
    assert glob_prefix_range("/music/a.jpg") == ("/music/a.jpg", "/music/a.jph")
    assert glob_prefix_range("/photos/ü*") == ("/photos/ü", "/photos/ý")
    for no_prefix in ("*", "*.jpg", "?", "[ab]/x", ""):
        assert glob_prefix_range(no_prefix) is None
    assert glob_prefix_range("/a\U0010ffff*") is None  # nothing sorts above the last code point
    for pattern in GLOBS:
        bounds = glob_prefix_range(pattern)
        if bounds is None:
            continue
        low, high = bounds
        assert low < high
        for path in GLOB_PATHS:
            if fnmatch.fnmatchcase(path, pattern):
                assert low <= path < high and low.encode() <= path.encode() < high.encode(), (pattern, path)


def test_a_glob_whose_prefix_ends_just_below_the_surrogates_still_works(catalog):
    with catalog.transaction() as write:
        _, ids, _ = add_file(write, "/p/\ud7ffa.jpg")
    assert catalog.segment_ids(Modality.IMAGE, "/p/\ud7ff*").tolist() == ids


@pytest.mark.parametrize("chunk", [1, 4, 5, 7, 23, 1000])
def test_vectors_come_in_id_order_once_each_across_chunks(catalog, chunk):
    expected: dict[int, np.ndarray] = {}
    with catalog.transaction() as write:
        for n in range(8):  # image files of 1-4 segments, between text files
            _, ids, matrix = add_file(write, f"/img{n}.jpg", segments=1 + n % 4, seed=n)
            expected.update(zip(ids, matrix))
            add_file(write, f"/note{n}.txt", Modality.TEXT, segments=2, seed=50 + n)
        write.delete_items([write.item_ids_by_path(["/img3.jpg"])["/img3.jpg"]])  # a gap in the ids
    expected = {i: v for i, v in expected.items() if i in set(catalog.segment_ids(Modality.IMAGE).tolist())}
    chunks = list(catalog.iter_vectors(Modality.IMAGE, DIM, chunk=chunk))
    assert all(0 < len(ids) <= chunk and matrix.shape == (len(ids), DIM) for ids, matrix in chunks)
    ids = np.concatenate([ids for ids, _ in chunks]).tolist()
    assert ids == sorted(expected)
    assert np.array_equal(np.vstack([m for _, m in chunks]), np.vstack([expected[i] for i in ids]))
    assert list(catalog.iter_vectors(Modality.AUDIO, DIM, chunk=chunk)) == []


def test_segment_rows_are_served_from_memory_until_something_commits(catalog, monkeypatch):
    with catalog.transaction() as write:
        item_id, ids, _ = add_file(write, "/old/name.txt", Modality.TEXT, segments=2)
    reads: list[list[int]] = []
    real = catalog._raw_rows

    def counted(query, wanted):
        reads.append(list(wanted))
        return real(query, wanted)
    monkeypatch.setattr(catalog, "_raw_rows", counted)

    first = catalog.segment_rows(ids + [999])
    assert set(first) == set(ids) and {row.path for row in first.values()} == {"/old/name.txt"}
    marker = catalog.change_marker()
    assert catalog.segment_rows(ids) == {i: first[i] for i in ids}
    assert catalog.change_marker() == marker
    assert reads == [ids + [999]]  # cached rows are not read again

    with catalog.transaction() as write:
        write.move_item(item_id, "/new/name.txt", 5, 6)
    assert catalog.change_marker() != marker
    moved = catalog.segment_rows(ids)
    assert {row.path for row in moved.values()} == {"/new/name.txt"}
    assert reads[-1] == ids


def test_a_commit_from_another_connection_also_refreshes_segment_rows(catalog):
    with catalog.transaction() as write:
        item_id, ids, _ = add_file(write, "/a.jpg")
    assert catalog.segment_rows(ids)[ids[0]].path == "/a.jpg"
    marker = catalog.change_marker()
    other = Catalog(catalog.path)
    with other.transaction() as write:
        write.move_item(item_id, "/b.jpg", 1, 1)
    other.close()
    assert catalog.change_marker() != marker
    assert catalog.segment_rows(ids)[ids[0]].path == "/b.jpg"


def test_segment_count_gives_the_count_and_the_newest_id(catalog):
    assert catalog.segment_count(Modality.IMAGE) == (0, 0)
    with catalog.transaction() as write:
        _, image_ids, _ = add_file(write, "/a.jpg", segments=3, seed=1)
        newest_item, newest_ids, _ = add_file(write, "/b.jpg", segments=2, seed=2)
        _, text_ids, _ = add_file(write, "/c.txt", Modality.TEXT, segments=4, seed=3)
    assert catalog.segment_count(Modality.IMAGE) == (5, max(newest_ids))
    assert catalog.segment_count(Modality.TEXT) == (4, max(text_ids))
    with catalog.transaction() as write:
        write.delete_items([newest_item])
    assert catalog.segment_count(Modality.IMAGE) == (3, max(image_ids))
    assert catalog.segment_count(Modality.AUDIO) == (0, 0)


def test_fetch_vectors_returns_only_existing_ids_with_their_exact_vectors(catalog):
    stored: dict[int, np.ndarray] = {}
    with catalog.transaction() as write:
        for n in range(12):
            _, ids, matrix = add_file(write, f"/f{n}.jpg", segments=100, seed=n)
            stored.update(zip(ids, matrix))
        write.delete_segments(sorted(stored)[::7])  # holes
    for i in sorted(stored)[::7]:
        del stored[i]
    rng = np.random.default_rng(3)
    deleted = sorted(set(range(1, 1201)) - set(stored))
    asked = np.array(sorted(stored) + deleted + [0, -1, 10_000, 10_001], dtype=np.int64)
    rng.shuffle(asked)
    assert len(asked) > 1000
    found, matrix = catalog.fetch_vectors(asked, DIM)
    assert matrix.shape == (len(found), DIM) and matrix.dtype == np.float32
    assert sorted(found.tolist()) == sorted(stored)  # each existing id once, no others
    for seg_id, vector in zip(found.tolist(), matrix):
        assert np.array_equal(vector, stored[seg_id])
    by_id = catalog.vectors_for(asked.tolist(), DIM)
    assert set(by_id) == set(stored) and all(np.array_equal(by_id[i], stored[i]) for i in stored)
    empty_ids, empty = catalog.fetch_vectors([], DIM)
    assert empty_ids.tolist() == [] and empty.shape == (0, DIM)


def test_items_by_hash_finds_indexed_files_only(catalog):
    with catalog.transaction() as write:
        add_file(write, "/a.jpg")
        add_file(write, "/b.jpg", state=FAILED)
    found = catalog.items_by_hash(["hash-/a.jpg", "hash-/b.jpg", "hash-/none"])
    assert list(found) == ["hash-/a.jpg"] and found["hash-/a.jpg"].path == "/a.jpg"
