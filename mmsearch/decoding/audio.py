"""Audio file -> fixed-length mono windows at the encoder's sample rate, streamed with bounded memory.

Two readers decode: FFmpeg through PyAV (``audio_av``: every container and codec FFmpeg reads, and the
soundtrack of video files) and libsndfile through soundfile (``audio_sndfile``), which is kept first for
the formats where it measured faster or decodes more exactly (``SOUNDFILE_FIRST``). When the first reader cannot open a file, or
fails before its first window (a .wav with a codec libsndfile lacks, a mislabelled extension), the other
one is tried; when both fail, the reason of the one that got further is raised.

Either way the file is read in blocks, downmixed to mono by the mean of its channels, cut into
overlapping windows at its own rate, and each window is resampled to the target rate and yielded as soon
as it is complete, so a multi-hour recording never sits in memory whole. Resampling is torchaudio's sinc
resampler, window by window, for both readers (not libswresample inside the FFmpeg reader): windows are
cut at exact sample positions of the file's own rate, and both readers give the same window for the same
samples, so which one decoded a file never changes its vectors.

Choices a caller should know:

- Windows start at ``k * hop_seconds`` on the media timeline (what a player shows) and stop after the
  first window that reaches the end of the audio. A window that runs past the end (the last one, or the
  only one of a short clip) is zero-padded to full length; its ``end`` is the end of the real audio.
  Audio that starts after the media does (a video whose soundtrack starts late) is placed where it
  starts: windows wholly before it are skipped, the gap in the first one is silence.
- A valid file with no audio frames raises ``DecodeError("no audio frames")``: a window of pure
  padding would be a meaningless vector that matches every quiet query.
- Every failure (unknown format, no audio stream, corrupt or truncated data, headerless raw PCM...)
  becomes ``DecodeError(path, reason)`` with a one-line reason; nothing else escapes.
"""
from __future__ import annotations

import logging
import math
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import DecodeError, UsageError
from .audio_av import PyAVSource
from .audio_resample import Resampler
from .audio_sndfile import SoundfileSource
from .audio_source import AudioInfo, AudioSource, checked_file

__all__ = ["AUDIO_EXTENSIONS", "READERS", "SOUNDFILE_FIRST", "UNSUPPORTED_AUDIO_EXTENSIONS", "AudioInfo",
           "AudioWindow", "iter_audio_windows", "probe_audio"]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: frozenset[str] = frozenset({
    # libsndfile and FFmpeg
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf",
    ".w64",
    # FFmpeg only: MP4/3GP audio (AAC, ALAC), raw AAC, WMA, (E-)AC-3, Monkey's Audio, DSD, Musepack, TAK,
    # TrueAudio, WavPack, Speex, AMR, Matroska/WebM audio, Ogg FLAC, MPEG-1/2 layer II, RealAudio, VOC
    ".m4a", ".m4b", ".m4r", ".3ga", ".aac", ".adts", ".wma", ".ac3", ".eac3", ".ape", ".dsf", ".dff", ".mpc",
    ".tak", ".tta", ".wv", ".spx", ".amr", ".mka", ".weba", ".oggflac", ".mp2", ".mpa", ".ra", ".voc",
})
"""File-name suffixes (lower case, with the dot, as ``Path.suffix``) of audio-only files these readers
decode, each checked by decoding a file of that kind (tests/decoding). Video containers (.mp4, .mkv,
.webm, .mov, .avi) are not listed: they are found as video, and their soundtrack decodes here too."""

UNSUPPORTED_AUDIO_EXTENSIONS: frozenset[str] = frozenset({".mid", ".midi", ".raw"})
"""Audio that neither reader decodes: MIDI (notes, not sound) and headerless raw PCM (no rate, channels or
sample format to read). Such files are still picked up, so that they are listed as failed with the reason
instead of silently ignored."""

SOUNDFILE_FIRST: frozenset[str] = frozenset({".wav", ".wave", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf",
                                             ".w64", ".mp3", ".ogg", ".oga", ".raw"})
"""Suffixes read with libsndfile first; every other file goes to FFmpeg first, and each reader is the other's
fallback. Decided from ``benchmarks/bench_audio_decode.py`` on the shared corpus (AMD EPYC, 2 cores shared
with other work; best of 5 per file, the readers taking turns): milliseconds per minute of audio to 48 kHz
windows, and PyAV / soundfile for that and for decoding alone (the resampling both share left out)::

    suffix  files  soundfile  PyAV   ratio  decoding alone  first
    .wav     40     1302      1493   1.15   4.79            soundfile: faster (FFmpeg's open outweighs short clips)
    .mp3     39      312       355   1.14   1.57            soundfile: faster
    .aif      4      111       133   1.19   1.72            soundfile: faster; .aiff .aifc .au .snd .caf .w64 alike
    .ogg     30      234       239   1.02   1.05            soundfile: as fast, and exact at the end of Vorbis
    .flac     3      424       390   0.92   1.08            PyAV: as fast (0.59 to 1.08 over runs), same samples
    .opus     1      561       212   0.38   0.28            PyAV: 3.6x faster decoding (libopus), same samples

Correctness weighed too: FFmpeg ends Ogg Vorbis up to a block off the last granule position (2.9 ms short on
corpus files, 316 samples long on a 22.05 kHz clip: an extra window), reads RIFX (big-endian) 24-bit WAV as
little-endian noise, and keeps MP3's 529-sample decoder delay when there is no LAME/Xing header; libsndfile
does all three right. ``.raw`` goes to libsndfile first because it names the problem (headerless PCM)."""

READERS: dict[str, type] = {"soundfile": SoundfileSource, "pyav": PyAVSource}
"""The readers by name, for ``iter_audio_windows(reader=...)`` (benchmarks, parity tests)."""


@dataclass(frozen=True)
class AudioWindow:
    """One stretch of a recording, ready for the audio encoder."""

    start: float
    """Seconds from the start of the media (the start of the file, for audio files)."""
    end: float
    """Seconds; the end of real audio in this window (``<= duration``), before any padding."""
    samples: np.ndarray
    """float32 mono at the target rate, always ``round(window_seconds * sample_rate)`` long."""


def probe_audio(path: Path | str) -> AudioInfo:
    """Read the header of an audio file (of the first reader that opens it). Raises DecodeError when none can."""
    path = checked_file(path)
    failures = []
    for name in _reader_order(path):
        try:
            source = READERS[name](path)
        except DecodeError as error:
            failures.append(error)
            continue
        with closing(source):
            return source.info
    raise failures[0]


def iter_audio_windows(
    path: Path | str,
    *,
    sample_rate: int,
    window_seconds: float = 10.0,
    hop_seconds: float | None = None,
    block_seconds: float = 60.0,
    reader: str | None = None,
) -> Iterator[AudioWindow]:
    """Yield the windows of an audio file in order; memory stays about one block plus one window.

    ``hop_seconds`` defaults to 3/4 of the window (7.5 s for 10 s windows: 2.5 s of overlap, so a
    sound cut by one window boundary is whole in the next window). ``reader``: one of ``READERS`` alone,
    without the fallback (for benchmarks, and for checking that both readers give the same windows).
    Raises DecodeError (possibly after some windows were yielded, for data corrupt mid-file).
    """
    hop_seconds = _checked(sample_rate, window_seconds, hop_seconds, block_seconds)
    path = checked_file(path)
    failures: list[tuple[bool, DecodeError]] = []  # (opened, error) of each reader that failed
    for name in _reader_order(path) if reader is None else (reader,):
        try:
            source = READERS[name](path)
        except DecodeError as error:
            if reader is not None:
                raise
            failures.append((False, error))
            continue
        yielded = False
        with closing(source):
            try:
                for window in _windows(source, path, sample_rate, window_seconds, hop_seconds, block_seconds):
                    yielded = True
                    yield window
                return
            except DecodeError as error:
                if yielded or reader is not None:
                    raise
                log.debug("%s: %s failed before its first window: %s", path, name, error.reason)
                failures.append((True, error))
    raise max(failures, key=lambda failure: failure[0])[1]  # the first reader that got past opening


def _reader_order(path: Path) -> tuple[str, str]:
    return ("soundfile", "pyav") if path.suffix.lower() in SOUNDFILE_FIRST else ("pyav", "soundfile")


def _checked(sample_rate: int, window_seconds: float, hop_seconds: float | None, block_seconds: float) -> float:
    """The hop, after refusing settings that make no windows."""
    if hop_seconds is None:
        hop_seconds = 0.75 * window_seconds
    if sample_rate <= 0 or window_seconds <= 0 or hop_seconds <= 0 or block_seconds <= 0:
        raise UsageError("sample_rate, window_seconds, hop_seconds and block_seconds must be positive")
    if hop_seconds > window_seconds:
        raise UsageError("hop_seconds must not exceed window_seconds (audio between windows would be skipped)")
    return hop_seconds


def _windows(source: AudioSource, path: Path, sample_rate: int, window_seconds: float, hop_seconds: float,
             block_seconds: float) -> Iterator[AudioWindow]:
    """The windows of an open source. Frame numbers count on the media timeline at the source's rate."""
    native_rate = source.info.sample_rate
    if native_rate <= 0:
        raise DecodeError(path, f"invalid sample rate {native_rate}")
    resampler = Resampler(native_rate, sample_rate)
    window_native = max(1, round(window_seconds * native_rate))
    window_target = round(window_seconds * sample_rate)
    block_frames = max(window_native, round(block_seconds * native_rate))

    def start_of(ordinal: int) -> int:
        return round(ordinal * hop_seconds * native_rate)

    buffer = np.zeros(0, dtype=np.float32)  # mono samples from frame `buffer_start` on
    buffer_start = 0
    first = ordinal = 0  # first window that holds audio; next window to emit
    end: int | None = None  # frame after the last one read so far; None until the first block
    blocks = source.blocks(block_frames)
    at_end = False
    while not at_end:
        position, block = next(blocks, (0, None))
        at_end = block is None
        if block is not None:
            if end is None:  # the audio starts at `position`: skip the windows before it, pad the gap
                first = ordinal = _first_window(position, window_native, hop_seconds * native_rate, start_of)
                buffer_start = start_of(first)
                buffer, end = np.zeros(position - buffer_start, dtype=np.float32), position
            buffer = np.concatenate((buffer, block)) if buffer.size else block
            end += block.size
        while True:
            start = start_of(ordinal)
            offset = start - buffer_start
            if buffer.size - offset >= window_native:
                piece = buffer[offset : offset + window_native]
            elif at_end and end is not None and start < end and (
                    ordinal == first or start_of(ordinal - 1) + window_native < end):
                piece = buffer[offset:]  # a partial window, still needed: the previous one stopped short of the end
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
            drop = min(start_of(ordinal) - buffer_start, buffer.size)
            buffer, buffer_start = buffer[drop:], buffer_start + drop
    if end is None:
        raise DecodeError(path, "no audio frames")
    log.debug("%s: %d windows, audio ends at frame %d at %d Hz", path, ordinal - first, end, native_rate)


def _first_window(position: int, window: int, hop: float, start_of: Callable[[int], int]) -> int:
    """The first window that ends after frame ``position``, where the audio starts."""
    ordinal = max(0, math.floor((position - window) / hop))
    while ordinal > 0 and start_of(ordinal - 1) + window > position:
        ordinal -= 1
    while start_of(ordinal) + window <= position:
        ordinal += 1
    return ordinal


def _fit(samples: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad to exactly ``length`` samples (float32, contiguous)."""
    if samples.size >= length:
        return np.ascontiguousarray(samples[:length], dtype=np.float32)
    out = np.zeros(length, dtype=np.float32)
    out[: samples.size] = samples
    return out
