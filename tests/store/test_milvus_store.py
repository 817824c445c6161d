"""A store whose vectors live in Milvus (``--backend milvus``), against the session's real Milvus server: the
choice is remembered, searches and filters (pushed down into Milvus) answer as the same store on FAISS
does, changes reach the collection (removals, changed, renamed and touched files), an interrupted upload
converges, ``verify`` sees and repairs a collection that drifted, and a server that cannot be reached fails
fast with one line."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY, write_image

from mmsearch.index.milvus import MilvusIndex
from mmsearch.records import Modality
from mmsearch.search.filters import Filters
from mmsearch.store.verify import rebuild_indexes, verify_store
from mmsearch_cli.app import app

DAY = 86_400 * 10**9
BASE = 1_700_000_000 * 10**9


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def photos(tmp_path) -> Path:
    """Eight noise images in two folders, each with its own modification day."""
    root = tmp_path / "photos"
    for i in range(8):
        path = write_image(root / ("a" if i < 4 else "b") / f"img{i}.png", seed=i)
        os.utime(path, ns=(BASE + i * DAY, BASE + i * DAY))
    return root


def image_search(engine, query: Path, k: int = 8, **filters):
    result = engine.search(image=query, kind="image", k=k, filters=Filters(**filters) if filters else None)
    return [(hit.path, hit.score) for hit in result.hits]


def same_hits(left, right) -> None:
    assert [path for path, _ in left] == [path for path, _ in right]
    np.testing.assert_allclose([s for _, s in left], [s for _, s in right], atol=1e-5)


def collection(engine, modality=Modality.IMAGE) -> MilvusIndex:
    index = engine.store.index(modality)
    assert isinstance(index, MilvusIndex)
    return index


@pytest.fixture
def pair(make_engine, milvus_uri, photos, tmp_path):
    """The same folder indexed into a Milvus store and a FAISS store."""
    milvus = make_engine(tmp_path / "on-milvus", backend="milvus", milvus_uri=milvus_uri)
    faiss = make_engine(tmp_path / "on-faiss")
    milvus.index([photos], export=False)
    faiss.index([photos], export=False)
    return milvus, faiss


FILTERS = [
    {"path_glob": None},
    {"path_glob": "PHOTOS/a/*"},  # a literal prefix: pushed down (path like "...%")
    {"path_glob": "*/img[15].png"},  # not expressible in Milvus: the catalog's allowed ids
    {"path_glob": "PHOTOS/b/img6.png"},  # a literal: path == "..."
    {"modified_after": (BASE + 2 * DAY) / 1e9, "modified_before": (BASE + 6 * DAY) / 1e9},
    {"path_glob": "PHOTOS/b/*", "modified_before": (BASE + 6 * DAY) / 1e9},
    {"min_duration": 1.0},  # images have no duration: nothing
]


def test_filtered_searches_equal_faiss_and_are_pushed_down(pair, photos, monkeypatch):
    milvus, faiss = pair
    assert milvus.store.catalog.info()["index.backend"] == "milvus"
    index = collection(milvus)
    asked = []
    real = MilvusIndex.search

    def spy(self, queries, k, allowed_ids=None, where=None):
        asked.append((allowed_ids is not None, where is not None))
        return real(self, queries, k, allowed_ids, where)
    monkeypatch.setattr(MilvusIndex, "search", spy)
    for filters in FILTERS:
        given = {key: (value.replace("PHOTOS", str(photos)) if isinstance(value, str) else value)
                 for key, value in filters.items() if value is not None}
        asked.clear()
        found = image_search(milvus, photos / "a" / "img1.png", **given)
        same_hits(found, image_search(faiss, photos / "a" / "img1.png", **given))
        glob = given.get("path_glob", "")
        if "[" in glob:
            assert asked and all(allowed and not where for allowed, where in asked)
        elif given and "min_duration" not in given:
            assert asked and all(where and not allowed for allowed, where in asked)
        if "min_duration" in given:
            assert found == []
    assert "Milvus FLAT" in milvus.store.describe_index(Modality.IMAGE, index)


def test_changes_reach_the_collection(pair, photos):
    """Removed, changed, renamed and touched files: the collection's vectors and their paths and times follow."""
    milvus, faiss = pair
    (photos / "a" / "img0.png").unlink()  # gone
    write_image(photos / "a" / "img2.png", seed=42)  # changed
    os.utime(photos / "a" / "img2.png", ns=(BASE + 2 * DAY, BASE + 2 * DAY))
    (photos / "b" / "img5.png").rename(photos / "b" / "renamed5.png")  # moved
    os.utime(photos / "b" / "img6.png", ns=(BASE + 30 * DAY, BASE + 30 * DAY))  # touched
    for engine in (milvus, faiss):
        report = engine.index([photos], export=False)
        assert report.removed == 1 and report.renamed == 1
    milvus.remove([photos / "b" / "img7.png"])
    faiss.remove([photos / "b" / "img7.png"])
    index = collection(milvus)
    wanted = milvus.store.catalog.segment_ids(Modality.IMAGE)
    assert np.array_equal(index.ids(), np.sort(wanted))
    by_path = {row[2]: row for row in milvus.store.catalog.segment_files(wanted)}
    held = index.attributes_of(wanted)
    assert {seg: (path, mtime) for seg, (path, mtime, _, _) in held.items()} == \
        {row[0]: (path, row[3]) for path, row in by_path.items()}
    assert str(photos / "b" / "renamed5.png") in by_path
    for filters in ({}, {"path_glob": f"{photos}/b/*"}, {"modified_after": (BASE + 20 * DAY) / 1e9}):
        for query in ("a/img1.png", "a/img2.png", "b/renamed5.png"):
            same_hits(image_search(milvus, photos / query, **filters), image_search(faiss, photos / query, **filters))
    assert [p for p, _ in image_search(milvus, photos / "a/img1.png", modified_after=(BASE + 20 * DAY) / 1e9)] == \
        [str(photos / "b" / "img6.png")]
    assert verify_store(milvus.store).ok


def test_an_upload_killed_half_way_converges_on_the_next_run(make_engine, milvus_uri, photos, tmp_path, monkeypatch):
    engine = make_engine(tmp_path / "killed", backend="milvus", milvus_uri=milvus_uri)
    real = MilvusIndex.add
    calls = []

    def dies(self, ids, vectors):
        calls.append(len(ids))
        real(self, ids[:1], vectors[:1])  # a part reached the server, then the process "died"
        raise KeyboardInterrupt
    monkeypatch.setattr(MilvusIndex, "add", dies)
    with pytest.raises(KeyboardInterrupt):
        engine.index([photos], export=False)
    monkeypatch.setattr(MilvusIndex, "add", real)
    engine.close()
    again = make_engine(tmp_path / "killed")  # no backend given: the recorded one
    assert again.store.catalog.info()["index.backend"] == "milvus"
    index = collection(again)
    wanted = again.store.catalog.segment_ids(Modality.IMAGE)
    assert len(wanted) and np.array_equal(index.ids(), np.sort(wanted))
    again.index([photos], export=False)
    assert np.array_equal(collection(again).ids(), np.sort(again.store.catalog.segment_ids(Modality.IMAGE)))
    assert len(again.store.catalog.segment_ids(Modality.IMAGE)) == 8
    assert verify_store(again.store).ok


def test_verify_finds_a_drifted_collection_and_repair_and_rebuild_fix_it(pair):
    milvus, _ = pair
    index = collection(milvus)
    wanted = np.sort(milvus.store.catalog.segment_ids(Modality.IMAGE))
    index.remove(wanted[:2])  # lost on the server
    index.add(np.array([10**9]), np.ones((1, index.dim), np.float32) / np.sqrt(index.dim))  # one it should not hold
    report = verify_store(milvus.store)
    behind = [f for f in report.findings if f.code == "index-behind"]
    assert behind and behind[0].count == 3 and "Milvus collection" in behind[0].message
    repaired = verify_store(milvus.store, repair=True)
    assert any(f.code == "index-behind" and f.repaired for f in repaired.findings)
    milvus.store.release_writer()
    assert np.array_equal(collection(milvus).ids(), wanted)
    assert not [f for f in verify_store(milvus.store).findings if f.code.startswith("index")]
    index = collection(milvus)
    index.remove(wanted[:1])
    assert rebuild_indexes(milvus.store)["image"] == len(wanted)
    milvus.store.release_writer()
    assert np.array_equal(collection(milvus).ids(), wanted)


def test_reindex_recreates_the_milvus_index(pair, photos):
    from mmsearch.store.reselect import reindex

    milvus, faiss = pair
    milvus.store.acquire_writer()
    choice = reindex(milvus.store, "image", "hnsw")
    milvus.store.release_writer()
    assert choice.kind == "hnsw" and not (milvus.store.path / "image.faiss").exists()
    index = collection(milvus)
    assert index.kind == "hnsw" and "Milvus HNSW" in index.describe()
    found = image_search(milvus, photos / "a" / "img3.png", k=3)
    assert found[0][0] == str(photos / "a" / "img3.png")


def test_the_cli_remembers_milvus_and_switches_back(tmp_path, photos, milvus_uri):
    store = tmp_path / "cli-store"
    result = cli("index", photos, "--store", store, "--model", TINY, "--backend", "milvus", "--milvus-uri", milvus_uri,
                 "--json")
    assert result.exit_code == 0, result.output
    query = photos / "b" / "img4.png"
    hits = json.loads(cli("search", "--image", query, "--kind", "image", "--store", store, "--json", "-k", "3").stdout)
    assert hits[0]["path"] == str(query) and hits[0]["score"] == pytest.approx(1, abs=1e-4)
    status = cli("status", "--store", store, "--json")
    shown = json.dumps(json.loads(status.stdout))
    assert "Milvus FLAT" in shown and milvus_uri in shown and "mmsearch_" in shown
    assert not (store / "image.faiss").exists()
    back = cli("index", photos, "--store", store, "--backend", "faiss", "--json")
    assert back.exit_code == 0, back.output
    again = json.loads(cli("search", "--image", query, "--kind", "image", "--store", store, "--json", "-k", "3").stdout)
    assert [h["path"] for h in again] == [h["path"] for h in hits] and (store / "image.faiss").exists()


def test_an_unreachable_server_fails_fast_with_one_line(tmp_path, photos):
    with socket.socket() as probe:  # a port nothing listens on (closed again at once), on this machine only
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = tmp_path / "nowhere"
    result = cli("index", photos, "--store", store, "--model", TINY, "--backend", "milvus", "--milvus-uri",
                 f"127.0.0.1:{port}")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Milvus at http://127.0.0.1:{port}: cannot connect" in lines[0]
    assert "is the server running?" in lines[0]
    missing = cli("index", photos, "--store", store, "--model", TINY, "--backend", "milvus")
    assert missing.exit_code == 2 and "--milvus-uri" in missing.stderr
