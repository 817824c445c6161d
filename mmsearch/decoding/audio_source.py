"""What an audio reader hands the windowing in ``audio``: the file's header and its samples as mono blocks.

Two readers implement it: ``audio_sndfile`` (libsndfile) and ``audio_av`` (FFmpeg through PyAV). Both
raise ``DecodeError`` with a one-line reason, on opening (the file is not theirs to read) or while
reading (corrupt data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from ..errors import DecodeError

MAX_REASON = 200
"""Longest reason a reader puts in a DecodeError (decoders can be wordy)."""


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    """Seconds, from the header (FFmpeg: the container's or stream's stated duration, 0.0 when unknown)."""
    sample_rate: int
    channels: int
    frames: int
    format: str
    """The reader's name for the format, for messages and logs: libsndfile's format/subtype
    (``WAV/PCM_16``) or FFmpeg's container/codec (``mov/aac``, ``matroska/opus``)."""


class AudioSource(Protocol):
    """One open audio file. Close it when done (``contextlib.closing``)."""

    info: AudioInfo

    def blocks(self, frames: int) -> Iterator[tuple[int, np.ndarray]]:
        """(position, samples) pairs in order: float32 mono samples at ``info.sample_rate``, about
        ``frames`` at a time, contiguous; ``position`` is where the first block starts on the media
        timeline, in frames (0 unless the audio starts after the start of the media)."""
        ...

    def close(self) -> None: ...


def checked_file(path: Path | str) -> Path:
    """``path`` as a Path, after refusing what no reader could open: a missing, unreadable or empty file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DecodeError(path, "no such file") from None
    except OSError as error:
        raise DecodeError(path, f"cannot read file ({error.strerror or error})") from None
    if size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    return path


def one_line(text: str) -> str:
    """A decoder's message as one short line, without a trailing full stop."""
    return " ".join(text.split()).rstrip(".")[:MAX_REASON]


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) float32 -> contiguous float32 mono by the mean of the channels; NaN/inf -> 0."""
    channels = samples.shape[1]
    mono = samples[:, 0].astype(np.float32)  # a copy; then column by column (numpy's mean along a short
    for channel in range(1, channels):       # axis is several times slower), in the order mean() adds them
        mono += samples[:, channel]
    if channels > 1:
        mono /= np.float32(channels)
    if not np.isfinite(mono).all():
        mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(mono, dtype=np.float32)
