"""Bridges between two embedding spaces, learnt through text (C-MCR style), and their one-file format.

CLAP and CLIP each embed the same sentences with their text towers. A map fitted from CLAP's text vectors to
CLIP's (and one back) then carries audio vectors into CLIP's space, and image vectors into CLAP's, so every
modality can be searched from every other.

Linear fitting tries ridge least squares (lambda from a small grid) and orthogonal Procrustes (semi-orthogonal
when the two dimensions differ) on a training split, keeps the one with the best retrieval on the held-out
sentences (R@1 of a mapped row finding its own partner, ties broken by mean cosine), and refits it on all
sentences. Pure numpy.

``map="mlp"`` or ``"auto"`` also fits a small MLP (``mlp``: the best linear map plus a ReLU correction, torch
for fitting only) on the same training split and scores it on the same held-out sentences. ``mlp`` keeps it;
``auto`` keeps it only where it measurably retrieves better, by both:

- ``MLP_MARGIN``: held-out R@1 at least 0.01 above the best linear map's (one query in a hundred answered
  right that was not; less is not worth a map that needs torch to refit and may drift on unseen text);
- ``MLP_MIN_Z``: the gain is no accident of the held-out draw: of the held-out sentences the two maps disagree
  on (g retrieved by the MLP alone, l by the linear map alone), (g - l) >= 2 sqrt(g + l) (McNemar's paired
  test, one-sided p of about 0.02). With few held-out sentences a 0.01 gain is one or two sentences, noise.

Otherwise the linear map is kept. Every direction records what was asked, what was kept and each candidate's
held-out figures. Format version 2 stores either kind of map; version-1 files (linear only) still load.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..encoders.base import l2_normalise
from ..errors import MMSearchError, UsageError
from .heldout import CandidateFit, MapFit, query_rows, retrieval_hits, unit_rows
from .mlp import MlpMap, fit_mlp_map, try_mlp

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1: linear maps only (written before ``--map``); version 2: ``linear`` or ``mlp`` per direction."""
MAPS = ("linear", "mlp", "auto")
MLP_MARGIN = 0.01
"""``auto`` keeps the MLP only if its held-out R@1 beats the best linear map's by at least this much..."""
MLP_MIN_Z = 2.0
"""...and by at least this many standard errors of the paired difference (see the module docstring)."""
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
class LinearMap:
    """x -> normalise((normalise(x) - source_mean) @ matrix + target_mean)."""

    matrix: np.ndarray
    source_mean: np.ndarray
    target_mean: np.ndarray
    fit: MapFit

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        vectors = query_rows(vectors, self.matrix.shape[0])
        return l2_normalise((l2_normalise(vectors) - self.source_mean) @ self.matrix + self.target_mean)


Direction = LinearMap | MlpMap
"""One direction of a bridge: ``apply(vectors)`` and ``fit``."""
_KINDS: dict[str, type] = {"linear": LinearMap, "mlp": MlpMap}


@dataclass(frozen=True)
class SpaceMap:
    """Both directions between two models' spaces, tied to the models' fingerprints."""

    source_fingerprint: str
    target_fingerprint: str
    forward: Direction
    """source -> target (e.g. CLAP -> CLIP: audio queried by images and text in CLIP's space)."""
    reverse: Direction
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
        meta: dict[str, object] = {
            "format_version": FORMAT_VERSION,
            "source_fingerprint": self.source_fingerprint,
            "target_fingerprint": self.target_fingerprint,
        }
        arrays = {}
        for name, direction in (("forward", self.forward), ("reverse", self.reverse)):
            meta[f"{name}_map"] = "mlp" if isinstance(direction, MlpMap) else "linear"
            meta[f"{name}_fit"] = asdict(direction.fit)
            for field in _array_fields(type(direction)):
                arrays[f"{name}_{field}"] = getattr(direction, field)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
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
                if meta.get("format_version") not in READABLE_VERSIONS:
                    raise BridgeFileError(path, f"format version {meta.get('format_version')}, expected "
                                                f"{' or '.join(map(str, READABLE_VERSIONS))}")
                maps = {}
                for name in ("forward", "reverse"):
                    kind = _KINDS[meta.get(f"{name}_map", "linear")]  # version 1: linear
                    arrays = {field: archive[f"{name}_{field}"].astype(np.float32) for field in _array_fields(kind)}
                    maps[name] = kind(**arrays, fit=MapFit.from_json(meta[f"{name}_fit"]))
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


def check_map(map: str) -> None:
    """Refuse a map kind other than ``linear``, ``mlp`` or ``auto``."""
    if map not in MAPS:
        raise UsageError(f"{{opt:map}} must be one of {', '.join(MAPS)}, not {map!r}")


def fit_space_map(
    source: np.ndarray,
    target: np.ndarray,
    *,
    source_fingerprint: str,
    target_fingerprint: str,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    map: str = "linear",
) -> SpaceMap:
    """Fit both directions from embeddings of the same sentences (row i of each is sentence i); ``map``:
    ``linear``, ``mlp`` or ``auto`` (the MLP where it measurably beats the best linear map, see above)."""
    check_map(map)
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
    source, target = unit_rows(source), unit_rows(target)
    order = np.random.default_rng(seed).permutation(source.shape[0])
    n_heldout = max(2, round(heldout_fraction * source.shape[0]))
    heldout, train = order[:n_heldout], order[n_heldout:]
    return SpaceMap(
        source_fingerprint,
        target_fingerprint,
        forward=fit_direction(source, target, train, heldout, map, seed=seed),
        reverse=fit_direction(target, source, train, heldout, map, seed=seed),
    )


def fit_direction(source: np.ndarray, target: np.ndarray, train: np.ndarray, heldout: np.ndarray, map: str = "linear",
                  *, seed: int = 0) -> Direction:
    """One direction as ``map`` asks: candidates fitted on ``train`` and scored on ``heldout``, the one kept
    refitted on all rows (rows unit length)."""
    linear, linear_hits = _choose_linear(source, target, train, heldout)
    if map == "linear":
        return _refit_linear(source, target, linear, heldout.size, requested=map, candidates=(linear,))

    def solve(rows: np.ndarray):
        return _solve(source[rows], target[rows], linear.method, linear.ridge_lambda)

    trial = try_mlp(source, target, train, heldout, solve, seed=seed)
    mlp = CandidateFit("mlp", "mlp", None, trial.heldout_r_at_1, trial.heldout_mean_cosine, epochs=trial.epochs,
                       gained=int(np.sum(trial.hits & ~linear_hits)), lost=int(np.sum(linear_hits & ~trial.hits)))
    kept = map == "mlp" or keeps_mlp(linear, mlp)
    log.info("%s bridge direction (%s asked): linear %s R@1 %.3f, mlp R@1 %.3f (+%d -%d sentences, %d epochs)",
             "mlp" if kept else "linear", map, linear.method, linear.heldout_r_at_1, mlp.heldout_r_at_1,
             mlp.gained, mlp.lost, trial.epochs)
    if not kept:
        return _refit_linear(source, target, linear, heldout.size, requested=map, candidates=(linear, mlp))
    fit = MapFit("mlp", None, mlp.heldout_r_at_1, mlp.heldout_mean_cosine, int(source.shape[0]), int(heldout.size),
                 requested=map, candidates=(linear, mlp), epochs=trial.epochs)
    return fit_mlp_map(source, target, solve, trial.epochs, fit, seed=seed)


def keeps_mlp(linear: CandidateFit, mlp: CandidateFit) -> bool:
    """Whether ``auto`` keeps the MLP: held-out R@1 up by ``MLP_MARGIN`` and ``MLP_MIN_Z`` standard errors."""
    gained, lost = mlp.gained or 0, mlp.lost or 0
    return (mlp.heldout_r_at_1 - linear.heldout_r_at_1 >= MLP_MARGIN - 1e-9  # 2 of 200 sentences is 0.01
            and gained - lost >= MLP_MIN_Z * math.sqrt(gained + lost))


def fit_linear_map(source: np.ndarray, target: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> LinearMap:
    """Choose the method on ``train``/``heldout`` rows, then refit it on all rows (rows unit length)."""
    linear, _ = _choose_linear(source, target, train, heldout)
    return _refit_linear(source, target, linear, heldout.size, requested="linear", candidates=(linear,))


def _choose_linear(source: np.ndarray, target: np.ndarray, train: np.ndarray,
                   heldout: np.ndarray) -> tuple[CandidateFit, np.ndarray]:
    """The best linear method on the held-out rows, and which of them it retrieves first."""
    best: tuple[tuple[float, float], str, float | None, np.ndarray] | None = None
    candidates = [("procrustes", None)] + [("ridge", lam) for lam in RIDGE_LAMBDAS]
    for method, lam in candidates:
        matrix, source_mean, target_mean = _solve(source[train], target[train], method, lam)
        mapped = unit_rows((source[heldout] - source_mean) @ matrix + target_mean)
        hits, own = retrieval_hits(mapped, target[heldout])
        score = (float(np.mean(hits)), float(own.mean()))
        if best is None or score > best[0]:
            best = (score, method, lam, hits)
    assert best is not None
    (r_at_1, mean_cosine), method, lam, hits = best
    return CandidateFit("linear", method, lam, r_at_1, mean_cosine), hits


def _refit_linear(source: np.ndarray, target: np.ndarray, linear: CandidateFit, n_heldout: int, *, requested: str,
                  candidates: tuple[CandidateFit, ...]) -> LinearMap:
    matrix, source_mean, target_mean = _solve(source, target, linear.method, linear.ridge_lambda)
    fit = MapFit(linear.method, linear.ridge_lambda, linear.heldout_r_at_1, linear.heldout_mean_cosine,
                 int(source.shape[0]), int(n_heldout), requested=requested, candidates=candidates)
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


def _array_fields(kind: type) -> list[str]:
    return [field.name for field in fields(kind) if field.name != "fit"]
