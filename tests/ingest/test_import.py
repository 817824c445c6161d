"""`mmsearch import-vectors`: clip-retrieval-shaped folders (npy shards + parquet metadata) become
searchable catalog items; wrong dimensions and unknown models are refused with one line."""
from __future__ import annotations

import sqlite3

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.ingest.importer import find_shards
from mmsearch.records import Modality
from mmsearch.store.folder import Store
from mmsearch.store.reads import FILTERED_SEGMENTS_SQL, PREFIX_RANGE, glob_prefix_range
from mmsearch_cli.app import app

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

DIM = 64  # test-tiny's embedding size
TINY = "test-tiny:random"
ROWS = (300, 200)


def write_clip_retrieval(root: Path, rows=ROWS, dim=DIM, dtype=np.float16) -> Path:
    """img_emb/img_emb_N.npy + metadata/metadata_N.parquet, as clip-retrieval writes them."""
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    space = ClusteredSphere(dim=dim, clusters=8, seed=2)
    start = 0
    for shard, count in enumerate(rows):
        np.save(root / "img_emb" / f"img_emb_{shard}.npy", space.rows(start, count).astype(dtype))
        pq.write_table(pa.table({"image_path": [f"/photos/{shard}/img{start + i}.jpg" for i in range(count)],
                                 "caption": [f"caption {start + i}" for i in range(count)],
                                 "url": [f"https://example.org/{start + i}.jpg" for i in range(count)]}),
                       root / "metadata" / f"metadata_{shard}.parquet")
        start += count
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_import_a_clip_retrieval_folder_then_search_it(tmp_path):
    emb = write_clip_retrieval(tmp_path / "emb")
    store = tmp_path / "store"
    result = invoke("import-vectors", emb, "--model", TINY, "--store", store, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows"] == report["added"] == sum(ROWS) and report["modality"] == "image"
    assert report["dim"] == DIM and report["shards"] == 2
    assert report["index"].startswith(("flat", "torch-flat"))  # exact: on the CPU, or on a GPU through torch
    found = invoke("search", "a photo", "--store", store, "-k", "5", "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert len(hits) == 5 and all(h["path"].startswith("/photos/") for h in hits)
    only = invoke("search", "a photo", "--store", store, "-k", "3", "--path", "/photos/1/*", "--json")
    assert only.exit_code == 0 and all(h["path"].startswith("/photos/1/") for h in json.loads(only.stdout))
    status = invoke("status", "--store", store)
    assert status.exit_code == 0 and f"{sum(ROWS)} files" in status.stdout and "auto-selection" in status.stdout


def test_wrong_dimension_is_refused_with_one_line(tmp_path):
    emb = write_clip_retrieval(tmp_path / "emb")
    store = tmp_path / "store"
    assert invoke("import-vectors", emb, "--model", TINY, "--store", store).exit_code == 0
    other = tmp_path / "other.npy"
    np.save(other, np.ones((10, 32), np.float32))
    result = invoke("import-vectors", other, "--modality", "image", "--store", store)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "32 dimensions" in lines[0] and "64" in lines[0]
    with Store.open(store) as opened:
        assert opened.vector_count(Modality.IMAGE) == sum(ROWS)


def test_a_new_store_needs_the_model_and_a_known_one_is_checked(tmp_path):
    emb = write_clip_retrieval(tmp_path / "emb")
    no_model = invoke("import-vectors", emb, "--store", tmp_path / "s1")
    assert no_model.exit_code == 2 and "--model" in no_model.stderr
    assert invoke("import-vectors", emb, "--model", TINY, "--store", tmp_path / "s2").exit_code == 0
    other = invoke("import-vectors", emb, "--model", "ViT-B-32:openai", "--store", tmp_path / "s2")
    assert other.exit_code == 2 and "test-tiny:random" in other.stderr


def test_reimport_replaces_rows_and_skips_broken_vectors(tmp_path):
    emb = write_clip_retrieval(tmp_path / "emb")
    store = tmp_path / "store"
    assert invoke("import-vectors", emb, "--model", TINY, "--store", store).exit_code == 0
    vectors = np.load(emb / "img_emb" / "img_emb_0.npy").astype(np.float32)
    vectors[3] = np.nan
    vectors[4] = 0
    np.save(emb / "img_emb" / "img_emb_0.npy", vectors)
    again = invoke("import-vectors", emb, "--store", store, "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["replaced"] == sum(ROWS) - 2 and report["added"] == 0 and report["skipped"] == 2
    with Store.open(store) as opened:
        index = opened.index(Modality.IMAGE)
        assert len(index) == opened.vector_count(Modality.IMAGE) == sum(ROWS)  # the skipped rows keep old vectors
        norms = np.linalg.norm(opened.vector_source(Modality.IMAGE)(index.ids())[1], axis=1)
        assert np.allclose(norms, 1, atol=1e-4)


def test_files_without_metadata_and_with_csv_metadata(tmp_path):
    vectors = ClusteredSphere(dim=DIM, clusters=4).rows(0, 50)
    np.save(tmp_path / "plain.npy", vectors)
    (tmp_path / "meta.csv").write_text("path,text\n" + "".join(f"/notes/{i}.txt,note {i}\n" for i in range(50)))
    plain = invoke("import-vectors", tmp_path / "plain.npy", "--modality", "image", "--model", TINY,
                   "--store", tmp_path / "s")
    assert plain.exit_code == 0, plain.output
    texts = invoke("import-vectors", tmp_path / "plain.npy", "--metadata", tmp_path / "meta.csv", "--modality",
                   "text", "--store", tmp_path / "s", "--json")
    assert texts.exit_code == 0, texts.output
    with Store.open(tmp_path / "s") as opened:
        paths = set(opened.catalog.all_items())
    assert "plain.npy#0" in paths and "/notes/7.txt#text" in paths and len(paths) == 100
    short = tmp_path / "short.csv"
    short.write_text("path\n/a\n/b\n")
    bad = invoke("import-vectors", tmp_path / "plain.npy", "--metadata", short, "--modality", "image",
                 "--store", tmp_path / "s")
    assert bad.exit_code == 2 and "2 metadata rows for 50 vectors" in bad.stderr


def test_shard_discovery_pairs_metadata_by_number(tmp_path):
    emb = write_clip_retrieval(tmp_path / "emb", rows=(5, 5, 5))
    shards, implied = find_shards([emb])
    assert implied == Modality.IMAGE
    assert [(s.vectors.name, s.metadata.name) for s in shards] == [
        ("img_emb_0.npy", "metadata_0.parquet"), ("img_emb_1.npy", "metadata_1.parquet"),
        ("img_emb_2.npy", "metadata_2.parquet")]


def test_prefix_globs_read_a_range_of_the_path_index(tmp_path):
    assert glob_prefix_range("/photos/1/*.jpg") == ("/photos/1/", "/photos/10")
    assert glob_prefix_range("*/cats/*") is None
    emb = write_clip_retrieval(tmp_path / "emb")
    assert invoke("import-vectors", emb, "--model", TINY, "--store", tmp_path / "s").exit_code == 0
    with Store.open(tmp_path / "s") as opened:
        ids = opened.catalog.segment_ids(Modality.IMAGE, "/photos/1/*")
        assert len(ids) == ROWS[1]
        with sqlite3.connect(opened.catalog.path) as conn:
            plan = " ".join(str(row) for row in conn.execute(
                "EXPLAIN QUERY PLAN " + FILTERED_SEGMENTS_SQL + " AND items.path GLOB ?" + PREFIX_RANGE,
                ("image", "/photos/1/*", "/photos/1/", "/photos/10")).fetchall())
        assert "path>? AND path<?" in plan and "SCAN segments" not in plan


def test_a_512_d_vector_costs_about_its_own_size_on_disk(tmp_path):
    """A 2 KB vector row must not take a whole 4 KB page (SQLite's default): at 10M vectors that was 43 GB."""
    from mmsearch.ingest.importer import ImportChunk, bind_import_model, import_chunks

    rows = 4000
    with Store.open(tmp_path / "store", create=True) as store:
        store.acquire_writer()
        bind_import_model(store, Modality.IMAGE, "synthetic:random", 512, "test")
        vectors = ClusteredSphere(dim=512, clusters=8).rows(0, rows)
        import_chunks(store, [ImportChunk(vectors, [f"/p/{i}.jpg" for i in range(rows)])], Modality.IMAGE)
        with sqlite3.connect(store.catalog.path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        per_vector = store.disk_bytes() / rows
    assert 2048 < per_vector < 2800, per_vector
