"""Which engine holds a store's vectors - FAISS files in the store folder (the default) or collections on a
Milvus server - and keeping a Milvus collection in step with the catalog, which stays the source of truth.

The choice is recorded in the catalog's info (``index.backend``, ``index.milvus_uri``; the token is read
from ``MMSEARCH_MILVUS_TOKEN`` and never recorded), so later commands use it without being told. Switching
an existing store uploads its stored vectors to the new backend on the next open (``Store.reconcile``:
nothing is re-embedded); the old index is left as it is (a FAISS file is reconciled again if the store
switches back; a Milvus collection can be dropped by hand).

A Milvus collection is named ``mmsearch_<store id>_<modality>_<model fingerprint[:12]>`` (the store id: a
random hex id recorded with the backend). Beside each vector it holds its file's path, modification time,
duration and modality for filters run inside Milvus; a rename or a touched file changes those in the
catalog alone, so every save (``sync``) re-uploads the segments of files whose (path, mtime, modality)
differ from what was last uploaded, recorded per modality in ``<modality>.milvus-files.npy``.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..atomic import atomic_path
from ..errors import StoreLockedError, UsageError
from ..index.milvus_client import normalise_uri
from ..index.predicate import NO_DURATION, SegmentAttributes
from ..records import SPACE_OF, Modality

if TYPE_CHECKING:
    from ..index.milvus import MilvusIndex

log = logging.getLogger(__name__)

StoreLike = Any
"""A ``folder.Store`` (not imported: the store folder imports this module)."""

BACKENDS = ("faiss", "milvus")
BACKEND_KEY = "index.backend"
URI_KEY = "index.milvus_uri"
STORE_ID_KEY = "index.store_id"
UPLOAD_CHUNK = 20_000


@dataclass(frozen=True)
class BackendChoice:
    name: str = "faiss"
    uri: str | None = None


def recorded_backend(info: Mapping[str, str]) -> BackendChoice:
    return BackendChoice(info.get(BACKEND_KEY, "faiss"), info.get(URI_KEY))


def uses_milvus(store: StoreLike) -> bool:
    return store.catalog.info().get(BACKEND_KEY) == "milvus"


def is_remote(index) -> bool:
    return bool(getattr(index, "remote", False))


def choose_backend(store: StoreLike, name: str | None, uri: str | None) -> BackendChoice:
    """Record the backend asked for (None: keep the recorded one); a Milvus server must answer before it is
    recorded. ``uri`` alone changes the server of a Milvus store (and is ignored for a FAISS one)."""
    recorded = recorded_backend(store.catalog.info())
    if name is None and uri is None:
        return recorded
    if name is not None and name not in BACKENDS:
        raise UsageError(f"{{opt:backend}} must be one of {', '.join(BACKENDS)}, not {name!r}")
    name = name or recorded.name
    if name == "faiss":
        if uri is not None:  # (MMSEARCH_MILVUS_URI may be set for other stores)
            log.warning("milvus_uri %s ignored: this store's backend is faiss (backend milvus switches it)", uri)
        if recorded.name != "faiss":
            store.catalog.set_info(**{BACKEND_KEY: "faiss"})
            store.forget_indexes()
        return BackendChoice("faiss", recorded.uri)
    uri = normalise_uri(uri) if uri is not None else recorded.uri
    if uri is None:
        raise UsageError("{opt:backend} milvus needs {opt:milvus_uri} (the server, e.g. http://localhost:19530)")
    from ..index.milvus_client import Connection

    Connection(uri).close()  # an unreachable server is refused before anything is recorded
    values = {BACKEND_KEY: "milvus", URI_KEY: uri}
    if STORE_ID_KEY not in store.catalog.info():
        values[STORE_ID_KEY] = secrets.token_hex(6)
    if (name, uri) != (recorded.name, recorded.uri):
        store.catalog.set_info(**values)
        store.forget_indexes()
    return BackendChoice("milvus", uri)


def apply_backend(store: StoreLike, name: str | None, uri: str | None) -> None:
    """``choose_backend`` for a store just opened by a writer; the store is closed when it fails."""
    if name is None and uri is None:
        return
    try:
        choose_backend(store, name, uri)
    except BaseException:
        store.close()
        raise


# -- a file's attributes, beside its vectors ---------------------------------------------------------------
def file_digest(path: str, mtime_ns: int, kind: str) -> int:
    raw = hashlib.blake2b(f"{path}\0{mtime_ns}\0{kind}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "little", signed=True)


class CatalogAttributes:
    """The ``AttributeSource`` of a store's Milvus backend: each segment's file from the catalog; remembers
    the digest of every file it gave out (what the collection now holds for it)."""

    def __init__(self, store: StoreLike):
        self.store = store
        self.uploaded: dict[int, int] = {}

    def __call__(self, ids: np.ndarray) -> SegmentAttributes:
        rows = {row[0]: row for row in self.store.catalog.segment_files(ids)}
        about = SegmentAttributes.blank(ids)
        for at, seg_id in enumerate(np.asarray(ids).tolist()):
            row = rows.get(seg_id)
            if row is None:
                continue
            _, item_id, path, mtime_ns, kind, duration = row
            about.paths[at], about.mtime_ns[at], about.kinds[at] = path, int(mtime_ns), kind
            about.durations[at] = float(duration) if duration is not None else NO_DURATION
            self.uploaded[int(item_id)] = file_digest(path, int(mtime_ns), kind)
        return about


def _record_path(store: StoreLike, modality: Modality):
    return store.path / f"{modality.value}.milvus-files.npy"


def _read_record(store: StoreLike, modality: Modality) -> dict[int, int]:
    try:
        table = np.load(_record_path(store, modality))
        return dict(zip(table[0].tolist(), table[1].tolist()))
    except (OSError, ValueError, IndexError):
        return {}


def sync(store: StoreLike, modality: Modality, index: "MilvusIndex") -> int:
    """Re-upload the segments of files renamed or touched since their upload, record what the collection
    now holds, and flush; returns how many files were refreshed."""
    states = store.catalog.file_states(modality)
    current = {int(item): file_digest(path, int(mtime), kind) for item, path, mtime, kind in states}
    known = _read_record(store, modality)
    attributes = index.attributes if isinstance(index.attributes, CatalogAttributes) else None
    if attributes is not None:
        known.update(attributes.uploaded)
    stale = sorted(item for item, digest in current.items() if known.get(item) != digest)
    if stale:
        with store.catalog.snapshot() as read:
            ids = np.asarray(sorted(read.item_segment_ids(stale).get(modality, [])), np.int64)
        for start in range(0, len(ids), UPLOAD_CHUNK):
            found, vectors = store.catalog.fetch_vectors(ids[start:start + UPLOAD_CHUNK], index.dim)
            index.add(found, vectors)
        log.info("%s: attributes of %d files refreshed in Milvus", modality.value, len(stale))
    index.save()
    record_write(store, modality, index)
    items = np.asarray(sorted(current), np.int64)
    with atomic_path(_record_path(store, modality)) as temp:
        with open(temp, "wb") as handle:
            np.save(handle, np.vstack([items, np.asarray([current[i] for i in items.tolist()], np.int64)]))
    if attributes is not None:
        attributes.uploaded.clear()
    return len(stale)


# -- opening, catching up, rebuilding ---------------------------------------------------------------------
def open_milvus(store: StoreLike, modality: Modality, dim: int, *, create: bool = True) -> "MilvusIndex | None":
    """The modality's collection (created with the recorded index type when missing, else None when not
    ``create``), not yet reconciled."""
    from ..index.milvus import collection_name, open_collection

    info = store.catalog.info()
    choice = store.index_choice(modality)
    kind, params = (choice.kind, dict(choice.params)) if choice is not None else ("flat", {})
    from ..index.milvus_client import milvus_kind

    fingerprint = info.get(f"{SPACE_OF[modality]}.fingerprint", "none")
    name = collection_name(info[STORE_ID_KEY], modality.value, fingerprint)
    index = open_collection(info[URI_KEY], name, milvus_kind(kind), dim, params, source=store.vector_source(modality),
                            attributes=CatalogAttributes(store), create=create)
    if index is not None:
        index.written_ts = recorded_write(info, modality, name)
    return index


def _write_key(modality: Modality) -> str:
    return f"index.milvus_written.{modality.value}"


def recorded_write(info: Mapping[str, str], modality: Modality, name: str) -> int:
    """The server timestamp of the writer's last write to collection ``name`` as of its last save (0: none)."""
    collection, _, ts = info.get(_write_key(modality), "").partition(" ")
    return int(ts) if collection == f"{info.get(URI_KEY)}/{name}" and ts.isdigit() else 0


def record_write(store: StoreLike, modality: Modality, index: "MilvusIndex") -> None:
    """Record ``index``'s newest write, so readers wait for it alone (``MilvusIndex.written_ts``)."""
    key = f"{store.catalog.info().get(URI_KEY)}/{index.name}"
    if index.written_ts != recorded_write(store.catalog.info(), modality, index.name):  # 0: readers read Strong
        store.catalog.set_info(**{_write_key(modality): f"{key} {index.written_ts}"})


def load_milvus(store: StoreLike, modality: Modality, dim: int) -> "MilvusIndex":
    """The collection, caught up with the catalog. Only a writer changes it: a reader that finds it behind
    takes the writer lock to catch it up when no writer is running, else searches it as it is (a running
    writer is bringing it up to date)."""
    index = open_milvus(store, modality, dim)
    if store.in_step(modality, index):
        return index
    held = store.holds_writer()
    if not held:
        try:
            store.acquire_writer()
        except StoreLockedError:
            log.info("%s collection lags the catalog while another process writes: searched as it is", modality.value)
            return index
    try:
        store.reconcile(modality, index)
        sync(store, modality, index)
    finally:
        if not held:
            store.release_writer()
    return index


def rebuild_milvus(store: StoreLike, modality: Modality, dim: int) -> "MilvusIndex":
    """Drop the collection and upload every stored vector again, as the recorded index type (a modality
    without vectors is left without a collection: the first ``index()`` makes one)."""
    index = open_milvus(store, modality, dim, create=False)
    if index is not None:
        index.drop()
        index.close()
    _record_path(store, modality).unlink(missing_ok=True)
    if not store.vector_count(modality):
        return None
    index = open_milvus(store, modality, dim)
    for ids, vectors in store.catalog.iter_vectors(modality, dim, chunk=UPLOAD_CHUNK):
        index.add(ids, vectors)
    index.flush()  # sealed: the server builds the index over them
    sync(store, modality, index)
    return index


def install_milvus(store: StoreLike, modality: Modality, choice):
    """Re-create the collection's index as ``choice`` says (the vectors stay on the server), tune its search
    parameter on stored vectors against exact search, and record the choice as built."""
    from ..index.builder import ADD_CHUNK, TUNE_K, TUNE_QUERIES, tune
    from ..index.exact import ExactTopK
    from ..index.milvus_client import milvus_kind

    index = store.index(modality)
    kind = milvus_kind(choice.kind)
    index.rebuild_as(kind, choice.params)
    stored = store.stored_vectors(modality)
    ids = stored.ids()
    reason = choice.reason
    if not index.exact and len(ids) > 20:
        rng = np.random.default_rng(0)
        _, queries = stored.fetch(np.sort(rng.choice(ids, size=min(TUNE_QUERIES, len(ids) // 10), replace=False)))
        exact = ExactTopK(queries, TUNE_K)
        for chunk_ids, vectors in stored.chunks(ADD_CHUNK):
            exact.update(chunk_ids, vectors)
        _, note = tune(index, queries, exact.ids)
        reason += f"; {note}" if note else ""
    final = choice.with_(kind=kind, params=dict(index.params), reason=reason + " (served by Milvus)",
                         n_vectors=len(ids))
    store.record_choice(modality, final)
    return final
