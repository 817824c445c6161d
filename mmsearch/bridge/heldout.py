"""How a bridge direction is judged and what is recorded about it: retrieval of held-out sentences (R@1 of a
mapped row finding its own partner among all held-out partners, ties broken by mean cosine), one
``CandidateFit`` per kind of map tried and the ``MapFit`` of the one kept. Pure numpy; shared by the linear
and the non-linear maps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError


@dataclass(frozen=True)
class CandidateFit:
    """One kind of map tried for a direction, fitted without the held-out sentences and scored on them."""

    map: str
    """``linear`` or ``mlp``."""
    method: str
    """``ridge`` or ``procrustes`` (the best linear solution), or ``mlp``."""
    ridge_lambda: float | None
    heldout_r_at_1: float
    heldout_mean_cosine: float
    epochs: int | None = None
    """mlp: epochs chosen by early stopping (0: nothing beat its linear start on the validation rows)."""
    gained: int | None = None
    """mlp: held-out sentences it retrieves that the best linear map misses."""
    lost: int | None = None
    """mlp: held-out sentences the best linear map retrieves that it misses."""


@dataclass(frozen=True)
class MapFit:
    """How one direction was chosen and how well it did on sentences it was not fitted on."""

    method: str
    """``ridge``, ``procrustes`` or ``mlp``."""
    ridge_lambda: float | None
    heldout_r_at_1: float
    heldout_mean_cosine: float
    n_sentences: int
    n_heldout: int
    requested: str = "linear"
    """The map asked for: ``linear``, ``mlp`` or ``auto`` (files written before the choice existed: linear)."""
    candidates: tuple[CandidateFit, ...] = ()
    """Every kind of map tried, with its held-out figures (empty in files written before the choice existed)."""
    epochs: int | None = None
    """mlp: epochs the saved map was trained for on all sentences."""

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> "MapFit":
        candidates = tuple(CandidateFit(**candidate) for candidate in fields.get("candidates", ()))
        return cls(**{**fields, "candidates": candidates})

    def candidate(self, kind: str) -> CandidateFit | None:
        """The candidate of that kind of map (``linear``, ``mlp``), if it was tried."""
        return next((candidate for candidate in self.candidates if candidate.map == kind), None)


def retrieval_hits(mapped: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether mapped row i retrieves target row i first among all target rows, and their cosine."""
    similarity = mapped @ unit_rows(target).T
    own = np.diag(similarity)
    return similarity.max(axis=1) <= own, own


def retrieval_score(mapped: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(R@1, mean cosine) of mapped row i retrieving target row i among all target rows."""
    hits, own = retrieval_hits(mapped, target)
    return float(np.mean(hits)), float(own.mean())


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def query_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Vectors to map, as float32 rows of the map's source dimension (else a UsageError)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if vectors.shape[1] != dim:
        raise UsageError(f"bridge expects {dim}-d vectors, got {vectors.shape[1]}-d")
    return vectors
