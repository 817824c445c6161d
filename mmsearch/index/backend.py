"""The vector-backend interface: everything the store, the index builder and the searcher may ask of an
index, whichever engine holds the vectors (FAISS on the CPU or a GPU, torch; a vector database next).

A backend holds unit float32 vectors under int64 ids (the catalog's segment ids) and ranks them by inner
product, which is cosine similarity on unit vectors. Its contract (tests/index/test_backend_contract.py
runs it over every implementation):

* ``add(ids, vectors)`` then ``search`` finds them; ``len(backend)`` counts what it holds;
  ``ids()`` lists it, sorted;
* ``remove(ids)`` returns how many it held, and removed ids never come back from ``search``;
* ``search(queries, k, allowed_ids)`` returns ``Neighbours`` best first, ``-1`` ids (and ``-inf`` scores)
  where fewer than ``k`` match; with ``allowed_ids`` only those ids can be returned. An ``exact``
  backend returns exactly what ``exact.exact_top_k`` does; an approximate one is judged by its recall
  against it;
* ``train(vectors)`` fits a ``trainable`` backend's quantisers to a sample before the first ``add``
  (a no-op for the others); ``set_param`` changes a search-time parameter (``nprobe``, ``efSearch``);
* ``save(path)`` writes it so that ``factory.open_index(path)`` opens the same backend again;
* ``describe()`` names the type and its parameters for people.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Neighbours:
    scores: np.ndarray
    """(n_queries, k) float32, best first; ``-inf`` where fewer than k vectors matched."""
    ids: np.ndarray
    """(n_queries, k) int64; -1 where fewer than k vectors matched."""


VectorSource = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]
"""ids -> (ids found, their stored vectors as float32 rows); ids no longer stored are left out."""


@runtime_checkable
class VectorBackend(Protocol):
    kind: str
    """The type's name, e.g. ``flat``, ``hnsw`` (what ``factory.create_index`` takes)."""
    dim: int
    exact: bool
    """True when ``search`` returns exactly the true top-k."""
    trainable: bool
    params: dict[str, Any]
    """Build and search parameters (``nlist``, ``nprobe``...): what ``save`` records."""
    source: VectorSource | None
    """Where the stored vectors can be read back (for re-ranking and small filters), if anywhere."""
    read_only: bool
    """True when opened for searching alone (``factory.open_index(read_only=True)``): changes are refused."""

    def __len__(self) -> int:
        """How many vectors it holds (the count)."""

    def ids(self) -> np.ndarray:
        """The ids held, sorted (int64)."""

    def train(self, vectors: np.ndarray) -> None:
        """Fit quantisers to a sample of the vectors it will hold (no-op where nothing is trained)."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (n, dim) unit vectors under ``ids``."""

    def remove(self, ids: np.ndarray) -> int:
        """Remove by id; returns how many of them were held."""

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> Neighbours:
        """Top-``k`` by inner product per query row, best first; only ``allowed_ids`` when given."""

    def set_param(self, name: str, value: Any) -> None:
        """Change a search-time parameter."""

    def vectors_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids held, their vectors) read back; None where the backend cannot give vectors back."""

    def save(self, path) -> None:
        """Write the backend to ``path`` atomically (``factory.open_index`` reads it back)."""

    def describe(self) -> str:
        """The type, exact or approximate, and its parameters, in words."""


class StoredVectors(Protocol):
    """The vectors a backend is built from, as a store keeps them (one modality's, in id order)."""

    dim: int

    def ids(self) -> np.ndarray:
        """Every stored id, sorted."""

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A ``VectorSource``: (ids found, their vectors)."""

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored (ids, vectors), ``size`` rows at a time, in id order."""
