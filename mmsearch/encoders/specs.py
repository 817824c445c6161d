"""Model specs: ``ARCH:WEIGHTS`` where WEIGHTS is a hub tag, a local checkpoint path, or ``random``."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError

RANDOM = "random"
RANDOM_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    weights: str

    @property
    def is_random(self) -> bool:
        return self.weights == RANDOM

    @property
    def local_path(self) -> Path | None:
        """The checkpoint file or folder when WEIGHTS names one that exists."""
        path = Path(self.weights).expanduser()
        return path if (os.sep in self.weights or path.suffix or path.exists()) and path.exists() else None

    def __str__(self) -> str:
        return f"{self.arch}:{self.weights}"


def parse_spec(text: str, *, default_weights: str | None = None) -> ModelSpec:
    """Split ``ARCH:WEIGHTS`` at the first colon (a Windows drive letter stays with the weights)."""
    text = text.strip()
    arch, sep, weights = text.partition(":")
    if not arch:
        raise ModelLoadError(text, "expected ARCH:WEIGHTS, e.g. ViT-B-32:laion2b_s34b_b79k")
    if not sep or not weights:
        if default_weights is None:
            raise ModelLoadError(text, f"no weights given: write {arch}:TAG, {arch}:/path/to/checkpoint or {arch}:random")
        weights = default_weights
    return ModelSpec(arch, weights)


def file_fingerprint(path: Path) -> str:
    """sha256 of a checkpoint file (or of every file in a checkpoint folder, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def fingerprint(spec: ModelSpec) -> str:
    if spec.is_random:
        return f"{spec.arch}:random:seed{RANDOM_SEED}"
    local = spec.local_path
    if local is not None:
        return f"{spec.arch}:sha256:{file_fingerprint(local)}"
    return str(spec)
