"""Synthetic embeddings with known structure, for benchmarks and tests of approximate search.

Uniform noise on the sphere is the worst case for every approximate index and looks nothing like CLIP
or CLAP vectors, which crowd around topics and vary along few directions within each. So the data here
is a Gaussian mixture on the unit sphere with low intrinsic dimension:

    v = normalise(centre_c + spread * B_c z / sqrt(r) + noise * g / sqrt(d)),   c ~ Zipf(clusters)

with unit cluster centres ``centre_c``, an orthonormal basis ``B_c`` (d x r) per cluster, z ~ N(0, I_r)
and g ~ N(0, I_d). Cluster sizes follow a Zipf law (a few big topics, many small ones). Rows are made in
fixed blocks from a seed per block, so any slice can be generated on its own, in any order, in bounded
memory: 10M x 512 is streamed, never held.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

BLOCK = 65_536


@dataclass(frozen=True)
class ClusteredSphere:
    dim: int
    clusters: int = 256
    intrinsic: int = 24
    """r: directions of variation within a cluster."""
    spread: float = 0.8
    noise: float = 0.25
    zipf: float = 0.5
    seed: int = 0

    @property
    def rank(self) -> int:
        return max(1, min(self.intrinsic, self.dim))

    def describe(self) -> str:
        return (f"synthetic clustered: Gaussian mixture on the unit sphere, {self.clusters} Zipf({self.zipf})-sized "
                f"clusters, intrinsic dimension {self.rank} (spread {self.spread}, isotropic noise {self.noise}), "
                f"dim {self.dim}, seed {self.seed}")

    def _model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cached = self.__dict__.get("_cached_model")
        if cached is None:
            rng = np.random.default_rng([self.seed, 0x5EED])
            centres = rng.standard_normal((self.clusters, self.dim)).astype(np.float32)
            centres /= np.linalg.norm(centres, axis=1, keepdims=True)
            bases = rng.standard_normal((self.clusters, self.dim, self.rank)).astype(np.float32)
            bases, _ = np.linalg.qr(bases)  # orthonormal columns per cluster
            weights = 1.0 / np.arange(1, self.clusters + 1) ** self.zipf
            cached = (centres, bases.astype(np.float32), weights / weights.sum())
            object.__setattr__(self, "_cached_model", cached)  # derived data, same for equal records
        return cached

    def _draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        centres, bases, weights = self._model()
        labels = rng.choice(self.clusters, size=count, p=weights)
        latent = rng.standard_normal((count, self.rank)).astype(np.float32) / np.sqrt(self.rank)
        out = centres[labels] + self.noise / np.sqrt(self.dim) * rng.standard_normal((count, self.dim)).astype(np.float32)
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)
            out[rows] += self.spread * latent[rows] @ bases[label].T
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out.astype(np.float32)

    def _block(self, number: int) -> np.ndarray:
        return self._draw(np.random.default_rng([self.seed, 1, number]), BLOCK)

    def rows(self, start: int, count: int) -> np.ndarray:
        """Rows ``start .. start+count`` of the (infinite, deterministic) collection."""
        parts = []
        position, end = start, start + count
        while position < end:
            block, offset = divmod(position, BLOCK)
            take = min(end - position, BLOCK - offset)
            parts.append(self._block(block)[offset:offset + take])
            position += take
        return np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)

    def stream(self, n: int, chunk: int = BLOCK) -> Iterator[np.ndarray]:
        """The first ``n`` rows, ``chunk`` at a time (chunk a multiple of BLOCK avoids regenerating)."""
        for start in range(0, n, chunk):
            yield self.rows(start, min(chunk, n - start))

    def queries(self, count: int, *, salt: int = 0) -> np.ndarray:
        """Held-out draws from the same mixture (never among the collection's rows); another ``salt``
        gives another independent set."""
        return self._draw(np.random.default_rng([self.seed, 2, salt]), count)
