"""A store's index type over time: recorded in the catalog, re-chosen after several-fold growth (at the
end of a run or in its background), rebuilt from the stored vectors when missing, checked against the
catalog when opened; `mmsearch reindex` and `mmsearch status` through the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.index import selection
from mmsearch.index.exact import exact_top_k, recall_at_k
from mmsearch.index.factory import open_index
from mmsearch.ingest.importer import ImportChunk, bind_import_model, import_chunks
from mmsearch.records import Modality
from mmsearch.store.folder import Store
from mmsearch.store.reselect import maybe_reselect, reindex

DIM = 32


def add_vectors(store, start, count):
    vectors = ClusteredSphere(dim=DIM, clusters=8, seed=1).rows(start, count)
    import_chunks(store, [ImportChunk(vectors, [f"/data/{i}.jpg" for i in range(start, start + count)])],
                  Modality.IMAGE)
    return vectors


@pytest.fixture
def store(tmp_path, monkeypatch):
    from mmsearch.store import reselect

    monkeypatch.setattr(selection, "FLAT_MAX", 1000)  # so that a few thousand vectors count as "large"
    monkeypatch.setattr(selection, "HNSW_MAX", 2000)
    # the CPU choices, also on a machine with a GPU (where exact search on the GPU would be chosen)
    monkeypatch.setattr(reselect, "_machine", lambda: {"faiss_gpus": 0, "torch_cuda": False})
    with Store.open(tmp_path / "store", create=True) as opened:
        opened.acquire_writer()
        bind_import_model(opened, Modality.IMAGE, "test-tiny:random", DIM, "test")
        yield opened


def test_growth_triggers_reselection_and_a_rebuild(store):
    add_vectors(store, 0, 400)
    first = maybe_reselect(store, Modality.IMAGE)
    assert first.kind == "flat" and first.n_vectors == 400
    assert maybe_reselect(store, Modality.IMAGE) is None  # nothing changed
    add_vectors(store, 400, 800)  # 1200 < 4 x 400: no re-selection yet
    assert maybe_reselect(store, Modality.IMAGE) is None
    assert len(store.index(Modality.IMAGE)) == 1200  # the flat index caught up from the stored vectors
    add_vectors(store, 1200, 2000)  # 3200 >= 4 x 400
    choice = maybe_reselect(store, Modality.IMAGE)
    assert choice.kind == "ivf-flat" and choice.n_vectors == 3200 and "nprobe=" in choice.reason
    assert "recall@10" in choice.reason
    recorded = store.index_choice(Modality.IMAGE)
    assert recorded.kind == "ivf-flat" and recorded.params["nprobe"] == choice.params["nprobe"]
    on_disk = open_index(store.index_path(Modality.IMAGE))
    assert on_disk.kind == "ivf-flat" and len(on_disk) == 3200
    assert "ivf-flat" in store.describe_index(Modality.IMAGE, store.index(Modality.IMAGE))


def test_tuned_index_keeps_its_recall_on_new_queries(store):
    vectors = add_vectors(store, 0, 3000)
    choice = reindex(store, Modality.IMAGE, "auto")
    assert choice.kind == "ivf-flat"  # 3,000 vectors: past HNSW_MAX, and full vectors fit the budget
    index = store.index(Modality.IMAGE)
    queries = ClusteredSphere(dim=DIM, clusters=8, seed=1).queries(50)
    ids = store.catalog.segment_ids(Modality.IMAGE)
    truth = exact_top_k(queries, vectors, ids, 10)
    assert recall_at_k(index.search(queries, 10).ids, truth.ids, 10) >= 0.9


def test_a_type_chosen_by_hand_is_kept_as_the_collection_grows(store):
    add_vectors(store, 0, 300)
    choice = reindex(store, Modality.IMAGE, "hnsw")
    assert choice.mode == "manual" and choice.kind == "hnsw"
    add_vectors(store, 300, 1000)
    again = maybe_reselect(store, Modality.IMAGE)
    assert again.kind == "hnsw" and again.mode == "manual" and again.n_vectors == 1300


def test_a_missing_trained_index_is_rebuilt_from_stored_vectors(store):
    add_vectors(store, 0, 2000)
    reindex(store, Modality.IMAGE, "ivf-pq")
    store.save_indexes()
    store.index_path(Modality.IMAGE).unlink()
    store._indexes.clear()
    index = store.index(Modality.IMAGE)
    assert index.kind == "ivf-pq" and index.is_trained and len(index) == 2000


def test_reindex_and_status_through_the_cli(store, tmp_path):
    from mmsearch_cli.app import app

    add_vectors(store, 0, 500)
    store.release_writer()
    runner = CliRunner()
    result = runner.invoke(app, ["reindex", "--index-type", "ivf-flat", "--store", str(store.path), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["image"]
    assert shown["kind"] == "ivf-flat" and shown["mode"] == "manual" and shown["params"]["nlist"] >= 1
    status = runner.invoke(app, ["status", "--store", str(store.path)])
    assert status.exit_code == 0 and "ivf-flat" in status.stdout and "by hand" in status.stdout
    bad = runner.invoke(app, ["reindex", "--index-type", "annoy", "--store", str(store.path)])
    assert bad.exit_code == 2 and "--index-type" in bad.stderr


def test_reading_stored_vectors_in_chunks_never_sorts_the_rest(store):
    """An index build reads every stored vector a chunk at a time; each chunk must be a range read on an
    index (no sort of every remaining row: that made a 10M build quadratic)."""
    import sqlite3

    from mmsearch.store.reads import VECTOR_CHUNK_SQL

    vectors = add_vectors(store, 0, 700)
    chunks = list(store.catalog.iter_vectors(Modality.IMAGE, DIM, chunk=64))
    ids = np.concatenate([c[0] for c in chunks])
    assert len(chunks) == 11 and np.array_equal(ids, np.sort(store.catalog.segment_ids(Modality.IMAGE)))
    assert np.allclose(np.vstack([c[1] for c in chunks]), vectors)
    with sqlite3.connect(store.catalog.path) as conn:
        plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + VECTOR_CHUNK_SQL, ("image", 5, 64)))
    assert "TEMP B-TREE" not in plan and "ix_segments_modality" in plan


def test_background_reselection_swaps_in_a_caught_up_index_while_vectors_keep_coming(store, monkeypatch):
    """An index run that grows the collection several-fold gets the new index type built on a thread while
    it keeps adding; at the swap the new index catches up with what was committed (and deleted) meanwhile."""
    import threading

    from mmsearch.store import reselect as reselection
    from mmsearch.store.reselect import BackgroundReselect

    gate, started = threading.Event(), threading.Event()
    real_build = reselection.build_index

    def gated_build(*args, **kwargs):
        started.set()
        assert gate.wait(30)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(reselection, "build_index", gated_build)
    reselect = BackgroundReselect(store)

    def grow(start, count):  # what an index run does per batch: commit, add to the live index, check
        add_vectors(store, start, count)
        index = store.index(Modality.IMAGE)
        store.reconcile(Modality.IMAGE, index)  # the run adds what it commits to its live index
        reselect.check(Modality.IMAGE, len(index))
        return index

    live = grow(0, 300)
    assert store.index_choice(Modality.IMAGE).kind == "flat" and not started.is_set()  # exact: only recorded
    live = grow(300, 1300)  # 1,600 >= 4 x 300: an hnsw build starts in the background
    assert started.wait(30)
    live = grow(1600, 200)  # the run goes on with the current (flat) index meanwhile
    assert live.kind == "flat" and len(live) == 1800
    with store.catalog.transaction() as write:
        gone = write.delete_items(list(range(1, 51)))[Modality.IMAGE]
    live.remove(np.asarray(gone))
    gate.set()
    reselect.finish()
    index = store.index(Modality.IMAGE)
    assert index.kind == "hnsw" and len(index) == 1750
    assert set(index.ids().tolist()) == set(store.catalog.segment_ids(Modality.IMAGE).tolist())
    recorded = store.index_choice(Modality.IMAGE)
    assert recorded.kind == "hnsw" and recorded.n_vectors == 1750
    assert open_index(store.index_path(Modality.IMAGE)).kind == "hnsw"  # the file was swapped too
    assert len(reselect.notes) == 1 and "background" in reselect.notes[0] and "1,600" in reselect.notes[0]
    queries = ClusteredSphere(dim=DIM, clusters=8, seed=1).queries(20)
    ids = store.catalog.segment_ids(Modality.IMAGE)
    stored = store.vector_source(Modality.IMAGE)(ids)[1]
    assert recall_at_k(index.search(queries, 10).ids, exact_top_k(queries, stored, ids, 10).ids, 10) >= 0.9


def test_a_failed_background_build_keeps_the_current_index(store, monkeypatch):
    from mmsearch.store import reselect as reselection
    from mmsearch.store.reselect import BackgroundReselect

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise MemoryError("out of memory")

    monkeypatch.setattr(reselection, "build_index", broken)
    reselect = BackgroundReselect(store)
    add_vectors(store, 0, 1600)
    reselect.check(Modality.IMAGE, len(store.index(Modality.IMAGE)))
    reselect.finish()
    reselect.check(Modality.IMAGE, len(store.index(Modality.IMAGE)))  # not tried again during the run
    reselect.finish()
    assert len(calls) == 1 and len(reselect.notes) == 1
    assert store.index(Modality.IMAGE).kind == "flat" and len(store.index(Modality.IMAGE)) == 1600
    assert store.index_choice(Modality.IMAGE) is None and "failed" in reselect.notes[0]


def test_opening_a_store_checks_the_index_against_the_catalog_cheaply_and_reconciles_when_it_differs(
        store, monkeypatch):
    """A saved index in step with the catalog is used as is (listing 10M ids to compare takes 15 s); one
    that missed commits (a writer killed before saving) is brought up to date from the stored vectors."""
    from mmsearch.store.folder import Store

    add_vectors(store, 0, 500)
    store.index(Modality.IMAGE)
    store.save_indexes()
    path = store.path
    store.close()
    calls = []
    real = Store.reconcile
    monkeypatch.setattr(Store, "reconcile", lambda self, m, i: calls.append(m) or real(self, m, i))

    def reopen():
        with Store.open(path) as opened:
            index = opened.index(Modality.IMAGE)
            assert set(index.ids().tolist()) == set(opened.catalog.segment_ids(Modality.IMAGE).tolist())
            return len(index)

    assert reopen() == 500 and calls == []  # in step: no reconcile
    with Store.open(path) as opened:  # catalog commits the saved index never saw: a deletion...
        opened.acquire_writer()
        with opened.catalog.transaction() as write:
            write.delete_items([3])
    assert reopen() == 499 and calls == [Modality.IMAGE]
    with Store.open(path) as opened:  # ...then an addition: the count is the saved index's again (500)
        opened.acquire_writer()
        add_vectors(opened, 900, 1)
    assert reopen() == 500 and len(calls) == 2
