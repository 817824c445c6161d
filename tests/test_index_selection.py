"""Choosing the index type: the pure rule by size, budget and GPUs; recording it in a store; re-choosing
after several-fold growth; `mmsearch reindex` and `mmsearch status` through the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsearch import index_selection as selection
from mmsearch.errors import UsageError
from mmsearch.importer import ImportChunk, bind_import_model, import_chunks
from mmsearch.index_builder import maybe_reselect, reindex
from mmsearch.index_selection import GiB, choose_index, estimate_bytes, needs_reselect, nlist_for, parse_memory_size
from mmsearch.records import Modality
from mmsearch.store import Store
from mmsearch.synthetic import ClusteredSphere
from mmsearch.vector_index import exact_top_k, load_index

DIM = 32


@pytest.mark.parametrize("text, expected", [("8GiB", 8 * GiB), ("512 MiB", 512 << 20), ("2G", 2 * 10**9),
                                            ("1.5gib", int(1.5 * GiB)), ("1000", 1000), (4096, 4096)])
def test_parse_memory_size(text, expected):
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "8 parsecs", "-1GiB", "0"])
def test_parse_memory_size_refuses(text):
    with pytest.raises(UsageError, match="--memory-budget"):
        parse_memory_size(text)


def test_small_collections_get_exact_search():
    choice = choose_index(50_000, 512, 8 * GiB)
    assert choice.kind == "flat" and "exact" in choice.reason and "50,000" in choice.reason


def test_middle_sizes_get_a_graph_or_inverted_lists():
    assert choose_index(300_000, 512, 8 * GiB).kind == "hnsw"
    choice = choose_index(1_000_000, 512, 8 * GiB)
    assert choice.kind == "ivf-flat" and choice.params["nlist"] == 4096
    assert choice.estimated_bytes <= 4 * GiB


def test_ten_million_gets_pq_codes_that_fit_the_budget():
    choice = choose_index(10_000_000, 512, 8 * GiB)
    assert choice.kind == "ivf-pq"
    assert choice.params["nlist"] == nlist_for(10_000_000) == 4096
    assert 512 % choice.params["m"] == 0 and choice.params["m"] == 128  # 4 dimensions per code byte
    assert choice.estimated_bytes <= 4 * GiB and "re-ranked" in choice.reason
    tight = choose_index(10_000_000, 512, 1 * GiB)
    assert tight.kind == "ivf-pq" and tight.params["m"] < choice.params["m"]
    assert estimate_bytes("ivf-pq", 10_000_000, 512, tight.params) <= GiB // 2


def test_a_small_budget_pushes_towards_compression():
    assert choose_index(100_000, 512, 256 << 20).kind == "ivf-pq"


def test_gpus_get_exact_search_on_the_gpu():
    assert choose_index(2_000_000, 512, 64 * GiB, faiss_gpus=1).kind == "gpu-flat"
    assert choose_index(2_000_000, 512, 64 * GiB, torch_cuda=True).kind == "torch-flat"
    assert choose_index(100_000_000, 512, 64 * GiB, torch_cuda=True).kind == "ivf-pq"


def test_nlist_is_about_four_square_roots_with_enough_training_points():
    assert nlist_for(1_000_000) == 4096 and nlist_for(10) == 1
    assert nlist_for(100_000_000) == 4096  # capped: every added vector is compared with every centroid
    assert all(n // nlist_for(n) >= 39 for n in (100, 1000, 5000, 20_000))


def test_reselect_only_after_several_fold_change():
    recorded = choose_index(1000, DIM)
    assert needs_reselect(None, 10)
    assert not needs_reselect(recorded, 3999) and needs_reselect(recorded, 4000)
    assert needs_reselect(recorded, 250) and not needs_reselect(recorded, 251)


# -- in a store ----------------------------------------------------------------------------------------
def add_vectors(store, start, count):
    vectors = ClusteredSphere(dim=DIM, clusters=8, seed=1).rows(start, count)
    import_chunks(store, [ImportChunk(vectors, [f"/data/{i}.jpg" for i in range(start, start + count)])],
                  Modality.IMAGE)
    return vectors


@pytest.fixture
def store(tmp_path, monkeypatch):
    from mmsearch import index_builder

    monkeypatch.setattr(selection, "FLAT_MAX", 1000)  # so that a few thousand vectors count as "large"
    monkeypatch.setattr(selection, "HNSW_MAX", 2000)
    # the CPU choices, also on a machine with a GPU (where exact search on the GPU would be chosen)
    monkeypatch.setattr(index_builder, "_machine", lambda: {"faiss_gpus": 0, "torch_cuda": False})
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
    on_disk = load_index(store.index_path(Modality.IMAGE))
    assert on_disk.kind == "ivf-flat" and len(on_disk) == 3200
    assert "ivf-flat" in store.describe_index(Modality.IMAGE, store.index(Modality.IMAGE))


def test_tuned_index_keeps_its_recall_on_new_queries(store):
    vectors = add_vectors(store, 0, 3000)
    choice = reindex(store, Modality.IMAGE, "auto")
    assert choice.kind == "hnsw" or choice.kind == "ivf-flat"
    index = store.index(Modality.IMAGE)
    queries = ClusteredSphere(dim=DIM, clusters=8, seed=1).queries(50)
    ids = store.catalog.segment_ids(Modality.IMAGE)
    truth = exact_top_k(queries, vectors, ids, 10)
    from mmsearch.index_builder import recall_at_k

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


def test_bench_ann_cli_on_synthetic_data():
    import typer

    from mmsearch_cli.bench_ann import ann

    app = typer.Typer()
    app.command("ann")(ann)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["ann", "--synthetic", "3000", "--dim", "16", "--queries", "50", "--types",
                                      "flat,ivf-flat", "--seconds", "0.05", "--no-blas-sweep", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "clustered" in report["data"]
    rows = {r["kind"]: r for r in report["results"]}
    assert rows["flat"]["recall_at_10"] == 1.0 and rows["ivf-flat"]["recall_at_10"] >= 0.9
    assert rows["ivf-flat"]["qps_batch1"] > 0 and rows["ivf-flat"]["index_bytes"] > 0


def test_reading_stored_vectors_in_chunks_never_sorts_the_rest(store):
    """An index build reads every stored vector a chunk at a time; each chunk must be a range read on an
    index (no sort of every remaining row: that made a 10M build quadratic)."""
    from mmsearch.catalog import vector_chunk_query

    vectors = add_vectors(store, 0, 700)
    chunks = list(store.catalog.iter_vectors(Modality.IMAGE, DIM, chunk=64))
    ids = np.concatenate([c[0] for c in chunks])
    assert len(chunks) == 11 and np.array_equal(ids, np.sort(store.catalog.segment_ids(Modality.IMAGE)))
    assert np.allclose(np.vstack([c[1] for c in chunks]), vectors)
    sql = str(vector_chunk_query(Modality.IMAGE, 5, 64).compile(store.catalog.engine,
                                                                 compile_kwargs={"literal_binds": True}))
    with store.catalog.engine.connect() as conn:
        plan = " ".join(str(row) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "TEMP B-TREE" not in plan and "ix_segments_modality" in plan


def test_background_reselection_swaps_in_a_caught_up_index_while_vectors_keep_coming(store, monkeypatch):
    """An index run that grows the collection several-fold gets the new index type built on a thread while
    it keeps adding; at the swap the new index catches up with what was committed (and deleted) meanwhile."""
    import threading

    from mmsearch import index_builder
    from mmsearch.index_builder import BackgroundReselect

    gate, started = threading.Event(), threading.Event()
    real_build = index_builder.build_from_store

    def gated_build(*args, **kwargs):
        started.set()
        assert gate.wait(30)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(index_builder, "build_from_store", gated_build)
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
    with store.catalog.transaction() as conn:
        gone = store.catalog.delete_items(conn, list(range(1, 51)))[Modality.IMAGE]
    live.remove(np.asarray(gone))
    gate.set()
    reselect.finish()
    index = store.index(Modality.IMAGE)
    assert index.kind == "hnsw" and len(index) == 1750
    assert set(index.ids().tolist()) == set(store.catalog.segment_ids(Modality.IMAGE).tolist())
    recorded = store.index_choice(Modality.IMAGE)
    assert recorded.kind == "hnsw" and recorded.n_vectors == 1750
    assert load_index(store.index_path(Modality.IMAGE)).kind == "hnsw"  # the file was swapped too
    assert len(reselect.notes) == 1 and "background" in reselect.notes[0] and "1,600" in reselect.notes[0]
    queries = ClusteredSphere(dim=DIM, clusters=8, seed=1).queries(20)
    ids = store.catalog.segment_ids(Modality.IMAGE)
    stored = store.vector_source(Modality.IMAGE)(ids)[1]
    from mmsearch.index_builder import recall_at_k

    assert recall_at_k(index.search(queries, 10).ids, exact_top_k(queries, stored, ids, 10).ids, 10) >= 0.9


def test_a_failed_background_build_keeps_the_current_index(store, monkeypatch):
    from mmsearch import index_builder
    from mmsearch.index_builder import BackgroundReselect

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise MemoryError("out of memory")

    monkeypatch.setattr(index_builder, "build_from_store", broken)
    reselect = BackgroundReselect(store)
    add_vectors(store, 0, 1600)
    reselect.check(Modality.IMAGE, len(store.index(Modality.IMAGE)))
    reselect.finish()
    reselect.check(Modality.IMAGE, len(store.index(Modality.IMAGE)))  # not tried again during the run
    reselect.finish()
    assert len(calls) == 1 and len(reselect.notes) == 1
    assert store.index(Modality.IMAGE).kind == "flat" and len(store.index(Modality.IMAGE)) == 1600
    assert store.index_choice(Modality.IMAGE) is None and "failed" in reselect.notes[0]


def test_ivf_pq_tuning_re_ranks_as_few_stored_vectors_as_reach_the_target():
    """Each candidate IVF-PQ re-ranks is a stored vector read from the catalog (from disk when cold): tuning
    keeps the smallest re-ranking factor that still reaches the recall target, and keeps the default when
    the codes are too coarse for fewer."""
    from mmsearch.index_builder import TARGET_RECALL, recall_at_k, tune
    from mmsearch.vector_index import create_index

    space = ClusteredSphere(dim=DIM, clusters=8, seed=1)
    base, ids = space.rows(0, 4000), np.arange(4000, dtype=np.int64) * 3 + 1
    queries = space.rows(4000, 100)
    truth = exact_top_k(queries, base, ids, 10).ids
    reads = []

    def source(wanted):
        reads.append(len(wanted))
        at = (np.asarray(wanted) - 1) // 3
        return np.asarray(wanted), base[at]

    chosen, notes = {}, {}
    for m in (16, 1):  # 2 dimensions per code byte (close to exact), then all 32 in one byte (coarse)
        index = create_index("ivf-pq", DIM, {"nlist": 16, "nprobe": 1, "m": m, "nbits": 8, "rerank": 10}, source=source)
        index.train(base)
        index.add(ids, base)
        recall, note = tune(index, queries, None, truth)
        chosen[m], notes[m] = index.params["rerank"], note
        assert recall >= TARGET_RECALL or chosen[m] == 40
        reads.clear()
        assert recall_at_k(index.search(queries, 10).ids, truth, 10) == recall
        assert max(reads) <= 10 * chosen[m] * len(queries)
    assert chosen[16] < 10 and f"rerank={chosen[16]}" in notes[16]
    assert chosen[1] >= 10 and "rerank=" not in notes[1]


def test_opening_a_store_checks_the_index_against_the_catalog_cheaply_and_reconciles_when_it_differs(
        store, monkeypatch):
    """A saved index in step with the catalog is used as is (listing 10M ids to compare takes 15 s); one
    that missed commits (a writer killed before saving) is brought up to date from the stored vectors."""
    from mmsearch.store import Store

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
        with opened.catalog.transaction() as conn:
            opened.catalog.delete_items(conn, [3])
    assert reopen() == 499 and calls == [Modality.IMAGE]
    with Store.open(path) as opened:  # ...then an addition: the count is the saved index's again (500)
        opened.acquire_writer()
        add_vectors(opened, 900, 1)
    assert reopen() == 500 and len(calls) == 2
