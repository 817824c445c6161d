"""What only some FAISS and torch types do: HNSW tombstones and compaction, sidecars that do not match
their file, GPU types on a machine without a GPU, the GPU replica's bookkeeping, training on the first
vectors added, torch-flat's blocked scan, IVF with a graph quantizer. (What every type does is in
test_backend_contract.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_backend_contract import ReplicaOnCpu

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.errors import UsageError
from mmsearch.index.exact import exact_top_k, recall_at_k
from mmsearch.index.factory import create_index, open_index
from mmsearch.index.faiss_base import TOMBSTONE_FRACTION, sidecar_path
from mmsearch.index.gpu import GpuFlatIndex

DIM = 32
N = 3000
K = 10
PARAMS = {
    "flat": {},
    "torch-flat": {"device": "cpu"},
    "ivf-flat": {"nlist": 32, "nprobe": 8},
    "ivf-pq": {"nlist": 32, "nprobe": 8, "m": 8, "rerank": 10},
    "hnsw": {"M": 16, "efConstruction": 40, "efSearch": 64},
}
EXACT = ("flat", "torch-flat")


@pytest.fixture(scope="module")
def data():
    space = ClusteredSphere(dim=DIM, clusters=16, seed=3)
    return space.rows(0, N), np.arange(10_000, 10_000 + N, dtype=np.int64), space.queries(40)


def source_for(base, ids):
    rows = {int(i): v for i, v in zip(ids, base)}

    def fetch(wanted):
        found = np.array([i for i in np.asarray(wanted, np.int64).tolist() if i in rows], np.int64)
        return found, (np.stack([rows[i] for i in found.tolist()]) if len(found) else np.empty((0, DIM), np.float32))
    return fetch


def build(kind, base, ids):
    index = create_index(kind, DIM, PARAMS[kind], source=source_for(base, ids))
    index.train(base)
    index.add(ids, base)
    return index


def check(found, truth, kind, floor=0.9):
    if kind in EXACT:
        assert np.array_equal(found.ids, truth.ids)
    else:
        assert recall_at_k(found.ids, truth.ids, K) >= floor


def test_hnsw_tombstones_then_compaction(data):
    base, ids, queries = data
    index = build("hnsw", base, ids)
    index.remove(ids[:100])
    assert index.tombstones == 100 and len(index) == N - 100
    index.remove(ids[100:int(N * TOMBSTONE_FRACTION) + 10])  # past the fraction: rebuilt without them
    assert index.tombstones == 0
    gone = ids[:int(N * TOMBSTONE_FRACTION) + 10]
    assert len(index) == N - len(gone) and not np.isin(index.ids(), gone).any()
    kept = ~np.isin(ids, gone)
    found = index.search(queries, K)
    assert not np.isin(found.ids, gone).any()
    check(found, exact_top_k(queries, base[kept], ids[kept], K), "hnsw")


def test_a_stale_sidecar_is_ignored(data, tmp_path):
    base, ids, _ = data
    build("ivf-flat", base, ids).save(tmp_path / "a.faiss")
    build("hnsw", base[:500], ids[:500]).save(tmp_path / "b.faiss")
    sidecar_path(tmp_path / "b.faiss").replace(sidecar_path(tmp_path / "a.faiss"))  # hnsw sidecar, ivf file
    loaded = open_index(tmp_path / "a.faiss")
    assert loaded.kind == "ivf-flat" and loaded.params["nlist"] == 32 and loaded.tombstones == 0


def test_gpu_types_are_refused_without_a_gpu_and_load_as_cpu(data, tmp_path):
    if GpuFlatIndex.available():
        pytest.skip("this machine has a FAISS GPU")
    with pytest.raises(UsageError, match="gpu-flat needs"):
        create_index("gpu-flat", DIM)
    with pytest.raises(UsageError, match="index_type must be auto or one of"):
        create_index("annoy", DIM)
    base, ids, queries = data
    index = build("flat", base, ids)
    path = tmp_path / "image.faiss"
    index.save(path)
    meta = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**meta, "kind": "gpu-flat", "params": {"float16": True}}))
    loaded = open_index(path)
    assert loaded.kind == "flat" and np.array_equal(loaded.search(queries, K).ids, index.search(queries, K).ids)


def test_replica_hides_removed_ids_until_refreshed(data):
    base, ids, queries = data
    index = ReplicaOnCpu(DIM)
    index.add(ids, base)
    assert index.on_gpu
    truth = exact_top_k(queries, base, ids, K)
    assert np.array_equal(index.search(queries, K).ids, truth.ids)
    doomed = np.unique(truth.ids[:, :3])  # the best hits: the replica must over-fetch past them
    index.remove(doomed)
    assert index._replica.ntotal == N  # not re-copied yet: removals are hidden at search time
    kept = ~np.isin(ids, doomed)
    assert np.array_equal(index.search(queries, K).ids, exact_top_k(queries, base[kept], ids[kept], K).ids)
    index.remove(ids[kept][: N // 5])  # past STALE_FRACTION: the replica is rebuilt from the master
    assert index._replica.ntotal == len(index)


def test_an_untrained_index_trains_on_its_first_vectors(data):
    base, ids, queries = data
    index = create_index("ivf-flat", DIM, {"nlist": 4096, "nprobe": 4096})
    index.add(ids[:1000], base[:1000])  # too few for 4096 lists: shrunk to what 1000 vectors can train
    assert index.is_trained and index.params["nlist"] == 1000 // 39
    assert index.params["nprobe"] == index.params["nlist"]
    assert np.array_equal(index.search(queries, K).ids, exact_top_k(queries, base[:1000], ids[:1000], K).ids)


def test_torch_flat_scans_in_blocks_and_merges_to_the_exact_answer(data, monkeypatch):
    """A batch x index too big for one score matrix is scanned a block of vectors at a time."""
    from mmsearch.index import gpu as gpu_indexes

    monkeypatch.setattr(gpu_indexes, "CPU_SCORE_ELEMENTS", 40 * 97)  # 40 queries: blocks of 97 vectors
    base, ids, queries = data
    index = build("torch-flat", base, ids)
    found = index.search(queries, K)
    truth = exact_top_k(queries, base, ids, K)
    assert np.array_equal(found.ids, truth.ids)
    np.testing.assert_allclose(found.scores, truth.scores, atol=1e-5)


@pytest.mark.parametrize("n", [7, 640, 64 * 41 + 5, 100_000])
def test_torch_flat_top_k_through_group_maxima_is_exact(n):
    import torch

    from mmsearch.index.gpu import _top_k

    generator = torch.Generator().manual_seed(n)
    scores = torch.randn(33, n, generator=generator)
    values, positions = _top_k(scores, 10)
    truth = torch.topk(scores, min(10, n), dim=1)
    assert torch.equal(values, truth.values) and torch.equal(positions, truth.indices)
    ties = torch.randint(0, 5, (33, n), generator=generator).float()  # many equal scores
    values, positions = _top_k(ties, 10)
    assert torch.equal(values, torch.topk(ties, min(10, n), dim=1).values)
    assert torch.equal(torch.gather(ties, 1, positions), values)
    assert all(len(set(row)) == len(row) for row in positions.tolist())


def test_torch_flat_grows_in_place_through_many_small_adds_and_removals(data):
    """An index run adds a batch at a time: the replica grows in its spare room, and stays exact."""
    base, ids, queries = data
    index = create_index("torch-flat", DIM, PARAMS["torch-flat"])
    for start in range(0, N, 37):
        index.add(ids[start:start + 37], base[start:start + 37])
    assert index._replica.shape[0] == N and index._spare[0].shape[0] >= N
    check(index.search(queries, K), exact_top_k(queries, base, ids, K), "torch-flat")
    index.remove(ids[:100])
    index.add(ids[:100], base[:100])
    check(index.search(queries, K), exact_top_k(queries, base, ids, K), "torch-flat")


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-pq"])
def test_ivf_with_a_graph_quantizer_finds_neighbours_and_survives_a_reload(kind, data, tmp_path):
    """Large IVF indexes assign vectors to lists through an HNSW graph over the centroids."""
    import faiss

    base, ids, queries = data
    index = create_index(kind, DIM, {**PARAMS[kind], "quantizer": "hnsw"}, source=source_for(base, ids))
    index.train(base)
    index.add(ids, base)
    assert isinstance(faiss.downcast_index(index.faiss_index.quantizer), faiss.IndexHNSW)
    truth = exact_top_k(queries, base, ids, K)
    found = index.search(queries, K)
    check(found, truth, kind)
    index.save(tmp_path / "graph.faiss")
    again = open_index(tmp_path / "graph.faiss", source=source_for(base, ids))
    assert again.params["quantizer"] == "hnsw"
    assert np.array_equal(again.search(queries, K).ids, found.ids)
    assert index.remove(ids[:50]) == 50 and not np.isin(index.search(queries, K).ids, ids[:50]).any()


def test_ten_million_vectors_keep_an_exact_quantizer_over_at_most_4096_lists():
    """Assigning 10M vectors to 16k lists (exactly or through a graph) was what kept a 10M build over an hour."""
    from mmsearch.index.selection import MAX_NLIST, choose_index

    big = choose_index(10_000_000, 512, 8 * 2**30)
    assert big.kind == "ivf-pq" and big.params["nlist"] == MAX_NLIST == 4096 and "quantizer" not in big.params


def test_a_search_leaves_the_threads_count_of_torch_and_faiss_as_it_was(data):
    """A one-query search runs FAISS on one thread, then puts the count back: torch shares the OpenMP
    runtime, and a model run next in the same thread (a query tower, the re-ranking model) keeps its threads."""
    import faiss
    import torch

    base, ids, queries = data
    index = build("flat", base, ids)
    before = (faiss.omp_get_max_threads(), torch.get_num_threads())
    faiss.omp_set_num_threads(2)
    try:
        index.search(queries[:1], K)
        index.search(queries[:1], K, allowed_ids=ids[::3])
        assert (faiss.omp_get_max_threads(), torch.get_num_threads()) == (2, 2)
    finally:
        faiss.omp_set_num_threads(before[0])
