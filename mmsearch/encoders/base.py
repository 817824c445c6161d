"""The encoder contract: batch methods that return L2-normalised float32 vectors, plus capabilities."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class ModelIdentity:
    """What made a store's vectors. Two encoders with the same fingerprint give the same vectors."""

    spec: str
    """As the user wrote it, normalised: ``ARCH:WEIGHTS``."""
    fingerprint: str
    """Stable across machines: arch + tag, or arch + sha256 of a checkpoint file, or arch + 'random' + seed."""
    dim: int
    semantic: bool
    """False for random weights: the vectors are well-formed but carry no meaning."""


@dataclass(frozen=True)
class TextEncoding:
    vectors: np.ndarray
    truncated: tuple[bool, ...]
    """Per text: True when it was longer than the model's context and was cut."""


@runtime_checkable
class ImageTextEncoder(Protocol):
    """open_clip-style model: images and texts in one space."""

    identity: ModelIdentity
    image_size: int

    def preprocess(self, image: "Image.Image") -> "torch.Tensor":
        """PIL RGB image -> model input tensor (C,H,W). Thread-safe; runs in decoding workers."""

    def encode_images(self, pixels: "torch.Tensor | Sequence[torch.Tensor]") -> np.ndarray:
        """``preprocess`` outputs, stacked as a (N,C,H,W) batch when they have one shape, else as a
        list -> (N, dim) float32, rows L2-normalised."""

    def encode_texts(self, texts: Sequence[str]) -> TextEncoding:
        """Texts -> (N, dim) float32, rows L2-normalised; over-long texts are truncated and flagged."""

    def count_tokens(self, text: str) -> int:
        """Number of tokens the model would see for ``text`` (without the model's cap)."""


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return vectors / norms
