"""A store: one folder holding the catalog (SQLite), one FAISS index file per modality, and a writer lock.

Index files are derived data: each is saved atomically, and on load it is reconciled with the catalog
(vectors committed after the file was written are added from the stored vectors, deleted ones removed),
so a crash between a catalog commit and an index save loses nothing.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .catalog import Catalog
from .encoders.base import ModelIdentity
from .errors import ModelMismatchError, StoreCorruptError, StoreLockedError, StoreNotFoundError
from .records import Modality
from .vector_index import VectorIndex

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.sqlite"
LOCK_NAME = "writer.lock"

SPACE_OF = {Modality.IMAGE: "clip", Modality.TEXT: "clip", Modality.AUDIO: "clap"}
"""Which model space each modality's vectors live in."""


class Store:
    def __init__(self, path: Path, catalog: Catalog):
        self.path = path
        self.catalog = catalog
        self._indexes: dict[Modality, VectorIndex] = {}
        self._lock = None

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
        except StoreCorruptError:
            raise
        except Exception as exc:
            raise StoreCorruptError(path, f"catalog cannot be opened ({str(exc).splitlines()[0][:200]})") from exc
        return cls(path, catalog)

    def close(self) -> None:
        self.release_writer()
        self.catalog.close()

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

    # -- vector indexes --------------------------------------------------------------------------------
    def index_path(self, modality: Modality) -> Path:
        return self.path / f"{modality.value}.faiss"

    def index(self, modality: Modality) -> VectorIndex | None:
        """The modality's index, loaded and reconciled with the catalog; None when nothing is indexed."""
        if modality in self._indexes:
            return self._indexes[modality]
        dim = self.dim(modality)
        if dim is None:
            return None
        path = self.index_path(modality)
        index = None
        if path.is_file():
            try:
                index = VectorIndex.load(path)
            except Exception as exc:
                log.warning("%s unreadable (%s): rebuilding from stored vectors", path, exc)
        if index is None or index.dim != dim:
            index = VectorIndex(dim)
        self.reconcile(modality, index)
        self._indexes[modality] = index
        return index

    def reconcile(self, modality: Modality, index: VectorIndex) -> tuple[int, int]:
        """Make ``index`` hold exactly the catalog's vectors of ``modality``; returns (added, removed)."""
        wanted = self.catalog.segment_ids(modality)
        held = index.ids()
        stale = np.setdiff1d(held, wanted, assume_unique=True)
        missing = np.setdiff1d(wanted, held, assume_unique=True)
        removed = index.remove(stale) if len(stale) else 0
        dim = index.dim
        if len(missing):
            for start in range(0, len(missing), 50_000):
                chunk = missing[start:start + 50_000]
                found = self.catalog.vectors_for(chunk.tolist(), dim)
                ids = np.fromiter(found.keys(), dtype=np.int64, count=len(found))
                if len(ids):
                    index.add(ids, np.vstack(list(found.values())))
        if len(stale) or len(missing):
            log.info("%s index reconciled: +%d -%d", modality.value, len(missing), removed)
        return len(missing), removed

    def loaded_index(self, modality: Modality, dim: int) -> VectorIndex:
        """For writers: the modality's index, created empty when the store has none yet."""
        index = self.index(modality)
        if index is None:
            index = VectorIndex(dim)
            self._indexes[modality] = index
        return index

    def save_indexes(self) -> None:
        for modality, index in self._indexes.items():
            index.save(self.index_path(modality))

    def rebuild_index(self, modality: Modality) -> VectorIndex | None:
        dim = self.dim(modality)
        if dim is None:
            return None
        index = VectorIndex(dim)
        for ids, matrix in self.catalog.iter_vectors(modality, dim):
            index.add(ids, matrix)
        self._indexes[modality] = index
        index.save(self.index_path(modality))
        return index

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
