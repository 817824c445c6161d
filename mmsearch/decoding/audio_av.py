"""The FFmpeg reader (through PyAV): any container FFmpeg demuxes and any audio codec it decodes.

M4A/AAC/ALAC, WMA, AC-3/E-AC-3, APE, DSD, Musepack, TAK, TTA, WavPack, Speex, AMR, Opus/Vorbis/FLAC in
Ogg or Matroska/WebM, MP2/MP3, ... and the soundtrack of video files (MP4, MKV, WebM, MOV, AVI): the
first audio stream is decoded, every other stream is discarded by the demuxer unread.

- Packets are decoded one at a time and handed on in blocks of about ``frames`` samples, so memory
  stays about one block whatever the length of the file. Opus is decoded by libopus (see ``_decoder``).
- Data that does not decode is a ``DecodeError`` ("corrupt audio data") when good data follows it; at the
  end of the stream it is taken for a truncated file, and the audio before it is kept.
- Each frame is converted to float32 by its sample format's full scale and downmixed to mono by the
  mean of its channels in numpy, exactly as the libsndfile reader does (libswresample's downmix
  matrices weight channels, which would change the level against the other reader).
- Samples stay at the stream's own rate; ``audio`` resamples each window, the same way for both
  readers. Only a stream whose rate changes mid-way (chained Ogg, spliced ADTS) has its later frames
  brought back to the first rate with libswresample (``av.AudioResampler``).
- Times are on the media timeline, what a player shows: the audio starts at the audio stream's start
  time less the container's (that of its earliest stream): 0 for audio-only files, > 0 for a video whose
  soundtrack starts late. Frame timestamps are not used beyond that (FFmpeg stamps the first Vorbis
  frame a block late although its samples start at 0); decoded frames are taken as contiguous.
- Metadata that is not valid UTF-8 is ignored (``metadata_errors="ignore"``): bad tags never stop
  the audio from being decoded. Nested opens (playlists, references) may only use local files.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import DecodeError
from .audio_source import AudioInfo, one_line

log = logging.getLogger(__name__)

_SAMPLE_FORMATS: dict[str, tuple[type, float, float]] = {
    "u8": (np.uint8, 128.0, 2.0**-7),
    "s16": (np.int16, 0.0, 2.0**-15),
    "s32": (np.int32, 0.0, 2.0**-31),
    "s64": (np.int64, 0.0, 2.0**-63),
    "flt": (np.float32, 0.0, 1.0),
    "dbl": (np.float64, 0.0, 1.0),
}
"""FFmpeg sample format (packed name) -> numpy type, the value of silence, and the scale to [-1, 1)."""


class PyAVSource:
    """An audio file, or the soundtrack of a video file, opened with FFmpeg; see ``audio_source.AudioSource``."""

    def __init__(self, path: Path):
        import av

        self.path = path
        self._file = None
        try:
            self._container = self._open(av)
        except Exception as error:  # InvalidDataError, EOFError, PatchWelcomeError, UnicodeDecodeError...
            self.close()
            raise DecodeError(path, f"not a readable audio file ({self._reason(error)})") from None
        try:
            self.info = self._header()
        except BaseException:
            self.close()
            raise

    def _open(self, av):
        options = {"protocol_whitelist": "file"}  # a playlist or reference file cannot reach the network
        name = "file:" + os.path.abspath(self.path)
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # a file name FFmpeg cannot be given as text: hand it the bytes
            self._file = open(self.path, "rb")
            return av.open(self._file, "r", container_options=options, metadata_errors="ignore")
        return av.open(name, "r", container_options=options, metadata_errors="ignore")

    def _header(self) -> AudioInfo:
        from av.stream import Discard

        container = self._container
        audio = list(container.streams.audio)
        if not audio:
            raise DecodeError(self.path, "no audio stream")
        self._stream = stream = audio[0]
        for other in container.streams:
            if other.index != stream.index:
                other.discard = Discard.all
        codec = stream.codec_context
        if codec is None:
            raise DecodeError(self.path, "unsupported audio codec (FFmpeg has no decoder for it)")
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # av.time_base
        else:
            duration = 0.0
        rate = int(codec.sample_rate or 0)
        self._lead_frames = self._lead(stream, rate)
        return AudioInfo(
            duration=max(duration, 0.0),
            sample_rate=rate,
            channels=int(codec.channels or 0),
            frames=round(max(duration, 0.0) * rate),
            format=f"{container.format.name.split(',')[0]}/{codec.name}",
        )

    def blocks(self, frames: int) -> Iterator[tuple[int, np.ndarray]]:
        position = self._lead_frames
        produced = _mono_blocks(self._at_stream_rate(self._decoded()), frames)
        while True:
            try:
                block = next(produced, None)
            except Exception as error:  # InvalidDataError, EOFError, ValueError from a broken stream...
                raise DecodeError(self.path, f"corrupt audio data ({self._reason(error)})") from None
            if block is None:
                return
            yield position, block
            position += block.size

    def _decoded(self) -> Iterator:
        """The stream's frames, packet by packet. Data that does not demux or decode is an error when good
        data follows it (corrupt mid-stream); at the end of the stream it is a truncated file, whose audio up
        to there is kept (a warning is logged), as libsndfile keeps a WAV cut short."""
        import av

        error: Exception | None = None
        decoded = False
        decoder = self._decoder()
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets, None)
            except av.error.FFmpegError as problem:  # the demuxer gives up: flush the decoder (packet None)
                error, packet = error or problem, None
            else:
                if packet is None:  # the end; PyAV's demux has already sent the decoder its flush packet
                    break
            flushing = packet is None or packet.size == 0  # no more data: frames the decoder still holds
            try:
                frames = decoder.decode(packet)
            except av.error.FFmpegError as problem:
                error = error or problem
                frames = []
            if frames and error is not None and not flushing:
                raise error
            decoded = decoded or bool(frames)
            yield from frames
            if packet is None:
                break
        if error is not None:
            if not decoded:
                raise error
            log.warning("%s: audio ends in data that does not decode (%s); kept what came before it (truncated?)",
                        self.path, self._reason(error))

    def _decoder(self):
        """The stream's decoder; for Opus, libopus when the wheel has it: FFmpeg's own Opus decoder is not
        bit-exact to libopus (cosine ~0.993 against it on music), and libopus is what libsndfile and most
        players decode with."""
        import av

        codec = self._stream.codec_context
        if codec.name != "opus" or "libopus" not in av.codecs_available:
            return codec
        decoder = av.CodecContext.create("libopus", "r")
        decoder.extradata = codec.extradata
        decoder.sample_rate = codec.sample_rate
        decoder.layout = codec.layout
        return decoder

    def _at_stream_rate(self, frames: Iterable) -> Iterator:
        """The decoded frames, those at another rate than the stream's first brought to it by libswresample."""
        import av

        rate = self.info.sample_rate
        resampler, made_for = None, None
        for frame in frames:
            if frame.sample_rate == rate:
                if resampler is not None:
                    yield from resampler.resample(None)
                    resampler, made_for = None, None
                yield frame
                continue
            kind = (frame.format.name, frame.layout.name, frame.sample_rate)
            if kind != made_for:
                if resampler is not None:
                    yield from resampler.resample(None)
                log.debug("%s: sample rate changes to %d Hz mid-stream", self.path, frame.sample_rate)
                resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
                made_for = kind
            yield from resampler.resample(frame)
        if resampler is not None:
            yield from resampler.resample(None)

    def _lead(self, stream, rate: int) -> int:
        """Frames between the start of the media and the start of the audio stream (never negative)."""
        origin = self._container.start_time  # of the earliest stream, in av.time_base units (microseconds)
        if stream.start_time is None or stream.time_base is None or origin is None:
            return 0
        seconds = float(stream.start_time * stream.time_base) - origin / 1_000_000
        length = self._container.duration
        if length is not None and seconds > length / 1_000_000:  # starts after the media ends: not to be trusted
            log.debug("%s: audio stream said to start at %.3f s, after the end; taken as 0", self.path, seconds)
            return 0
        return max(0, round(seconds * rate))

    def _reason(self, error: BaseException) -> str:
        """FFmpeg's words for ``error`` on one line, without the file name it tends to repeat."""
        if isinstance(error, UnicodeError):
            return f"text in the file is not valid {getattr(error, 'encoding', 'UTF-8')}"
        text = getattr(error, "strerror", None) or str(error) or type(error).__name__
        for name in (f"'file:{os.path.abspath(self.path)}'", f"'{self.path}'", str(self.path)):
            text = text.replace(name, "the file")
        return one_line(text)

    def close(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()
        if self._file is not None:
            self._file.close()
            self._file = None


def _mono_blocks(frames: Iterable, size: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks of about ``size`` samples from decoded frames (any sample format, any channels)."""
    done: list[np.ndarray] = []
    gathered: _Gathered | None = None
    count = 0
    for frame in frames:
        if gathered is None or not gathered.holds(frame):
            if gathered is not None and gathered.count:
                done.append(gathered.mono())
            gathered = _Gathered(frame)
        gathered.add(frame)
        count += frame.samples
        if count >= size:
            done.append(gathered.mono())
            yield np.concatenate(done) if len(done) > 1 else done[0]
            done, gathered, count = [], None, 0
    if gathered is not None and gathered.count:
        done.append(gathered.mono())
    if done:
        yield np.concatenate(done) if len(done) > 1 else done[0]


class _Gathered:
    """Decoded frames of one sample format and channel count, held as views of their planes and converted
    together: per-frame numpy work would cost more than the decoding (frames are often ~1000 samples)."""

    def __init__(self, frame):
        self.format, self.planar = frame.format.name, frame.format.is_planar
        self.channels = frame.layout.nb_channels
        packed = self.format[:-1] if self.planar else self.format
        if packed not in _SAMPLE_FORMATS or self.channels < 1:
            raise ValueError(f"unsupported sample format {self.format} with {self.channels} channels")
        self.kind, self.silence, self.scale = _SAMPLE_FORMATS[packed]
        self.parts: list[list[np.ndarray]] = [[] for _ in range(self.channels if self.planar else 1)]
        self.count = 0

    def holds(self, frame) -> bool:
        return frame.format.name == self.format and frame.layout.nb_channels == self.channels

    def add(self, frame) -> None:
        count = frame.samples
        if count <= 0:
            return
        planes = frame.planes
        if self.planar:
            for channel, part in enumerate(self.parts):
                part.append(np.frombuffer(planes[channel], self.kind, count))
        else:
            self.parts[0].append(np.frombuffer(planes[0], self.kind, count * self.channels))
        self.count += count

    def mono(self) -> np.ndarray:
        """The mean of the channels at full scale, float32; NaN/inf (float formats) become 0."""
        if self.planar:
            columns = [np.concatenate(part) for part in self.parts]
        else:
            interleaved = np.concatenate(self.parts[0]).reshape(-1, self.channels)
            columns = [interleaved[:, channel] for channel in range(self.channels)]
        total = columns[0].astype(np.float32)
        for column in columns[1:]:
            total += column
        if self.silence:
            total -= self.silence * self.channels
        total *= np.float32(self.scale)
        if self.channels > 1:
            total /= np.float32(self.channels)
        if self.kind in (np.float32, np.float64) and not np.isfinite(total).all():
            total = np.nan_to_num(total, nan=0.0, posinf=0.0, neginf=0.0)
        return total
