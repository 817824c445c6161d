"""The Milvus backend beyond the shared contract (tests/index/test_backend_contract.py runs that over it too):
exact search equal to FAISS's, each index type built for real on sealed segments and held to its recall
against exact search, filters as Milvus expressions, and a server that is not there."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from mmsearch.bench.synthetic import ClusteredSphere
from mmsearch.errors import BackendError
from mmsearch.index.exact import exact_top_k, recall_at_k
from mmsearch.index.factory import create_index
from mmsearch.index.milvus_client import expression, glob_expression, normalise_uri
from mmsearch.index.predicate import Predicate

DIM = 32
N = 3000
K = 10


@pytest.fixture(scope="module")
def data():
    space = ClusteredSphere(dim=DIM, clusters=16, seed=11)
    return space.rows(0, N), np.arange(5_000, 5_000 + N, dtype=np.int64), space.queries(50)


def source_for(base, ids):
    """Stored vectors by id, as a store's catalog gives them back (what IVF-PQ re-ranks with)."""
    row_of = {int(i): n for n, i in enumerate(ids)}

    def fetch(wanted):
        found = np.asarray([i for i in np.asarray(wanted).tolist() if i in row_of], np.int64)
        return found, base[[row_of[i] for i in found.tolist()]].reshape(len(found), DIM)
    return fetch


@pytest.fixture(scope="module")
def filled(milvus_uri, data):
    """One collection of the clustered vectors, flushed (sealed segments, where Milvus builds its indexes)."""
    from mmsearch.index.milvus import open_collection

    base, ids, _ = data
    backend = open_collection(milvus_uri, "unit_filled", "flat", DIM, source=source_for(base, ids))
    backend.remove(backend.ids())
    backend.add(ids, base)
    backend.flush()
    yield backend
    backend.drop()
    backend.close()


def test_flat_equals_faiss_flat(filled, data):
    base, ids, queries = data
    filled.rebuild_as("flat", {})
    faiss = create_index("flat", DIM)
    faiss.add(ids, base)
    mine, theirs = filled.search(queries, K), faiss.search(queries, K)
    assert np.array_equal(mine.ids, theirs.ids)
    np.testing.assert_allclose(mine.scores, theirs.scores, atol=1e-5)
    allowed = ids[::7]
    assert np.array_equal(filled.search(queries, K, allowed_ids=allowed).ids,
                          faiss.search(queries, K, allowed_ids=allowed).ids)


def test_writes_are_idempotent_and_counted(filled, data):
    base, ids, _ = data
    filled.rebuild_as("flat", {})
    filled.add(ids[:100], base[:100])  # again: upserted, not doubled
    assert len(filled) == N and filled.holds_exactly(N, int(ids[-1]))
    assert not filled.holds_exactly(N, int(ids[-2]))
    found, vectors = filled.vectors_of(ids[[5, 1, 3]])
    assert np.array_equal(found, ids[[1, 3, 5]])
    np.testing.assert_allclose(vectors, base[[1, 3, 5]], atol=1e-6)


@pytest.mark.parametrize("kind, params, floor", [
    ("ivf-flat", {"nlist": 32, "nprobe": 8}, 0.9),
    ("hnsw", {"M": 16, "efConstruction": 64, "efSearch": 64}, 0.9),
    ("ivf-pq", {"nlist": 32, "nprobe": 8, "m": 8, "nbits": 8, "rerank": 10}, 0.85),  # re-ranked: stored vectors
])
def test_each_index_type_is_built_on_the_server_and_recalls(milvus_uri, data, kind, params, floor):
    """A fresh collection per type, its index built on sealed segments (flushed), as ``reindex`` does."""
    from mmsearch.index.milvus import open_collection

    base, ids, queries = data
    filled = open_collection(milvus_uri, f"unit_{kind.replace('-', '_')}", "flat", DIM, source=source_for(base, ids))
    filled.remove(filled.ids())
    filled.add(ids, base)
    filled.rebuild_as(kind, params)
    built = filled._collection.indexes[0].params
    assert built["index_type"] == {"ivf-flat": "IVF_FLAT", "hnsw": "HNSW", "ivf-pq": "IVF_PQ"}[kind]
    truth = exact_top_k(queries, base, ids, K)
    assert recall_at_k(filled.search(queries, K).ids, truth.ids, K) >= floor
    if kind == "ivf-flat":  # the search parameter reaches the server
        filled.set_param("nprobe", 32)
        assert recall_at_k(filled.search(queries, K).ids, truth.ids, K) == 1.0
        filled.set_param("nprobe", 1)
        assert recall_at_k(filled.search(queries, K).ids, truth.ids, K) < 1.0
    assert f"Milvus {built['index_type']}" in filled.describe() and "approximate" in filled.describe()
    filled.drop()
    filled.close()


def test_filters_become_milvus_expressions():
    assert glob_expression("/photos/2021/*") == 'path like "/photos/2021/%"'
    assert glob_expression("/my_photos/*") == 'path like "/my_photos/%"'  # Milvus 2.3: `_` is literal in like
    assert glob_expression("/my_photos/*", literal_underscore=False) is None  # later servers: a wildcard
    assert glob_expression("/photos/a.jpg") == 'path == "/photos/a.jpg"'
    assert glob_expression('/odd "name"/x') == 'path == "/odd \\"name\\"/x"'
    for inexpressible in ("*/a.jpg", "/photos/*.jpg", "/photos/?.jpg", "/photos/[ab]*", "/100%/*"):
        assert glob_expression(inexpressible) is None
    assert expression(Predicate(path_glob="/p/*", modified_ns=(5, None), file_kind="video")) == \
        '(path like "/p/%") and (mtime_ns >= 5) and (kind == "video")'
    assert expression(Predicate(duration=(None, 30.0))) == "(duration >= 0) and (duration <= 30.0)"
    assert expression(Predicate(path_glob="*/x")) is None
    assert normalise_uri("localhost:19530") == "http://localhost:19530"


def test_a_server_that_is_not_there_fails_fast_with_one_line():
    from mmsearch.index.milvus import open_collection

    with socket.socket() as probe:  # a closed port on this machine (nothing else is ever contacted)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BackendError) as raised:
        open_collection(f"127.0.0.1:{port}", "never", "flat", DIM)
    assert time.monotonic() - started < 15  # CONNECT_TIMEOUT is 3 s: no retry loop
    message = str(raised.value)
    assert message.startswith(f"Milvus at http://127.0.0.1:{port}: cannot connect") and "\n" not in message
