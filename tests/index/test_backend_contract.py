"""The vector-backend contract (``mmsearch.index.backend``), written once and run over every implementation:
each FAISS and torch type this machine can run, and the GPU types' master/replica logic with a CPU copy
standing in for the device. Exact types must return exactly what exact search returns; approximate ones
are held to their recall against it, on clustered data (never uniform noise)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

import numpy as np
import pytest

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.index.backend import Neighbours, VectorBackend
from mmsearch.index.exact import exact_top_k, recall_at_k
from mmsearch.index.factory import KINDS, create_index, index_class, open_index
from mmsearch.index.gpu import GpuFlatIndex

DIM = 32
N = 3000
K = 10


class ReplicaOnCpu(GpuFlatIndex):
    """The GPU types' master/replica logic, with a CPU copy standing in for the device."""

    kind = "gpu-flat"

    @classmethod
    def available(cls):
        return True

    def _make_replica(self):
        import faiss

        return faiss.clone_index(self._index)


@dataclass(frozen=True)
class Implementation:
    name: str
    kind: str
    params: dict[str, Any]
    exact: bool
    make: Callable[..., VectorBackend] | None = None
    """How to create one (default: ``create_index(kind, ...)``)."""
    milvus: bool = False
    """Served by the session's Milvus server (``make`` is bound to it by the ``implementation`` fixture)."""

    def create(self, source) -> VectorBackend:
        if self.make is not None:
            return self.make(DIM, self.params, source=source)
        return create_index(self.kind, DIM, self.params, source=source)


IMPLEMENTATIONS = [
    Implementation("flat", "flat", {}, exact=True),
    Implementation("torch-flat", "torch-flat", {"device": "cpu"}, exact=True),
    Implementation("ivf-flat", "ivf-flat", {"nlist": 32, "nprobe": 8}, exact=False),
    Implementation("ivf-pq", "ivf-pq", {"nlist": 32, "nprobe": 8, "m": 8, "rerank": 10}, exact=False),
    Implementation("hnsw", "hnsw", {"M": 16, "efConstruction": 40, "efSearch": 64}, exact=False),
    Implementation("gpu-flat", "gpu-flat", {}, exact=True),
    Implementation("gpu-ivf", "gpu-ivf", {"nlist": 32, "nprobe": 8}, exact=False),
    Implementation("cagra", "cagra", {"graph_degree": 32, "intermediate_graph_degree": 64}, exact=False),
    Implementation("replica-on-cpu", "gpu-flat", {}, exact=True, make=ReplicaOnCpu),
    Implementation("milvus-flat", "flat", {}, exact=True, milvus=True),
    Implementation("milvus-hnsw", "hnsw", {"M": 16, "efConstruction": 40, "efSearch": 64}, exact=False, milvus=True),
]


def _param(implementation: Implementation):
    marks = []
    if not implementation.milvus and implementation.make is None and not index_class(implementation.kind).available():
        marks.append(pytest.mark.skip(reason=f"{implementation.kind} needs {index_class(implementation.kind).needs}"))
    return pytest.param(implementation, id=implementation.name, marks=marks)


EVERY = [_param(implementation) for implementation in IMPLEMENTATIONS]
FILE_BACKED = [_param(implementation) for implementation in IMPLEMENTATIONS if not implementation.milvus]
"""What ``save`` writes to a file that ``open_index`` reads back (a Milvus collection is its own storage)."""


def milvus_backend(uri: str, made: list, name: str, kind: str, dim: int, params: dict, *, source=None) -> VectorBackend:
    """A Milvus collection emptied for the test: the same few are reused across tests (a new one takes
    seconds to load)."""
    from mmsearch.index.milvus import open_collection

    backend = open_collection(uri, f"contract_{name.replace('-', '_')}_{len(made)}", kind, dim, params, source=source)
    backend.remove(backend.ids())
    made.append(backend)
    return backend


@pytest.fixture
def implementation(request):
    """The parametrised implementation; a Milvus one is bound to the session's server."""
    chosen = request.param
    if not chosen.milvus:
        yield chosen
        return
    made: list = []
    yield replace(chosen, make=partial(milvus_backend, request.getfixturevalue("milvus_uri"), made, chosen.name,
                                       chosen.kind))
    for backend in made:
        backend.close()


def test_every_index_type_is_covered():
    assert {implementation.kind for implementation in IMPLEMENTATIONS} == set(KINDS)
    # Milvus: the exact type and a graph here; IVF_FLAT and IVF_PQ are built and checked in test_milvus.py
    assert {i.kind for i in IMPLEMENTATIONS if i.milvus} >= {"flat", "hnsw"}


@pytest.fixture(scope="module")
def data():
    space = ClusteredSphere(dim=DIM, clusters=16, seed=3)
    base = space.rows(0, N)
    ids = np.arange(10_000, 10_000 + N, dtype=np.int64)  # catalog ids are not row numbers
    return base, ids, space.queries(40)


def source_for(base, ids):
    """A ``VectorSource`` over the test's vectors, as a store's catalog would give them back."""
    order = np.argsort(ids)

    def fetch(wanted):
        wanted = np.asarray(wanted, np.int64).reshape(-1)
        at = np.clip(np.searchsorted(ids[order], wanted), 0, len(ids) - 1)
        found = ids[order][at] == wanted
        return wanted[found], base[order[at[found]]]
    return fetch


def build(implementation, base, ids) -> VectorBackend:
    backend = implementation.create(source_for(base, ids))
    backend.train(base)
    backend.add(ids, base)
    return backend


def agrees_with_exact(implementation, found: Neighbours, truth: Neighbours, floor: float = 0.9) -> None:
    if implementation.exact:
        assert np.array_equal(found.ids, truth.ids)
        np.testing.assert_allclose(found.scores, truth.scores, atol=1e-4)
    else:
        assert recall_at_k(found.ids, truth.ids, K) >= floor


@pytest.mark.parametrize("implementation", EVERY, indirect=True)
def test_an_empty_backend_answers_with_padding(implementation, data):
    base, ids, queries = data
    backend = implementation.create(source_for(base, ids))
    assert isinstance(backend, VectorBackend)
    assert backend.dim == DIM and len(backend) == 0 and len(backend.ids()) == 0
    found = backend.search(queries[:3], K)
    assert found.ids.shape == (3, 1) and (found.ids == -1).all() and np.isneginf(found.scores).all()
    assert backend.remove(ids[:5]) == 0


@pytest.mark.parametrize("implementation", EVERY, indirect=True)
def test_it_finds_what_exact_search_finds(implementation, data):
    base, ids, queries = data
    backend = build(implementation, base, ids)
    assert len(backend) == N and np.array_equal(backend.ids(), np.sort(ids))
    assert backend.exact == implementation.exact and backend.kind == implementation.kind
    found = backend.search(queries, K)
    assert found.ids.shape == (len(queries), K) and found.ids.dtype == np.int64
    agrees_with_exact(implementation, found, exact_top_k(queries, base, ids, K))
    assert np.all(np.diff(found.scores, axis=1) <= 1e-6)  # best first
    assert implementation.kind in backend.describe()
    assert ("exact" if implementation.exact else "approximate") in backend.describe()


@pytest.mark.parametrize("implementation", EVERY, indirect=True)
def test_asking_for_more_than_it_holds_gives_everything_then_padding(implementation, data):
    base, ids, queries = data
    backend = build(implementation, base[:20], ids[:20])
    found = backend.search(queries[:2], 50)
    assert found.ids.shape[1] >= 20
    held = found.ids[found.ids >= 0]
    assert set(held.tolist()) <= set(ids[:20].tolist())
    if implementation.exact:
        assert [set(row[row >= 0].tolist()) for row in found.ids] == [set(ids[:20].tolist())] * 2


@pytest.mark.parametrize("implementation", EVERY, indirect=True)
def test_removed_ids_never_come_back(implementation, data):
    base, ids, queries = data
    backend = build(implementation, base, ids)
    doomed = ids[::10]  # 10%: below the compaction fraction, so HNSW keeps tombstones
    assert backend.remove(doomed) == len(doomed)
    assert backend.remove(doomed) == 0  # already gone
    kept = ~np.isin(ids, doomed)
    assert len(backend) == int(kept.sum()) and not np.isin(backend.ids(), doomed).any()
    found = backend.search(queries, K)
    assert not np.isin(found.ids, doomed).any()
    agrees_with_exact(implementation, found, exact_top_k(queries, base[kept], ids[kept], K))
    extra = ClusteredSphere(dim=DIM, clusters=16, seed=4).rows(0, 200)
    backend.add(np.arange(50_000, 50_200), extra)
    assert len(backend) == int(kept.sum()) + 200
    every = np.vstack([base[kept], extra])
    every_ids = np.concatenate([ids[kept], np.arange(50_000, 50_200)])
    agrees_with_exact(implementation, backend.search(queries, K), exact_top_k(queries, every, every_ids, K))


@pytest.mark.parametrize("implementation", EVERY, indirect=True)
@pytest.mark.parametrize("share", [0.02, 0.5])
def test_an_id_filter_lets_only_those_ids_through(implementation, share, data):
    """A small filter is answered exactly from stored vectors; a large one inside the backend."""
    base, ids, queries = data
    backend = build(implementation, base, ids)
    backend.remove(ids[1::20])
    allowed = np.sort(np.random.default_rng(5).choice(ids, size=int(N * share), replace=False))
    found = backend.search(queries, K, allowed_ids=allowed)
    live = np.isin(ids, allowed) & ~np.isin(ids, ids[1::20])
    assert np.isin(found.ids[found.ids >= 0], ids[live]).all()
    agrees_with_exact(implementation, found, exact_top_k(queries, base[live], ids[live], K), floor=0.85)
    assert backend.search(queries, K, allowed_ids=np.array([], np.int64)).ids.max() == -1
    few = ids[live][:3]
    small = backend.search(queries[:2], K, allowed_ids=few)
    assert small.ids.shape == (2, 3) and set(small.ids[0]) == set(few)


@pytest.mark.parametrize("implementation", FILE_BACKED, indirect=True)
def test_saved_and_opened_it_is_the_same_backend(implementation, data, tmp_path):
    base, ids, queries = data
    backend = build(implementation, base, ids)
    tunable = {"ivf-flat": ("nprobe", 5), "gpu-ivf": ("nprobe", 5), "ivf-pq": ("rerank", 7),
               "hnsw": ("efSearch", 48), "torch-flat": ("dtype", "float32")}.get(implementation.kind)
    if tunable is not None:
        backend.set_param(*tunable)
    backend.remove(ids[:50])
    path = tmp_path / "image.faiss"
    backend.save(path)
    opened = open_index(path, source=source_for(base, ids))
    if index_class(implementation.kind).available():
        assert opened.kind == implementation.kind
    else:  # the stand-in: its file opens as the CPU type it is saved as on a machine without a GPU
        assert opened.kind == "flat"
    assert opened.params == backend.params
    if implementation.make is None:
        assert type(opened) is type(backend)
    assert len(opened) == len(backend) and np.array_equal(opened.ids(), backend.ids())
    assert np.array_equal(opened.search(queries, K).ids, backend.search(queries, K).ids)


@pytest.mark.parametrize("implementation", FILE_BACKED, indirect=True)
def test_opened_read_only_it_answers_the_same_and_refuses_changes(implementation, data, tmp_path):
    """A searching process maps the index file instead of reading it in (where the type allows)."""
    base, ids, queries = data
    backend = build(implementation, base, ids)
    backend.remove(ids[:30])
    path = tmp_path / "image.faiss"
    backend.save(path)
    mapped = open_index(path, source=source_for(base, ids), read_only=True)
    assert np.array_equal(mapped.ids(), backend.ids())
    assert np.array_equal(mapped.search(queries, K).ids, backend.search(queries, K).ids)
    allowed = ids[40:400]
    assert np.array_equal(mapped.search(queries, K, allowed_ids=allowed).ids,
                          backend.search(queries, K, allowed_ids=allowed).ids)
    if mapped.read_only:
        with pytest.raises(RuntimeError, match="read-only"):
            mapped.add(ids[:1], base[:1])
        with pytest.raises(RuntimeError, match="read-only"):
            mapped.remove(ids[50:51])
