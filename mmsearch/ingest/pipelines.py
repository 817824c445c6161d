"""Per-modality decode (runs in worker threads) and encode (runs on the model) steps used by the indexer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

from ..decoding.images import load_image, load_jpeg_pixels
from ..decoding.text import load_passages
from ..errors import DecodeError
from ..records import Modality, Segment
from .timeouts import TaskTimeout, streamed


class Pipeline(Protocol):
    modality: Modality
    role: str
    """The model space the vectors live in: 'clip' or 'clap'."""
    dim: int

    def decode(self, path: Path) -> Iterable[tuple[Segment, Any]]:
        """(segment, model input) pairs for a file; may be lazy. Raises DecodeError."""

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        """Model inputs -> (N, dim) float32 unit vectors."""


@dataclass
class _ModelPipeline:
    encoder: Any

    @property
    def dim(self) -> int:
        return self.encoder.identity.dim


@dataclass
class ImagePipeline(_ModelPipeline):
    modality: Modality = Modality.IMAGE
    role: str = "clip"

    def decode(self, path: Path) -> list[tuple[Segment, Any]]:
        if getattr(self.encoder, "device_preprocess", False):
            from ..encoders.clip import DEVICE_RESIZE_MAX_PIXELS

            pixels = load_jpeg_pixels(path, max_pixels=DEVICE_RESIZE_MAX_PIXELS)
            if pixels is not None:
                return [(Segment(0), self.encoder.preprocess(pixels))]
        image = load_image(path, target_size=self.encoder.image_size)
        return [(Segment(0), self.encoder.preprocess(image))]

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        import torch

        return self.encoder.encode_images(torch.stack(list(inputs)))


@dataclass
class TextPipeline(_ModelPipeline):
    modality: Modality = Modality.TEXT
    role: str = "clip"

    def decode(self, path: Path) -> list[tuple[Segment, Any]]:
        return [(passage, passage.text) for passage in load_passages(path)]

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        return self.encoder.encode_texts(list(inputs)).vectors


EAGER_AUDIO_SECONDS = 120.0
"""Audio files up to this long are decoded whole in a worker thread; longer ones stream window by window."""


@dataclass
class AudioPipeline(_ModelPipeline):
    modality: Modality = Modality.AUDIO
    role: str = "clap"
    window_timeout: float | None = 60.0
    """Seconds a long (streamed) file may take to produce its next window before it is recorded as failed."""

    def decode(self, path: Path) -> Iterable[tuple[Segment, Any]]:
        from ..decoding.audio import iter_audio_windows, probe_audio

        info = probe_audio(path)
        windows = (
            (Segment(ordinal, start=round(w.start, 3), end=round(w.end, 3)), w.samples)
            for ordinal, w in enumerate(iter_audio_windows(path, sample_rate=self.encoder.sample_rate,
                                                           window_seconds=self.encoder.window_seconds))
        )
        if info.duration <= EAGER_AUDIO_SECONDS:
            return list(windows)  # decoded whole, in the indexer's worker thread (under its per-file limit)
        return self._streamed(path, windows)

    def _streamed(self, path: Path, windows: Iterator[tuple[Segment, Any]]) -> Iterator[tuple[Segment, Any]]:
        """Long files: decoded a few windows ahead in a thread of their own, each window under a time limit."""
        try:
            yield from streamed(windows, timeout=self.window_timeout, what="audio")
        except TaskTimeout as exc:
            raise DecodeError(path, f"timed out: no audio decoded for {exc.seconds:g} s") from None

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        return self.encoder.encode_audio(list(inputs))
