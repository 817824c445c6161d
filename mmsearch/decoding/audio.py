"""Audio file -> fixed-length mono windows at the encoder's sample rate, streamed with bounded memory.

Decoding uses soundfile (libsndfile: WAV/RF64/WAVEX/AIFF/FLAC/Ogg Vorbis/Opus/MP3/...), never FFmpeg.
The file is read in blocks, downmixed to mono by the mean of its channels, cut into overlapping
windows at its own rate, and each window is resampled to the target rate and yielded as soon as it
is complete, so a multi-hour recording never sits in memory whole.

Choices a caller should know:

- Windows start at ``k * hop_seconds`` and stop after the first window that reaches the end of the
  file. A window that runs past the end (the last one, or the only one of a short clip) is
  zero-padded to full length; its ``end`` is the end of the real audio, never past the file.
- A valid file with no audio frames raises ``DecodeError("no audio frames")``: a window of pure
  padding would be a meaningless vector that matches every quiet query.
- Every failure of libsndfile (unknown format, corrupt or truncated data, headerless raw PCM...)
  becomes ``DecodeError(path, reason)`` with a one-line reason; nothing else escapes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DecodeError, UsageError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64"}
)
"""File-name suffixes (lower case, with the dot, as ``Path.suffix``) that libsndfile can usually read."""

UNSUPPORTED_AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".m4a", ".m4b", ".aac", ".adts", ".wma", ".ac3", ".eac3", ".ape", ".dsf", ".dff", ".mpc", ".tak", ".tta",
     ".wv", ".spx", ".amr", ".mid", ".midi", ".oggflac", ".raw", ".webm", ".mp4", ".mka"}
)
"""Audio that soundfile cannot decode (AAC/ALAC, WMA, AC-3, APE, DSD, MIDI, headerless PCM...). Such files
are still picked up, so that they are listed as failed with the reason instead of silently ignored."""

_MAX_POLYPHASE_KERNEL = 4_000_000
"""Largest torchaudio sinc kernel (elements) we build; odd rate ratios fall back to FFT resampling."""


@dataclass(frozen=True)
class AudioInfo:
    duration: float
    """Seconds, from the frame count in the header."""
    sample_rate: int
    channels: int
    frames: int
    format: str
    """libsndfile's format/subtype, e.g. ``WAV/PCM_16`` (for messages and logs)."""


@dataclass(frozen=True)
class AudioWindow:
    """One stretch of a recording, ready for the audio encoder."""

    start: float
    """Seconds from the start of the original file."""
    end: float
    """Seconds; the end of real audio in this window (``<= duration``), before any padding."""
    samples: np.ndarray
    """float32 mono at the target rate, always ``round(window_seconds * sample_rate)`` long."""


def probe_audio(path: Path | str) -> AudioInfo:
    """Read the header of an audio file. Raises DecodeError when libsndfile cannot open it."""
    with _open(path) as sound:
        return AudioInfo(
            duration=sound.frames / sound.samplerate if sound.samplerate > 0 else 0.0,
            sample_rate=int(sound.samplerate),
            channels=int(sound.channels),
            frames=int(sound.frames),
            format=f"{sound.format}/{sound.subtype}",
        )


def iter_audio_windows(
    path: Path | str,
    *,
    sample_rate: int,
    window_seconds: float = 10.0,
    hop_seconds: float | None = None,
    block_seconds: float = 60.0,
) -> Iterator[AudioWindow]:
    """Yield the windows of an audio file in order; memory stays about one block plus one window.

    ``hop_seconds`` defaults to 3/4 of the window (7.5 s for 10 s windows: 2.5 s of overlap, so a
    sound cut by one window boundary is whole in the next window).
    Raises DecodeError (possibly after some windows were yielded, for data corrupt mid-file).
    """
    if hop_seconds is None:
        hop_seconds = 0.75 * window_seconds
    if sample_rate <= 0 or window_seconds <= 0 or hop_seconds <= 0 or block_seconds <= 0:
        raise UsageError("sample_rate, window_seconds, hop_seconds and block_seconds must be positive")
    if hop_seconds > window_seconds:
        raise UsageError("hop_seconds must not exceed window_seconds (audio between windows would be skipped)")
    with _open(path) as sound:
        native_rate = int(sound.samplerate)
        if native_rate <= 0:
            raise DecodeError(path, f"invalid sample rate {native_rate}")
        resampler = _Resampler(native_rate, sample_rate)
        window_native = max(1, round(window_seconds * native_rate))
        window_target = round(window_seconds * sample_rate)
        block_frames = max(window_native, round(block_seconds * native_rate))

        buffer = np.zeros(0, dtype=np.float32)  # mono samples from frame `buffer_start` on
        buffer_start = 0
        ordinal = 0  # next window to emit
        total = 0  # frames read so far
        at_end = False
        while not at_end:
            block = _read_block(sound, path, block_frames)
            at_end = block.size == 0
            total += block.size
            buffer = np.concatenate((buffer, block)) if buffer.size else block
            while True:
                start = round(ordinal * hop_seconds * native_rate)
                offset = start - buffer_start
                if buffer.size - offset >= window_native:
                    piece = buffer[offset : offset + window_native]
                elif at_end and _window_needed(ordinal, start, hop_seconds, window_native, native_rate, total):
                    piece = buffer[offset:]
                else:
                    break
                yield AudioWindow(
                    start=start / native_rate,
                    end=(start + piece.size) / native_rate,
                    samples=_fit(resampler(piece), window_target),
                )
                if piece.size < window_native:  # a padded window is always the last one
                    return
                ordinal += 1
                drop = min(round(ordinal * hop_seconds * native_rate) - buffer_start, buffer.size)
                buffer, buffer_start = buffer[drop:], buffer_start + drop
        if total == 0:
            raise DecodeError(path, "no audio frames")
        log.debug("%s: %d windows from %d frames at %d Hz", path, ordinal, total, native_rate)


def _window_needed(ordinal: int, start: int, hop: float, window_native: int, rate: int, total: int) -> bool:
    """At the end of the file: is a (partial) window starting at frame ``start`` still needed?"""
    if start >= total:
        return False
    if ordinal == 0:
        return True
    previous_end = round((ordinal - 1) * hop * rate) + window_native
    return previous_end < total


def _fit(samples: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad to exactly ``length`` samples (float32, contiguous)."""
    if samples.size >= length:
        return np.ascontiguousarray(samples[:length], dtype=np.float32)
    out = np.zeros(length, dtype=np.float32)
    out[: samples.size] = samples
    return out


def _open(path: Path | str):
    import soundfile as sf

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DecodeError(path, "no such file") from None
    except OSError as error:
        raise DecodeError(path, f"cannot read file ({error.strerror or error})") from None
    if size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    try:
        return sf.SoundFile(str(path), mode="r")
    except TypeError as error:  # soundfile asks for samplerate/channels: headerless RAW
        raise DecodeError(path, f"headerless raw audio is not supported ({error})") from None
    except Exception as error:  # LibsndfileError, RuntimeError, ValueError, OSError...
        raise DecodeError(path, f"not a readable audio file ({_libsndfile_reason(error)})") from None


def _read_block(sound, path: Path | str, frames: int) -> np.ndarray:
    """Next ``frames`` frames as float32 mono; empty at the end. Decoder errors become DecodeError."""
    try:
        block = sound.read(frames, dtype="float32", always_2d=True)
    except Exception as error:
        raise DecodeError(path, f"corrupt audio data ({_libsndfile_reason(error)})") from None
    mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
    if not np.isfinite(mono).all():
        mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _libsndfile_reason(error: Exception) -> str:
    """libsndfile's own words without the "Error opening 'path':" prefix, on one line."""
    text = getattr(error, "error_string", None) or str(error) or type(error).__name__
    if text.startswith("Error opening"):
        text = text.split(": ", 1)[-1]
    text = " ".join(text.split()).rstrip(".")
    if text.startswith("File does not exist or is not a regular file"):
        text = "unrecognised or truncated data"  # libsndfile's words for a file too short to identify
    return text[:200]


class _Resampler:
    """Native rate -> target rate for one file; torchaudio's sinc resampler, FFT for awkward ratios."""

    def __init__(self, source_rate: int, target_rate: int):
        self.source_rate, self.target_rate = source_rate, target_rate
        g = math.gcd(source_rate, target_rate)
        orig, new = source_rate // g, target_rate // g
        width = math.ceil(6 * orig / (min(orig, new) * 0.99))
        self.use_torchaudio = source_rate != target_rate and new * (2 * width + orig) <= _MAX_POLYPHASE_KERNEL
        self._transform = None

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self.source_rate == self.target_rate or samples.size == 0:
            return samples
        if not self.use_torchaudio:
            return _fft_resample(samples, self.source_rate, self.target_rate)
        import torch
        import torchaudio

        if self._transform is None:
            self._transform = torchaudio.transforms.Resample(self.source_rate, self.target_rate)
        with torch.inference_mode():
            out = self._transform(torch.from_numpy(np.ascontiguousarray(samples)))
        return out.numpy()


def _fft_resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of one window by truncating / zero-extending its spectrum."""
    n_in = samples.size
    n_out = max(1, round(n_in * target_rate / source_rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    keep = min(spectrum.size, n_out // 2 + 1)
    resized = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    resized[:keep] = spectrum[:keep]
    return (np.fft.irfft(resized, n=n_out) * (n_out / n_in)).astype(np.float32)
