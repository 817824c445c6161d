"""FAISS indexes over L2-normalised float32 vectors whose ids are catalog segment ids: ``VectorIndex``
is the exact type (``flat``) and the machinery every FAISS type shares.

Inner product on unit vectors is cosine similarity. Every type implements ``backend.VectorBackend``
(``add``, ``remove``, ``search`` with an optional ``allowed_ids`` filter, ``save``, opened again by
``factory.open_index``), so the rest of mmsearch never needs to know which one a store uses:

=============  ==================================================================================
``flat``       exact (the reference every other type is checked against)
``ivf-flat``   inverted lists of full vectors; ``nprobe`` lists are scanned per query
``ivf-pq``     inverted lists of product-quantised codes, re-ranked with the catalog's stored vectors
``hnsw``       graph search (CPU); removals are tombstones until a rebuild compacts them
``gpu-flat``   exact on a GPU through FAISS (optional float16 storage)
``gpu-ivf``    IVF-Flat on a GPU through FAISS
``cagra``      CAGRA graph on a GPU, where the installed FAISS has it
``torch-flat`` exact through torch (matrix product + top-k, float16 on a GPU) for a GPU that FAISS
               cannot use
=============  ==================================================================================

An index file is a plain FAISS file (``faiss.read_index`` opens it) plus a small JSON sidecar
(``NAME.faiss.json``) with the type, its parameters and the tombstones; a sidecar that does not
describe the file beside it is ignored and the type is inferred from the file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..atomic import atomic_path
from ..errors import UsageError
from .backend import Neighbours, VectorSource
from .exact import empty_neighbours, exact_top_k, padded
from .threads import threads_for

log = logging.getLogger(__name__)

BLAS_THRESHOLD = 4096
"""FAISS's exhaustive search (flat indexes, IVF coarse quantisers) uses a matrix product (BLAS) once
``n_queries * dim`` reaches ``faiss.cvar.distance_compute_blas_threshold``, else a per-query SIMD scan.
FAISS 1.15 ships 128000 there: at dim 512 only batches of 250+ queries get BLAS, and a batch of 64 runs about
5x slower per query than it would with it. The old value, 20, sends even single queries to BLAS, 4x slower
than the scan. 4096 (BLAS from 8 queries at dim 512) is the crossover measured by ``mmsearch bench ann``."""
TOMBSTONE_FRACTION = 0.2
"""An index that can only tombstone is rebuilt once this fraction of what it holds is tombstones."""
SUBSET_EXACT_MAX = 20_000
"""An ``allowed_ids`` filter this small is answered exactly from stored vectors, not from the index."""
SIDECAR_FORMAT = 1


def _faiss():
    import faiss

    return faiss


def configure_faiss() -> None:
    """Process-wide FAISS settings that make search faster (idempotent)."""
    faiss = _faiss()
    if faiss.cvar.distance_compute_blas_threshold != BLAS_THRESHOLD:
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD


def _as_ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vectors(vectors, dim: int) -> np.ndarray:
    vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {vectors.shape}")
    return vectors


def sidecar_path(path: Path) -> Path:
    return Path(f"{path}.json")


def storage_matrix(storage, ntotal: int) -> np.ndarray:
    """A read-only view of an ``IndexFlat``'s vectors, (ntotal, d)."""
    if not ntotal:
        return np.empty((0, storage.d), np.float32)
    return _faiss().rev_swig_ptr(storage.get_xb(), ntotal * storage.d).reshape(ntotal, storage.d)


class VectorIndex:
    """The exact index (``flat``) and the machinery every other type shares.

    Subclasses replace the ``_``-hooks: the FAISS structure, how held ids are listed, training, the
    search parameters, and how a filtered subset's vectors are read back."""

    kind = "flat"
    exact = True
    trainable = False
    tombstones_only = False
    """True where the FAISS structure cannot remove vectors: removals become tombstones."""
    defaults: Mapping[str, Any] = {}
    needs = ""
    """What a machine must have to run this type (empty: any machine)."""
    read_only = False
    """True when memory-mapped from its file (``factory.open_index(read_only=True)``): it only searches."""

    @classmethod
    def available(cls) -> bool:
        return True

    @classmethod
    def check_available(cls) -> None:
        if not cls.available():
            raise UsageError(f"{{opt:index_type}} {cls.kind} needs {cls.needs}, which this machine does not have",
                             option="index_type")

    def __init__(self, dim: int, params: Mapping[str, Any] | None = None, *, faiss_index=None,
                 source: VectorSource | None = None):
        configure_faiss()
        self.dim = int(dim)
        self.params: dict[str, Any] = {**self.defaults, **(params or {})}
        self.source = source
        self._tombstones = np.empty(0, np.int64)
        self._ids_cache: np.ndarray | None = None
        self._positions_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._allowed_cache: tuple[object, np.ndarray, Any] | None = None
        self._subset_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._index = faiss_index if faiss_index is not None else self._new_faiss_index()
        self._apply_params()

    def set_param(self, name: str, value: Any) -> None:
        """Change a search-time parameter (``nprobe``, ``efSearch``, ``rerank``...)."""
        self.params[name] = value
        self._apply_params()

    # -- hooks ---------------------------------------------------------------------------------------
    def _new_faiss_index(self):
        faiss = _faiss()
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _apply_params(self) -> None:
        """Copy parameters that FAISS keeps (and saves) into the FAISS structure."""

    def _held_ids(self) -> np.ndarray:
        """Every id in the FAISS structure, tombstoned ones included, in storage order."""
        return _faiss().vector_to_array(self._index.id_map).astype(np.int64)

    def _storage(self):
        """The ``IndexFlat`` holding the vectors in storage order, or None where there is none."""
        return _faiss().downcast_index(self._index.index)

    def _train(self, vectors: np.ndarray) -> None:
        pass

    def _search_params(self, selector, fraction: float, k: int):
        """FAISS search parameters; ``fraction`` is the share of the index that the filter lets through."""
        if selector is None:
            return None
        return _faiss().SearchParameters(sel=selector)

    def _fetch_k(self, k: int) -> int:
        return k

    def _finish(self, queries: np.ndarray, scores: np.ndarray, ids: np.ndarray, k: int) -> Neighbours:
        return Neighbours(np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(ids[:, :k]))

    def _native_search(self, queries: np.ndarray, k: int, params) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(queries, k, params=params)

    def _native_add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, ids)

    def _native_remove(self, ids: np.ndarray) -> int:
        return int(self._index.remove_ids(_faiss().IDSelectorBatch(ids)))

    def _cpu_index(self):
        """The FAISS structure to write to disk."""
        return self._index

    def compact(self) -> None:
        """Drop tombstoned vectors for good (tombstone-only types rebuild their structure)."""
        if not len(self._tombstones):
            return
        storage = self._storage()
        held = self._held_ids()
        keep = ~np.isin(held, self._tombstones)
        vectors = storage_matrix(storage, len(held))[keep].copy()
        log.info("%s index compacted: rebuilding from %d vectors (%d tombstones)", self.kind, int(keep.sum()),
                 len(self._tombstones))
        self._index = self._new_faiss_index()
        self._tombstones = np.empty(0, np.int64)
        self._changed()
        for start in range(0, len(vectors), 100_000):
            self._native_add(held[keep][start:start + 100_000], vectors[start:start + 100_000])
        self._changed()

    # -- contents ------------------------------------------------------------------------------------
    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def _writable(self) -> None:
        if self.read_only:
            raise RuntimeError(f"{self.kind} index is memory-mapped read-only; open it writable to change it")

    def train(self, vectors) -> None:
        """Fit the index's quantisers to a sample of the vectors it will hold (no-op for untrained types)."""
        self._writable()
        if self.trainable:
            self._train(_as_vectors(vectors, self.dim))
            self._changed()

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._tombstones)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def ids(self) -> np.ndarray:
        """The ids held (tombstones excluded), sorted; read-only."""
        if self._ids_cache is None:
            held = self._held_ids() if self._index.ntotal else np.empty(0, np.int64)
            if len(self._tombstones):
                held = held[~np.isin(held, self._tombstones)]
            held = np.sort(held)
            held.flags.writeable = False
            self._ids_cache = held
        return self._ids_cache

    def _changed(self) -> None:
        self._ids_cache = None
        self._positions_cache = None
        self._subset_cache = None

    def add(self, ids, vectors) -> None:
        self._writable()
        ids, vectors = _as_ids(ids), _as_vectors(vectors, self.dim)
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        if not len(ids):
            return
        if not self.is_trained:
            log.warning("%s index used before training: training on the first %d vectors added", self.kind, len(ids))
            self.train(vectors)
        self._native_add(ids, vectors)
        self._changed()

    def remove(self, ids) -> int:
        """Remove vectors by id; returns how many were held. Tombstone-only types compact past a fraction."""
        self._writable()
        ids = np.unique(_as_ids(ids))
        if not len(ids) or not len(self):
            return 0
        if not self.tombstones_only:
            removed = self._native_remove(ids)
            self._changed()
            return removed
        present = ids[np.isin(ids, self.ids())]
        if len(present):
            self._tombstones = np.union1d(self._tombstones, present)
            self._changed()
            if len(self._tombstones) > TOMBSTONE_FRACTION * self._index.ntotal:
                self.compact()
        return len(present)

    # -- search --------------------------------------------------------------------------------------
    def search(self, queries, k: int, allowed_ids: np.ndarray | None = None) -> Neighbours:
        """Top-``k`` by inner product, best first; ``allowed_ids`` restricts the search to those ids
        without scanning the rest (small filters are answered exactly from the stored vectors)."""
        queries = _as_vectors(queries, self.dim)
        held = len(self)
        k = max(1, min(int(k), max(held, 1)))
        if not held:
            return empty_neighbours(len(queries), k)
        if allowed_ids is None:
            with threads_for(len(queries)):
                return self._search(queries, k, None, 1.0)
        allowed = self._allowed(allowed_ids)
        if not len(allowed):
            return empty_neighbours(len(queries), k)
        with threads_for(len(queries)):
            k = min(k, len(allowed))
            if len(allowed) <= self._subset_limit(held):
                found = self._search_subset(queries, k, allowed)
                if found is not None:
                    return found
            return self._search(queries, k, allowed, min(1.0, len(allowed) / held))

    def _allowed(self, allowed_ids) -> np.ndarray:
        """The filter as sorted unique ids; the last one is kept, since a repeated --path query passes the
        same (unchanged) array again."""
        cached = self._allowed_cache
        if cached is not None and cached[0] is allowed_ids:
            return cached[1]
        allowed = _as_ids(allowed_ids)
        if len(allowed) > 1 and not (allowed[1:] > allowed[:-1]).all():
            allowed = np.unique(allowed)
        self._allowed_cache = (allowed_ids, allowed, None)
        return allowed

    def _selector(self, allowed: np.ndarray):
        """An IDSelectorBatch over ``allowed``, built once per filter."""
        cached = self._allowed_cache
        if cached is not None and cached[1] is allowed:
            if cached[2] is None:
                self._allowed_cache = (cached[0], allowed, _faiss().IDSelectorBatch(allowed))
            return self._allowed_cache[2]
        return _faiss().IDSelectorBatch(allowed)

    def _subset_limit(self, held: int) -> int:
        if self._storage() is not None:
            return held // 8  # reading back held vectors is a memory copy
        return min(SUBSET_EXACT_MAX, held // 8) if self.source is not None else 0

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, fraction: float) -> Neighbours:
        faiss = _faiss()
        keep_alive = []
        selector = None
        if allowed is not None:
            selector = self._selector(allowed)
            keep_alive.append(selector)
        if len(self._tombstones):
            dead = faiss.IDSelectorBatch(self._tombstones)
            alive = faiss.IDSelectorNot(dead)
            keep_alive += [dead, alive]
            selector = alive if selector is None else faiss.IDSelectorAnd(selector, alive)
            keep_alive.append(selector)
        params = self._search_params(selector, fraction, k)
        fetch = min(self._fetch_k(k), int(self._index.ntotal))
        scores, ids = self._native_search(queries, fetch, params)
        del keep_alive
        return padded(self._finish(queries, scores, ids, k), k)

    def vectors_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids held, their vectors) read back from the index or the stored vectors; None if neither can."""
        ids = _as_ids(ids)
        storage = self._storage()
        if storage is None:
            if self.source is None:
                return None
            held = self.ids()  # the catalog may still hold vectors this index has dropped
            at = np.clip(np.searchsorted(held, ids), 0, max(len(held) - 1, 0))
            ids = ids[held[at] == ids] if len(held) else ids[:0]
            return self.source(ids)
        if self._positions_cache is None:
            held = self._held_ids()
            order = np.argsort(held, kind="stable")
            self._positions_cache = (held[order], order)
        sorted_ids, order = self._positions_cache
        at = np.searchsorted(sorted_ids, ids)
        at[at >= len(sorted_ids)] = 0
        found = (sorted_ids[at] == ids) if len(sorted_ids) else np.zeros(len(ids), bool)
        if len(self._tombstones):
            found &= ~np.isin(ids, self._tombstones)
        matrix = storage_matrix(storage, int(self._index.ntotal))
        return ids[found], matrix[order[at[found]]]

    def _search_subset(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> Neighbours | None:
        cached = self._subset_cache
        if cached is not None and cached[0] is allowed:
            present, vectors = cached[1], cached[2]
        else:
            found = self.vectors_of(allowed)
            if found is None:
                return None
            present, vectors = found
            if self._storage() is None:  # read from the catalog: keep them for the next query with this filter
                self._subset_cache = (allowed, present, vectors)
        if not len(present):
            return empty_neighbours(len(queries), k)
        return padded(exact_top_k(queries, np.asarray(vectors, np.float32), present, k), k)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the FAISS file, then its sidecar, each atomically."""
        faiss = _faiss()
        path = Path(path)
        cpu = self._cpu_index()
        with atomic_path(path) as tmp:
            faiss.write_index(cpu, str(tmp))
            size = tmp.stat().st_size
        sidecar = {"format": SIDECAR_FORMAT, "kind": self.kind, "dim": self.dim, "params": self.params,
                   "ntotal": int(cpu.ntotal), "bytes": size, "tombstones": self._tombstones.tolist()}
        with atomic_path(sidecar_path(path)) as tmp:
            tmp.write_text(json.dumps(sidecar), encoding="utf-8")

    @property
    def faiss_index(self):
        """The FAISS structure itself (its nprobe / efSearch set to this index's parameters)."""
        return self._index

    def memory_bytes(self) -> int:
        """Bytes of the serialised index (what it takes in memory, give or take a few percent)."""
        return int(_faiss().serialize_index(self._cpu_index()).nbytes)

    def describe(self) -> str:
        shown = ", ".join(f"{key}={value}" for key, value in self.params.items())
        extra = f", {self.tombstones} tombstones" if self.tombstones else ""
        exact = "exact" if self.exact else "approximate"
        return f"{self.kind} ({exact} inner product{', ' + shown if shown else ''}{extra})"
