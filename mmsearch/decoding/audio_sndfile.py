"""The libsndfile reader (through soundfile): WAV/RF64/WAVEX/AIFF/AU/CAF/W64, FLAC, Ogg Vorbis/Opus, MP3.

Used first for the formats where it measured faster than FFmpeg (see ``audio.SOUNDFILE_FIRST``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DecodeError
from .audio_source import AudioInfo, one_line, to_mono


class SoundfileSource:
    """An audio file opened with libsndfile; see ``audio_source.AudioSource``."""

    def __init__(self, path: Path):
        import soundfile as sf

        self.path = path
        try:
            self._sound = sf.SoundFile(str(path), mode="r")
        except TypeError as error:  # soundfile asks for samplerate/channels: headerless RAW
            raise DecodeError(path, f"headerless raw audio is not supported ({error})") from None
        except Exception as error:  # LibsndfileError, RuntimeError, ValueError, OSError...
            raise DecodeError(path, f"not a readable audio file ({_libsndfile_reason(error)})") from None
        sound = self._sound
        self.info = AudioInfo(
            duration=sound.frames / sound.samplerate if sound.samplerate > 0 else 0.0,
            sample_rate=int(sound.samplerate),
            channels=int(sound.channels),
            frames=int(sound.frames),
            format=f"{sound.format}/{sound.subtype}",
        )

    def blocks(self, frames: int) -> Iterator[tuple[int, np.ndarray]]:
        position = 0
        while True:
            try:
                block = self._sound.read(frames, dtype="float32", always_2d=True)
            except Exception as error:
                raise DecodeError(self.path, f"corrupt audio data ({_libsndfile_reason(error)})") from None
            if block.shape[0] == 0:
                return
            yield position, to_mono(block)
            position += block.shape[0]

    def close(self) -> None:
        self._sound.close()


def _libsndfile_reason(error: Exception) -> str:
    """libsndfile's own words without the "Error opening 'path':" prefix, on one line."""
    text = getattr(error, "error_string", None) or str(error) or type(error).__name__
    if text.startswith("Error opening"):
        text = text.split(": ", 1)[-1]
    text = one_line(text)
    if text.startswith("File does not exist or is not a regular file"):
        text = "unrecognised or truncated data"  # libsndfile's words for a file too short to identify
    return text
