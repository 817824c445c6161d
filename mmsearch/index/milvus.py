"""A ``VectorBackend`` over a Milvus collection (Milvus 2.3 through pymilvus, imported on first use).

One collection holds one modality's vectors of one store and model: the primary key is the catalog's
segment id, the vector is searched by cosine (COSINE: inner product on mmsearch's unit vectors), and each
vector carries its file's attributes (path, modification time, duration, modality) so that a search's
filters run inside Milvus (``search(..., where=Predicate)``, see ``pushes_down``). The index type is one
of mmsearch's (flat, ivf-flat, ivf-pq, hnsw: ``milvus_client.INDEX_TYPES``), re-created in place when the
store re-chooses it (``rebuild_as``).

Writes are idempotent: ``add`` upserts by id (a run killed mid-upload and run again converges), ``remove``
deletes by id. Every read is made at Strong consistency, so a search sees every write made before it.
``save`` writes no file (the catalog stays the source of truth; Milvus logs every acknowledged write).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import numpy as np

from .ann import rerank
from .backend import Neighbours, VectorSource
from .milvus_client import (DEFAULTS, MAX_TOPK, Connection, expression, ids_expression, index_params, milvus_kind,
                            pymilvus, schema, search_params, shown_uri)
from .predicate import AttributeSource, Predicate, SegmentAttributes

log = logging.getLogger(__name__)

UPSERT_BATCH = 2048
STRONG = "Strong"
FUTURE_SLACK_MS = 1000
"""A recorded write timestamp further ahead of this machine's clock than this is not waited for (Strong
reads instead): it came from another server's clock, or a skewed one."""


def collection_name(store_id: str, modality: str, fingerprint: str) -> str:
    """``mmsearch_<store id>_<modality>_<fingerprint[:12]>`` (Milvus names: letters, digits, underscores)."""
    clean = "".join(ch if ch.isalnum() else "_" for ch in fingerprint[:12])
    return f"mmsearch_{store_id}_{modality}_{clean}"


def _padding(n: int, k: int) -> Neighbours:
    return Neighbours(np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64))


class MilvusIndex:
    """A Milvus collection as a ``VectorBackend`` (made by ``open_collection``)."""

    trainable = False
    read_only = False
    remote = True
    """Held by a server: a reader must not reconcile it (the store decides who writes)."""

    def __init__(self, connection: Connection, name: str, kind: str, dim: int, params: Mapping[str, Any] | None = None,
                 *, source: VectorSource | None = None, attributes: AttributeSource | None = None):
        self.connection, self.name, self.dim = connection, name, int(dim)
        self.kind = milvus_kind(kind)
        self.exact = self.kind == "flat"
        self.params: dict[str, Any] = {**DEFAULTS.get(self.kind, {}), **dict(params or {})}
        self.source, self.attributes = source, attributes
        self.written_ts = 0
        """The server timestamp of the newest write known to be in the collection: this backend's own, or the
        store's record of its writer's (``store.backends``). Searches wait for the server to have applied
        it and no more (Milvus's Customized consistency), not for its next time tick as a Strong read does
        (200 ms by default); unknown (0): Strong."""
        module = pymilvus()
        self._collection = connection.call(f"opening collection {name}", lambda: self._open(module))

    def _open(self, module):
        if module.utility.has_collection(self.name, using=self.connection.alias):
            collection = module.Collection(self.name, using=self.connection.alias)
            held = next(f for f in collection.schema.fields if f.name == "vector").params.get("dim")
            if int(held) != self.dim:
                raise ValueError(f"collection {self.name} holds {held}-dimensional vectors, not {self.dim}")
            if not collection.indexes:
                collection.create_index("vector", index_params(self.kind, self.params))
            else:
                built = collection.indexes[0].params
                if built.get("index_type") != index_params(self.kind, self.params)["index_type"]:
                    self._recreate_index(collection)
        else:
            collection = module.Collection(self.name, schema(self.dim), using=self.connection.alias,
                                           consistency_level=STRONG)
            collection.create_index("vector", index_params(self.kind, self.params))
        if str(module.utility.load_state(self.name, using=self.connection.alias)) != "Loaded":
            collection.load()
        return collection

    def _recreate_index(self, collection) -> None:
        collection.release()
        collection.drop_index()
        collection.create_index("vector", index_params(self.kind, self.params))

    # -- what it holds ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        rows = self.connection.call("counting", lambda: self._collection.query(
            "", output_fields=["count(*)"], consistency_level=STRONG))
        return int(rows[0]["count(*)"]) if rows else 0

    def ids(self) -> np.ndarray:
        def every() -> list[int]:
            found: list[int] = []
            iterator = self._collection.query_iterator(batch_size=MAX_TOPK, expr="", output_fields=["id"])
            try:
                while True:
                    batch = iterator.next()
                    if not batch:
                        return found
                    found.extend(int(row["id"]) for row in batch)
            finally:
                iterator.close()
        return np.sort(np.asarray(self.connection.call("listing ids", every), dtype=np.int64))

    def holds_exactly(self, count: int, newest: int) -> bool:
        """Whether it holds ``count`` vectors, ``newest`` the highest id: what ``Store.in_step`` checks, in two
        requests instead of listing every id (primary keys are unique, so nothing is held twice)."""
        if len(self) != count:
            return False
        if count == 0:
            return True
        rows = self.connection.call("reading ids", lambda: self._collection.query(
            f"id >= {int(newest)}", output_fields=["id"], limit=2, consistency_level=STRONG))
        return [int(row["id"]) for row in rows] == [int(newest)]

    def vectors_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.unique(np.asarray(ids, np.int64).reshape(-1))
        rows: list[dict] = []
        for start in range(0, len(ids), MAX_TOPK):
            chunk = ids[start:start + MAX_TOPK]
            rows += self.connection.call("reading vectors", lambda: self._collection.query(
                ids_expression(chunk), output_fields=["vector"], consistency_level=STRONG))
        rows.sort(key=lambda row: row["id"])
        found = np.fromiter((row["id"] for row in rows), np.int64, count=len(rows))
        matrix = np.asarray([row["vector"] for row in rows], np.float32).reshape(len(rows), self.dim)
        return found, matrix

    def attributes_of(self, ids: np.ndarray) -> dict[int, tuple[str, int, float, str]]:
        """id -> (path, mtime_ns, duration, kind) as Milvus holds them (what verify compares)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        found: dict[int, tuple[str, int, float, str]] = {}
        for start in range(0, len(ids), MAX_TOPK):
            chunk = ids[start:start + MAX_TOPK]
            for row in self.connection.call("reading attributes", lambda: self._collection.query(
                    ids_expression(chunk), output_fields=["path", "mtime_ns", "duration", "kind"],
                    consistency_level=STRONG)):
                found[int(row["id"])] = (row["path"], int(row["mtime_ns"]), float(row["duration"]), row["kind"])
        return found

    # -- changing it -----------------------------------------------------------------------------------------
    def train(self, vectors: np.ndarray) -> None:
        """Nothing to do: Milvus trains its index on the vectors it holds."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Upsert (n, dim) vectors under ``ids``, each with its file's attributes (idempotent)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(len(ids), self.dim)
        if not len(ids):
            return
        _, last = np.unique(ids[::-1], return_index=True)  # an id given twice: its last vector
        keep = np.sort(len(ids) - 1 - last)
        ids, vectors = ids[keep], vectors[keep]
        for start in range(0, len(ids), UPSERT_BATCH):
            chunk = ids[start:start + UPSERT_BATCH]
            about = self.attributes(chunk) if self.attributes is not None else SegmentAttributes.blank(chunk)
            rows = [chunk.tolist(), vectors[start:start + UPSERT_BATCH].tolist(), list(about.paths),
                    [int(t) for t in about.mtime_ns], [float(d) for d in about.durations], list(about.kinds)]
            self._wrote(self.connection.call("uploading vectors", lambda: self._collection.upsert(rows)))

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, np.int64).reshape(-1))
        removed = 0
        for start in range(0, len(ids), MAX_TOPK):
            chunk = ids[start:start + MAX_TOPK]
            held = self.connection.call("reading ids", lambda: self._collection.query(
                ids_expression(chunk), output_fields=["id"], consistency_level=STRONG))
            if held:
                doomed = [int(row["id"]) for row in held]
                self.connection.call("deleting vectors", lambda: self._collection.delete(ids_expression(doomed)))
                self.written_ts = 0  # Milvus 2.3 dates no delete: Strong reads until the next upsert (dated after it)
                removed += len(doomed)
        return removed

    def _wrote(self, result) -> None:
        self.written_ts = max(self.written_ts, int(getattr(result, "timestamp", 0) or 0))

    def _consistency(self) -> dict[str, Any]:
        """Read-your-writes for a search: wait for ``written_ts`` alone where it is known and plausible."""
        if self.written_ts and (self.written_ts >> 18) <= time.time() * 1000 + FUTURE_SLACK_MS:  # hybrid ts: ms << 18
            return {"consistency_level": "Customized", "guarantee_timestamp": self.written_ts}
        return {"consistency_level": STRONG}

    def set_param(self, name: str, value: Any) -> None:
        self.params[name] = value

    def rebuild_as(self, kind: str, params: Mapping[str, Any]) -> None:
        """Re-create the collection's index as ``kind`` with ``params`` (the vectors stay); search parameters
        alone are just set."""
        wanted = {**DEFAULTS.get(milvus_kind(kind), {}), **dict(params)}
        if index_params(milvus_kind(kind), wanted) == index_params(self.kind, self.params):
            self.params = wanted
            return
        self.kind = milvus_kind(kind)
        self.exact = self.kind == "flat"
        self.params = {**DEFAULTS.get(self.kind, {}), **dict(params)}
        def rebuild() -> None:
            self._collection.flush()  # sealed first: the new index is built over everything
            self._recreate_index(self._collection)
            pymilvus().utility.wait_for_index_building_complete(self.name, using=self.connection.alias)
            self._collection.load()
        self.connection.call("re-creating the index", rebuild)

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        self.connection.call(f"dropping collection {self.name}", self._collection.drop)

    # -- searching -------------------------------------------------------------------------------------------
    def pushes_down(self, predicate: Predicate) -> bool:
        """Whether ``search(..., where=predicate)`` applies it exactly (else give ``allowed_ids``)."""
        return self._expression(predicate) is not None

    def _expression(self, predicate: Predicate) -> str | None:
        return expression(predicate, literal_underscore=self.connection.like_takes_underscore_literally())

    def search(self, queries, k: int, allowed_ids: np.ndarray | None = None,
               where: Predicate | None = None) -> Neighbours:
        """As the protocol says, in one request (no count first: every Strong read waits for the server's next
        time tick); the columns are as many as the fullest row came back with, at least one."""
        queries = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        k = max(1, int(k))
        filters = []
        if where is not None:
            clause = self._expression(where)
            if clause is None:
                raise ValueError("this predicate cannot be pushed down to Milvus (check pushes_down first)")
            if clause:
                filters.append(clause)
        if allowed_ids is not None:
            allowed = np.unique(np.asarray(allowed_ids, np.int64))
            if not len(allowed):
                return _padding(len(queries), 1)
            k = min(k, len(allowed))
            chunks = [allowed[start:start + MAX_TOPK] for start in range(0, len(allowed), MAX_TOPK)]
            found = [self._search(queries, k, " and ".join(filters + [f"({ids_expression(c)})"])) for c in chunks]
            return _trimmed(found[0] if len(found) == 1 else _merge(found, k))
        return _trimmed(self._search(queries, k, " and ".join(filters)))

    def _search(self, queries: np.ndarray, k: int, expr: str) -> Neighbours:
        """Top-``k`` under ``expr``; ivf-pq, like FAISS's, takes ``k * rerank`` candidates from the codes and
        re-ranks them exactly with the stored vectors (``source``), where it has them."""
        wanted = k
        if self.kind == "ivf-pq" and self.source is not None:
            k = k * int(self.params.get("rerank", 10))
        limit = min(k, MAX_TOPK)
        results = self.connection.call("searching", lambda: self._collection.search(
            queries.tolist(), "vector", search_params(self.kind, self.params, limit), limit=limit, expr=expr or None,
            **self._consistency()))
        out = _padding(len(queries), k)
        for row, hits in enumerate(results):
            ids = list(hits.ids)
            out.ids[row, :len(ids)] = ids
            out.scores[row, :len(ids)] = list(hits.distances)
        return rerank(queries, out.ids, self.source, wanted) if k != wanted else out

    # -- keeping and describing --------------------------------------------------------------------------------
    def save(self, path=None) -> None:
        """Nothing to write: the collection is the index, and Milvus keeps every acknowledged write in its log.
        (No flush either: Milvus seals and persists segments itself, and a flush per save would leave many
        small segments, seconds each; ``flush`` is for bulk uploads.)"""

    def flush(self) -> None:
        """Seal and persist what was uploaded (after a bulk upload, so that its index gets built)."""
        self.connection.call("flushing", self._collection.flush)

    def close(self) -> None:
        self.connection.close()

    def describe(self) -> str:
        built = index_params(self.kind, self.params)
        shown = ", ".join(f"{key}={value}" for key, value in built["params"].items())
        searched = ", ".join(f"{key}={value}" for key, value in search_params(self.kind, self.params, 1)["params"].items())
        return (f"{self.kind} ({'exact' if self.exact else 'approximate'}; Milvus {built['index_type']}"
                f"{' ' + shown if shown else ''}{', search ' + searched if searched else ''}, COSINE) in collection "
                f"{self.name} at {shown_uri(self.connection.uri)}")


def _trimmed(found: Neighbours) -> Neighbours:
    """Without the columns no row filled (a collection holding fewer than k), as FAISS answers; at least one."""
    width = max(1, int((found.ids >= 0).sum(axis=1).max(initial=0)))
    return Neighbours(found.scores[:, :width], found.ids[:, :width])


def _merge(parts: list[Neighbours], k: int) -> Neighbours:
    """The best ``k`` per query row of several searches' results."""
    scores = np.hstack([p.scores for p in parts])
    ids = np.hstack([p.ids for p in parts])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return Neighbours(np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1))


def open_collection(uri: str, name: str, kind: str, dim: int, params: Mapping[str, Any] | None = None, *,
                    source: VectorSource | None = None, attributes: AttributeSource | None = None,
                    create: bool = True) -> MilvusIndex | None:
    """Connect to the server at ``uri`` (failing within seconds when it cannot be reached) and open the
    collection ``name``, created with ``kind``'s index when it does not exist yet (None instead, when not
    ``create``)."""
    connection = Connection(uri)
    try:
        if not create and not connection.call("listing collections", lambda: pymilvus().utility.has_collection(
                name, using=connection.alias)):
            connection.close()
            return None
        return MilvusIndex(connection, name, kind, dim, params, source=source, attributes=attributes)
    except Exception:
        connection.close()
        raise
