"""A store: one folder holding the catalog (SQLite), one vector index file per modality, and a writer lock.

Index files are derived data: each is saved atomically, and on load it is reconciled with the catalog
(vectors committed after the file was written are added from the stored vectors, deleted ones removed),
so a crash between a catalog commit and an index save loses nothing.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..encoders.base import ModelIdentity
from ..errors import ModelMismatchError, StoreCorruptError, StoreLockedError, StoreNotFoundError
from ..index.backend import VectorBackend
from ..index.builder import build_index
from ..index.factory import create_index, index_class, open_index
from ..index.selection import IndexChoice, choice_info, cpu_equivalent, recorded_choice
from ..records import SPACE_OF, Modality
from .backends import is_remote, load_milvus, rebuild_milvus, sync as sync_remote, uses_milvus
from .catalog import Catalog

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.sqlite"
LOCK_NAME = "writer.lock"
SHADOW_SUFFIX = ".reembed-tmp"
"""``STORE.reembed-tmp``: where a re-embedding builds the new store beside the old one."""
PREVIOUS_SUFFIX = ".previous"
"""``STORE.previous``: the old store, kept until a re-embedding's switch has completed."""

RECONCILE_CHUNK = 50_000


def within(path: str, folder: str) -> bool:
    """Whether absolute path ``path`` is ``folder`` or lies below it (by name; no symlink is resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def shadow_path(store: Path) -> Path:
    return store.with_name(store.name + SHADOW_SUFFIX)


def previous_path(store: Path) -> Path:
    return store.with_name(store.name + PREVIOUS_SUFFIX)


class ModalityVectors:
    """One modality's stored vectors, as the index builder reads them (``index.backend.StoredVectors``)."""

    def __init__(self, catalog: Catalog, modality: Modality, dim: int):
        self.catalog, self.modality, self.dim = catalog, modality, dim

    def ids(self) -> np.ndarray:
        return self.catalog.segment_ids(self.modality)

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.catalog.fetch_vectors(ids, self.dim)

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.catalog.iter_vectors(self.modality, self.dim, chunk=size)


class Store:
    def __init__(self, path: Path, catalog: Catalog):
        self.path = path
        self.catalog = catalog
        self._indexes: dict[Modality, VectorBackend] = {}
        self._lock = None
        self._seen_marker: int | None = None

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> "Store":
        path = Path(os.path.abspath(Path(path).expanduser()))
        catalog_path = path / CATALOG_NAME
        if not catalog_path.is_file():
            if not create:
                raise StoreNotFoundError(path)
            if path.exists() and not path.is_dir():
                raise StoreCorruptError(path, "exists and is not a folder")
            path.mkdir(parents=True, exist_ok=True)
        try:
            catalog = Catalog(catalog_path, create=create)
        except (StoreCorruptError, StoreNotFoundError):  # not found: a creation killed before its commit
            raise
        except Exception as exc:
            raise StoreCorruptError(path, f"catalog cannot be opened ({str(exc).splitlines()[0][:200]})") from exc
        return cls(path, catalog)

    def close(self) -> None:
        self.release_writer()
        self.forget_indexes()
        self.catalog.close()

    def forget_indexes(self) -> None:
        """Drop the loaded indexes (closing any server connection): the next ``index()`` opens them again."""
        for index in self._indexes.values():
            if is_remote(index):
                index.close()
        self._indexes = {}

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- single writer ---------------------------------------------------------------------------------
    def acquire_writer(self) -> None:
        """Take the store's writer lock at once, or raise ``StoreLockedError``."""
        from filelock import FileLock, Timeout

        if self._lock is not None:
            return
        lock = FileLock(str(self.path / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise StoreLockedError(self.path) from exc
        self._lock = lock
        self.catalog.add_speedups()
        # indexes mapped read-only while this store was a reader are read in again when next asked for
        self._indexes = {m: i for m, i in self._indexes.items() if not i.read_only}

    def holds_writer(self) -> bool:
        return self._lock is not None

    def release_writer(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- model identity --------------------------------------------------------------------------------
    def model_for(self, role: str) -> dict[str, str] | None:
        """The recorded identity for ``role`` ('clip' or 'clap'), or None for a store that has none yet."""
        info = self.catalog.info()
        if f"{role}.fingerprint" not in info:
            return None
        return {key.split(".", 1)[1]: value for key, value in info.items() if key.startswith(f"{role}.")}

    def model_identity(self, role: str) -> ModelIdentity | None:
        """The recorded identity for ``role`` as a ``ModelIdentity``, or None."""
        recorded = self.model_for(role)
        if recorded is None:
            return None
        return ModelIdentity(recorded["spec"], recorded["fingerprint"], int(recorded["dim"]),
                             recorded.get("semantic") == "1")

    def bind_model(self, role: str, identity: ModelIdentity) -> None:
        """Record the model that makes this store's ``role`` vectors, or refuse a different one."""
        recorded = self.model_for(role)
        if recorded is None:
            self.catalog.set_info(**{f"{role}.spec": identity.spec, f"{role}.fingerprint": identity.fingerprint,
                                     f"{role}.dim": str(identity.dim), f"{role}.semantic": str(int(identity.semantic))})
            return
        if recorded["fingerprint"] != identity.fingerprint:
            raise ModelMismatchError(self.path, recorded["spec"], identity.spec,
                                     role="model" if role == "clip" else "audio model")

    def dim(self, modality: Modality) -> int | None:
        recorded = self.model_for(SPACE_OF[modality])
        return int(recorded["dim"]) if recorded else None

    # -- indexed roots ---------------------------------------------------------------------------------
    def roots(self) -> list[str]:
        """The folders and files given to ``index`` (absolute paths), less those removed whole since; what
        a file must still lie under to be served (``media``). Stores made before roots were recorded: []."""
        try:
            return sorted(json.loads(self.catalog.info().get("roots", "[]")))
        except ValueError:
            return []

    def add_roots(self, paths: Iterable[Path | str]) -> None:
        """Record ``paths`` as indexed roots (the writer does, when an index run starts). A store made before
        roots were recorded first gets its files' folders (what ``media`` fell back to for it), so that its
        older files stay servable."""
        roots = set(self.roots())
        if "roots" not in self.catalog.info():  # roots() read [] for it
            roots = {os.path.dirname(path) for path in self.catalog.all_items()}
        roots |= {os.path.abspath(p) for p in paths}
        self.catalog.set_info(roots=json.dumps(sorted(roots)))

    def drop_roots(self, paths: Iterable[Path | str]) -> None:
        """Forget the roots at or below ``paths`` (their files were removed from the store)."""
        doomed = [os.path.abspath(p) for p in paths]
        roots = [r for r in self.roots() if not any(within(r, d) for d in doomed)]
        self.catalog.set_info(roots=json.dumps(roots))

    # -- vector indexes --------------------------------------------------------------------------------
    def index_path(self, modality: Modality) -> Path:
        return self.path / f"{modality.value}.faiss"

    def index(self, modality: Modality) -> VectorBackend | None:
        """The modality's index, loaded and reconciled with the catalog; None when nothing is indexed.
        A missing or unreadable file is rebuilt from the stored vectors as the recorded index type."""
        if modality in self._indexes:
            return self._indexes[modality]
        dim = self.dim(modality)
        if dim is None:
            return None
        if uses_milvus(self):  # a Milvus collection (store.backends)
            self._indexes[modality] = load_milvus(self, modality, dim)
            return self._indexes[modality]
        path = self.index_path(modality)
        index = None
        if path.is_file():
            try:  # a reader maps the file (no copy of a 2 GB index into memory); a writer reads it in
                index = open_index(path, source=self.vector_source(modality), read_only=self._lock is None)
            except Exception as exc:
                log.warning("%s unreadable (%s): rebuilding from stored vectors", path, exc)
        if index is None or index.dim != dim:
            choice = self.index_choice(modality)
            if choice is not None and index_class(choice.kind).trainable and self.vector_count(modality):
                index, _ = build_index(self.stored_vectors(modality), choice)
            else:
                index = self.new_index(modality, dim)
        if not self.in_step(modality, index):
            if index.read_only:  # catching up changes it: read the file in after all
                index = open_index(path, source=self.vector_source(modality))
            self.reconcile(modality, index)
        self._indexes[modality] = index
        return index

    def catch_up(self) -> bool:
        """For a long-lived reader (the HTTP server): when anything has committed to the catalog since the
        last call (another process indexing, say), drop the loaded indexes that no longer hold exactly the
        catalog's vectors, so the next ``index()`` reads the file again and reconciles it. One statement
        when nothing changed; True when something had (counts and samples read from the catalog are stale)."""
        marker = self.catalog.change_marker()
        if marker == self._seen_marker:
            return False
        self._seen_marker = marker
        stale = [m for m, index in self._indexes.items() if not self.in_step(m, index)]
        for modality in stale:
            if is_remote(dropped := self._indexes.pop(modality)):
                dropped.close()
        return True

    def in_step(self, modality: Modality, index: VectorBackend) -> bool:
        """True when ``index`` provably holds exactly the catalog's segments of ``modality``, from their
        count and newest id alone (a second at 10M, where listing every id for ``reconcile`` takes 15 s).

        An index file is written only by the writer, holding exactly the catalog's segments of the moment
        (it adds and removes after each commit; a rebuilt index is read from the catalog under the writer
        lock, or reconciled, before it is saved). Segment ids only grow and are never reused, so since then
        the catalog can only have lost some of those segments and gained newer ones: with the same newest
        id it gained none (or lost them again), and with the same count it lost none. An id held twice (a
        damaged file) fails the check too."""
        count, newest = self.catalog.segment_count(modality)
        if is_remote(index):
            return index.holds_exactly(count, newest)
        held = index.ids()
        if len(held) != count:
            return False
        return count == 0 or (int(held[-1]) == newest and bool((held[1:] > held[:-1]).all()))

    def index_choice(self, modality: Modality) -> IndexChoice | None:
        """The index type recorded for ``modality`` (with its parameters and the reason), if any."""
        return recorded_choice(self.catalog.info(), modality.value)

    def record_choice(self, modality: Modality, choice: IndexChoice) -> None:
        """Record ``modality``'s index type, its parameters and the reason, for later runs and ``status``."""
        self.catalog.set_info(**choice_info(choice, modality.value))

    def describe_index(self, modality: Modality, index: VectorBackend) -> str:
        """The index's type and parameters, and why that type was chosen (for ``mmsearch status``)."""
        choice = self.index_choice(modality)
        why = f"; chosen {'by auto-selection' if choice.mode == 'auto' else 'by hand'}: {choice.reason}" if choice else ""
        return index.describe() + why

    def new_index(self, modality: Modality, dim: int) -> VectorBackend:
        """An empty index of the recorded type (``flat`` until a type has been chosen)."""
        choice = self.index_choice(modality)
        kind, params = (choice.kind, dict(choice.params)) if choice is not None else ("flat", {})
        if not index_class(kind).available():
            kind, params = cpu_equivalent(kind), {}
        return create_index(kind, dim, params, source=self.vector_source(modality))

    def stored_vectors(self, modality: Modality) -> ModalityVectors:
        """``modality``'s stored vectors, for building an index from them."""
        return ModalityVectors(self.catalog, modality, self.dim(modality))

    def vector_source(self, modality: Modality):
        """ids -> (ids found, their stored vectors): what approximate indexes re-rank and filter with."""
        return self.stored_vectors(modality).fetch

    def vector_count(self, modality: Modality) -> int:
        return self.catalog.segment_count(modality)[0]

    def reconcile(self, modality: Modality, index: VectorBackend) -> tuple[int, int]:
        """Make ``index`` hold exactly the catalog's vectors of ``modality``; returns (added, removed).
        The catalog is read in one transaction, so a writer committing meanwhile cannot make the ids and
        the vectors disagree; an id held twice (a damaged file) is removed and added back once."""
        held, counts = np.unique(index.ids(), return_counts=True)
        doubled = held[counts > 1]
        with self.catalog.snapshot() as read:
            wanted = read.segment_ids(modality)
            stale = np.union1d(np.setdiff1d(held, wanted, assume_unique=True), doubled)
            missing = np.union1d(np.setdiff1d(wanted, held, assume_unique=True), np.intersect1d(doubled, wanted))
            removed = index.remove(stale) if len(stale) else 0
            for start in range(0, len(missing), RECONCILE_CHUNK):
                found = read.vectors_for(missing[start:start + RECONCILE_CHUNK].tolist(), index.dim)
                ids = np.fromiter(found.keys(), dtype=np.int64, count=len(found))
                if len(ids):
                    index.add(ids, np.vstack(list(found.values())))
        if len(stale) or len(missing):
            log.info("%s index reconciled: +%d -%d", modality.value, len(missing), removed)
        return len(missing), removed

    def loaded_index(self, modality: Modality, dim: int) -> VectorBackend:
        """For writers: the modality's index, created empty when the store has none yet."""
        index = self.index(modality)
        if index is None:
            index = self.new_index(modality, dim)
            self._indexes[modality] = index
        return index

    def loaded_indexes(self) -> dict[Modality, VectorBackend]:
        """The indexes loaded so far (a copy of the mapping)."""
        return dict(self._indexes)

    def save_indexes(self) -> None:
        for modality, index in self._indexes.items():
            if is_remote(index):
                sync_remote(self, modality, index)  # renamed and touched files' attributes, then a flush
            else:
                index.save(self.index_path(modality))

    def replace_index(self, modality: Modality, index: VectorBackend) -> None:
        """Swap in a newly built index: its file replaces the old one atomically."""
        if not is_remote(index):
            index.save(self.index_path(modality))
        self._indexes[modality] = index

    def rebuild_index(self, modality: Modality) -> VectorBackend | None:
        """Rebuild the modality's index from the stored vectors, as the recorded type (trained and tuned)."""
        dim = self.dim(modality)
        if dim is None:
            return None
        if uses_milvus(self):  # the collection is dropped and uploaded again
            if is_remote(self._indexes.get(modality)):
                self._indexes.pop(modality).close()
            index = rebuild_milvus(self, modality, dim)
            if index is not None:
                self._indexes[modality] = index
            return index
        choice = self.index_choice(modality)
        if choice is None or not self.vector_count(modality):
            index = self.new_index(modality, dim)
            for ids, matrix in self.catalog.iter_vectors(modality, dim):
                index.add(ids, matrix)
        else:
            index, choice = build_index(self.stored_vectors(modality), choice)
        self.replace_index(modality, index)
        if choice is not None:
            self.record_choice(modality, choice)  # re-tuned parameters, current size
        return index

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
