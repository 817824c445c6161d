"""A linear bridge between two embedding spaces, learnt through text (C-MCR style).

CLAP and CLIP each embed the same sentences with their text towers. A linear map fitted from CLAP's
text vectors to CLIP's (and one back) then carries audio vectors into CLIP's space, and image
vectors into CLAP's, so every modality can be searched from every other.

Fitting tries ridge least squares (lambda from a small grid) and orthogonal Procrustes (semi-orthogonal
when the two dimensions differ) on a training split, keeps the one with the best retrieval on the
held-out sentences (R@1 of a mapped row finding its own partner, ties broken by mean cosine), and
refits it on all sentences. Pure numpy.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..encoders.base import l2_normalise
from ..errors import MMSearchError, UsageError

FORMAT_VERSION = 1
RIDGE_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Relative to the mean eigenvalue of the source covariance, so the grid fits any scale."""
_MIN_SENTENCES = 20


class BridgeMismatchError(MMSearchError):
    """A saved bridge used with models other than those it was fitted for."""

    def __init__(self, path: Path | str, expected: tuple[str, str], found: tuple[str, str]):
        self.path, self.expected, self.found = Path(path), expected, found
        super().__init__(
            f"{self.path}: bridge was fitted for {found[0]!r} -> {found[1]!r}, not {expected[0]!r} -> {expected[1]!r}; "
            "refit it for these models"
        )


class BridgeFileError(MMSearchError):
    """A bridge file that cannot be read back (missing, damaged, another format version)."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: cannot read bridge: {reason}")


@dataclass(frozen=True)
class MapFit:
    """How one direction was chosen and how well it did on sentences it was not fitted on."""

    method: str
    """``ridge`` or ``procrustes``."""
    ridge_lambda: float | None
    heldout_r_at_1: float
    heldout_mean_cosine: float
    n_sentences: int
    n_heldout: int


@dataclass(frozen=True)
class LinearMap:
    """x -> normalise((normalise(x) - source_mean) @ matrix + target_mean)."""

    matrix: np.ndarray
    source_mean: np.ndarray
    target_mean: np.ndarray
    fit: MapFit

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.matrix.shape[0]:
            raise UsageError(f"bridge expects {self.matrix.shape[0]}-d vectors, got {vectors.shape[1]}-d")
        return l2_normalise((l2_normalise(vectors) - self.source_mean) @ self.matrix + self.target_mean)


@dataclass(frozen=True)
class SpaceMap:
    """Both directions between two models' spaces, tied to the models' fingerprints."""

    source_fingerprint: str
    target_fingerprint: str
    forward: LinearMap
    """source -> target (e.g. CLAP -> CLIP: audio queried by images and text in CLIP's space)."""
    reverse: LinearMap
    """target -> source (e.g. CLIP -> CLAP: images as queries against audio)."""

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Source-space vectors -> unit vectors in the target space."""
        return self.forward.apply(vectors)

    def apply_reverse(self, vectors: np.ndarray) -> np.ndarray:
        """Target-space vectors -> unit vectors in the source space."""
        return self.reverse.apply(vectors)

    def inverted(self) -> "SpaceMap":
        return SpaceMap(self.target_fingerprint, self.source_fingerprint, self.reverse, self.forward)

    def check(self, source_fingerprint: str, target_fingerprint: str, *, path: Path | str = "bridge") -> None:
        """Raise BridgeMismatchError unless fitted for exactly these two models."""
        found = (self.source_fingerprint, self.target_fingerprint)
        if found != (source_fingerprint, target_fingerprint):
            raise BridgeMismatchError(path, (source_fingerprint, target_fingerprint), found)

    def save(self, path: Path | str) -> None:
        """Write one .npz atomically (temp file, fsync, rename): a crash leaves the old file or the new."""
        path = Path(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "source_fingerprint": self.source_fingerprint,
            "target_fingerprint": self.target_fingerprint,
            "forward_fit": asdict(self.forward.fit),
            "reverse_fit": asdict(self.reverse.fit),
        }
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
        for name, linear in (("forward", self.forward), ("reverse", self.reverse)):
            arrays[f"{name}_matrix"] = linear.matrix
            arrays[f"{name}_source_mean"] = linear.source_mean
            arrays[f"{name}_target_mean"] = linear.target_mean
        with atomic_path(path) as temp:
            with open(temp, "wb") as handle:
                np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: Path | str, *, source_fingerprint: str | None = None, target_fingerprint: str | None = None) -> "SpaceMap":
        """Read a saved bridge; with fingerprints given, refuse one fitted for other models."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                meta = json.loads(bytes(archive["meta"]).decode("utf-8"))
                if meta.get("format_version") != FORMAT_VERSION:
                    raise BridgeFileError(path, f"format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
                maps = {
                    name: LinearMap(
                        matrix=archive[f"{name}_matrix"].astype(np.float32),
                        source_mean=archive[f"{name}_source_mean"].astype(np.float32),
                        target_mean=archive[f"{name}_target_mean"].astype(np.float32),
                        fit=MapFit(**meta[f"{name}_fit"]),
                    )
                    for name in ("forward", "reverse")
                }
                space_map = cls(meta["source_fingerprint"], meta["target_fingerprint"], maps["forward"], maps["reverse"])
        except FileNotFoundError:
            raise BridgeFileError(path, "no such file") from None
        except BridgeFileError:
            raise
        except Exception as error:  # zipfile/npz/json/key errors: a damaged or foreign file
            raise BridgeFileError(path, f"damaged or not a bridge file ({type(error).__name__}: {error})") from None
        if source_fingerprint is not None or target_fingerprint is not None:
            space_map.check(
                source_fingerprint if source_fingerprint is not None else space_map.source_fingerprint,
                target_fingerprint if target_fingerprint is not None else space_map.target_fingerprint,
                path=path,
            )
        return space_map


def fit_space_map(
    source: np.ndarray,
    target: np.ndarray,
    *,
    source_fingerprint: str,
    target_fingerprint: str,
    heldout_fraction: float = 0.2,
    seed: int = 0,
) -> SpaceMap:
    """Fit both directions from embeddings of the same sentences (row i of each is sentence i)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or target.ndim != 2 or source.shape[0] != target.shape[0]:
        raise UsageError(f"need two matrices with one row per sentence, got shapes {source.shape} and {target.shape}")
    if source.shape[0] < _MIN_SENTENCES:
        raise UsageError(f"need at least {_MIN_SENTENCES} sentences to fit a bridge, got {source.shape[0]}")
    if not (np.isfinite(source).all() and np.isfinite(target).all()):
        raise UsageError("embeddings contain NaN or infinite values")
    if not 0.0 < heldout_fraction < 1.0:
        raise UsageError("heldout_fraction must be between 0 and 1")
    source, target = _unit_rows(source), _unit_rows(target)
    order = np.random.default_rng(seed).permutation(source.shape[0])
    n_heldout = max(2, round(heldout_fraction * source.shape[0]))
    heldout, train = order[:n_heldout], order[n_heldout:]
    return SpaceMap(
        source_fingerprint,
        target_fingerprint,
        forward=fit_linear_map(source, target, train, heldout),
        reverse=fit_linear_map(target, source, train, heldout),
    )


def fit_linear_map(source: np.ndarray, target: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> LinearMap:
    """Choose the method on ``train``/``heldout`` rows, then refit it on all rows (rows unit length)."""
    best: tuple[tuple[float, float], str, float | None] | None = None
    candidates = [("procrustes", None)] + [("ridge", lam) for lam in RIDGE_LAMBDAS]
    for method, lam in candidates:
        matrix, source_mean, target_mean = _solve(source[train], target[train], method, lam)
        mapped = _unit_rows((source[heldout] - source_mean) @ matrix + target_mean)
        score = _retrieval_score(mapped, target[heldout])
        if best is None or score > best[0]:
            best = (score, method, lam)
    assert best is not None
    (r_at_1, mean_cosine), method, lam = best
    matrix, source_mean, target_mean = _solve(source, target, method, lam)
    fit = MapFit(method, lam, float(r_at_1), float(mean_cosine), int(source.shape[0]), int(heldout.size))
    return LinearMap(matrix.astype(np.float32), source_mean.astype(np.float32), target_mean.astype(np.float32), fit)


def _solve(source: np.ndarray, target: np.ndarray, method: str, lam: float | None):
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    x, y = source - source_mean, target - target_mean
    if method == "procrustes":
        # max trace(W^T X^T Y) over W with orthonormal columns (rows when d_a > d_b): W = U V^T
        u, _, vt = np.linalg.svd(x.T @ y, full_matrices=False)
        matrix = u @ vt
    else:
        gram = x.T @ x
        ridge = lam * max(np.trace(gram) / gram.shape[0], 1e-12)
        matrix = np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), x.T @ y)
    return matrix, source_mean, target_mean


def _retrieval_score(mapped: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(R@1, mean cosine) of mapped row i retrieving target row i among all target rows."""
    similarity = mapped @ _unit_rows(target).T
    own = np.diag(similarity)
    r_at_1 = float(np.mean(similarity.max(axis=1) <= own))
    return r_at_1, float(own.mean())


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
