"""Video file -> sampled frames (upright RGB pictures with their time), one at a time, by FFmpeg through PyAV.

The sampling rule (``iter_video_frames``, defaults in brackets):

- The first decodable frame (reason ``"first"``, at t = 0 for almost every file); then one frame per
  interval: the first frame shown at or after each k x ``every_seconds`` [5 s] (reason ``"interval"``).
- Plus a frame at each shot change (reason ``"scene"``): a frame whose picture differs from the previous
  decoded one by more than ``scene_threshold`` [0.4; None turns it off]. Both are shrunk to 32 x 32
  cells; a cell has changed when its mean RGB difference exceeds 10 % of full scale. Between consecutive
  frames the score is the share s of cells that changed, discounted by the share of the comparison before,
  s x (1 - s_prev): a cut after a steady picture scores s, steady motion never above 0.25. Between frames
  decoded further apart (keyframes), where much moves, it is min(s, 2 h), h the change of the colour
  histograms (4 levels a channel, 0 to 1): a pan keeps the colours, a cut changes them.
- Never two frames closer than ``min_gap_seconds`` [1 s]: an interval frame due within that gap after a
  taken frame is skipped (that frame shows the moment); a shot change within it waits for the gap's end.
- At most ``max_frames`` [2000] frames a file: when the video's declared length says the interval would
  need more, it widens to duration / ``max_frames``, and a shot change is taken only while the budget keeps
  room for every interval frame still due, so the end is still sampled. Reaching the cap stops decoding.

Cost: decoding every frame costs more than all the rest, so only keyframes are decoded while they come
at most ``keyframe_gap`` [2 s, at most ``every_seconds``] apart, as in phone videos; times then snap to
the next keyframe and shot changes are seen between keyframes. Once two keyframes are further apart
(x264's default: up to 10 s) every frame is decoded from there on, and times are exact to the frame.
``keyframe_gap=0`` decodes every frame from the start; ``math.inf`` only keyframes, however sparse.

Times are seconds from the start as a player shows them (less the container's start time when positive,
as in MPEG-TS). Pictures are turned upright by the display matrix (phone videos) as ffmpeg turns them,
stretched to square pixels, and shrunk before the colour conversion to a short side of ``target_size``.

Errors: a file FFmpeg cannot open, with no video stream (cover art does not count) or no decodable frame
raises ``DecodeError(path, reason)`` with a one-line reason. A corrupt packet mid-file is skipped and
decoding goes on. When reading fails for good, or the video stops well before the end its stream declares
(a cut-short download), ``DecodeError`` is raised after the frames already yielded: a caller may keep them.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from ..errors import DecodeError, UsageError
from .images import MAX_PIXELS

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".wmv",
                                               ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".3gp", ".ogv"})
"""File-name suffixes (lower case, with the dot, as ``Path.suffix``) of video containers FFmpeg reads."""

KEYFRAME_GAP = 2.0  # default keyframe_gap: seconds between keyframes up to which only keyframes are decoded
THUMBNAIL = 32  # scene detection compares frames shrunk to THUMBNAIL x THUMBNAIL cells
CELL_CHANGE = 0.1  # a cell has changed when its mean RGB difference is above this share of full scale
_EPSILON = 1e-6
_MAX_PENDING = 2000  # packets held back while waiting for the next keyframe, whatever their timestamps say

Reason = Literal["first", "interval", "scene"]


@dataclass(frozen=True)
class VideoInfo:
    """``duration`` in seconds: the container's, else the longest stream's, else the end of the last packet.
    ``width`` x ``height`` as stored (before display rotation; 0 without video), ``fps`` the average frame
    rate when known, ``codec`` FFmpeg's name of the video codec (``h264``, ``vp9``...; None without video)."""

    duration: float
    has_video: bool
    has_audio: bool
    width: int
    height: int
    fps: float | None
    codec: str | None


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: ``time`` in seconds from the start of the media, as a player shows it; ``image``
    RGB and upright; ``reason`` the part of the sampling rule that took it."""

    time: float
    image: Image.Image
    reason: Reason


# -- the sampling rule, without any video ---------------------------------------------------------------
class FrameSampler:
    """The sampling rule of the module docstring, fed one decoded frame at a time (its time and its scene
    score) and answering whether to take it. ``duration`` (seconds, when known) sizes the interval to
    ``max_frames``."""

    def __init__(self, *, every_seconds: float = 5.0, scene_threshold: float | None = 0.4,
                 min_gap_seconds: float = 1.0, max_frames: int = 2000, duration: float | None = None):
        self.interval = duration / max_frames if duration and duration / every_seconds > max_frames else every_seconds
        self.scene_threshold, self.min_gap, self.max_frames = scene_threshold, min_gap_seconds, max_frames
        self.duration, self.taken = duration, 0
        self._last: float | None = None
        self._next_tick, self._scene_pending = 0.0, False

    @property
    def done(self) -> bool:
        return self.taken >= self.max_frames

    def offer(self, time: float, score: float | None = None) -> Reason | None:
        """The reason to take the frame shown at ``time``, or None to pass it by."""
        if self.done:
            return None
        if self.scene_threshold is not None and score is not None and score > self.scene_threshold:
            self._scene_pending = True
        due = time >= self._next_tick - _EPSILON
        if self._last is None:
            reason: Reason | None = "first"
        elif time - self._last < self.min_gap - _EPSILON:
            if due:
                self._next_tick = self._tick_after(time)  # the frame just taken shows this moment
            return None
        elif self._scene_pending and (due or self._room_for_scene()):
            reason = "scene"
        elif due:
            reason = "interval"
        else:
            self._scene_pending = False
            return None
        self.taken += 1
        self._last, self._scene_pending = time, False
        self._next_tick = self._tick_after(time)
        return reason

    def _tick_after(self, time: float) -> float:
        return self.interval * (math.floor((time + _EPSILON) / self.interval) + 1)

    def _room_for_scene(self) -> bool:
        """Whether one more frame still leaves room for every interval frame due before the end."""
        due_later = 0
        if self.duration is not None and self._next_tick < self.duration:
            due_later = math.ceil((self.duration - self._next_tick) / self.interval - _EPSILON)
        return self.taken + 1 + due_later <= self.max_frames


# -- public entry points --------------------------------------------------------------------------------
def probe_video(path: Path | str) -> VideoInfo:
    """What the container says about ``path``, without decoding a frame (a file without a video stream
    is described too: ``has_video`` False)."""
    path = Path(path)
    container = _open(path)
    try:
        stream, has_audio = _video_stream(container), bool(container.streams.audio)
        duration = _duration(container) or _estimated_duration(container)
        if stream is None:
            return VideoInfo(duration, False, has_audio, 0, 0, None, None)
        rate, context = stream.average_rate or stream.guessed_rate, stream.codec_context
        return VideoInfo(duration, True, has_audio, context.width, context.height,
                         float(rate) if rate else None, context.name)
    except (av.FFmpegError, OSError) as exc:
        raise DecodeError(path, f"video could not be read ({_why(exc)})") from exc
    finally:
        container.close()


def iter_video_frames(path: Path | str, *, every_seconds: float = 5.0, scene_threshold: float | None = 0.4,
                      min_gap_seconds: float = 1.0, max_frames: int = 2000, target_size: int | None = None,
                      max_pixels: int = MAX_PIXELS, keyframe_gap: float = KEYFRAME_GAP) -> Iterator[VideoFrame]:
    """Sampled frames of the video at ``path``, one at a time, by the rule of the module docstring."""
    _check_settings(every_seconds=every_seconds, scene_threshold=scene_threshold, max_frames=max_frames,
                    min_gap_seconds=min_gap_seconds, target_size=target_size, keyframe_gap=keyframe_gap)
    path = Path(path)
    container = _open(path)
    try:
        stream = _video_stream(container)
        if stream is None:
            raise DecodeError(path, "no video stream")
        _check_pixels(path, stream.codec_context.width, stream.codec_context.height, max_pixels)
        stream.thread_type = "AUTO"
        origin, declared = max(container.start_time or 0, 0) / av.time_base, _declared_end(stream)
        sampler = FrameSampler(every_seconds=every_seconds, scene_threshold=scene_threshold,
                               min_gap_seconds=min_gap_seconds, max_frames=max_frames,
                               duration=declared - origin if declared else _duration(container))
        scenes = _SceneDetector() if scene_threshold is not None else None
        gap = keyframe_gap if keyframe_gap == math.inf else min(keyframe_gap, every_seconds)
        decoder = _Decoder(container, stream, gap)
        aspect, pictures = float(stream.codec_context.sample_aspect_ratio or 1), VideoReformatter()
        step = 1 / float(stream.average_rate or 25)
        time, decoded = -step, 0
        try:
            for frame in decoder:
                decoded += 1
                _check_pixels(path, frame.width, frame.height, max_pixels)
                now = max(frame.time - origin, 0.0) if frame.time is not None else time + step
                score = scenes.score(frame, apart=now - time > 1.5 * step) if scenes else None  # keyframes apart?
                time, reason = now, sampler.offer(now, score)
                if reason is not None:
                    yield VideoFrame(time, _picture(frame, pictures, target_size, aspect), reason)
                    if sampler.done:
                        return
        except (av.FFmpegError, OSError) as exc:
            where = f" after {max(time, 0):.1f} s" if decoded else ""
            raise DecodeError(path, f"video decoding failed{where} ({_why(exc)})") from exc
        if decoder.skipped:
            log.warning("%s: skipped %d undecodable video packets%s", path, decoder.skipped, decoder.failure)
        if not decoded:
            raise DecodeError(path, f"no decodable video frames{decoder.failure}")
        if declared and decoder.end is not None and decoder.end < declared - max(1.0, 0.02 * (declared - origin)):
            raise DecodeError(path, f"video stops at {decoder.end - origin:.1f} s of {declared - origin:.1f} s: "
                                    "the file is cut short")
    finally:
        container.close()


# -- decoding -------------------------------------------------------------------------------------------
class _Decoder:
    """The stream's frames in display order: only keyframes while they come at most ``keyframe_gap`` s
    apart, every frame once they do not. The packets after a keyframe wait until it is clear whether the
    next keyframe is near; the decoder has seen nothing since, so sending them late decodes them as sending
    them at once would. A packet the decoder rejects is skipped and counted (``failure``: the last reason,
    in brackets); ``end`` is where the last packet read ends (seconds of the stream's timestamps)."""

    def __init__(self, container, stream, keyframe_gap: float):
        self.container, self.stream, self.keyframe_gap = container, stream, keyframe_gap
        self.every_frame, self.skipped, self.failure, self.end = keyframe_gap <= 0, 0, "", None

    def __iter__(self) -> Iterator[av.VideoFrame]:
        pending: list[av.Packet] = []
        key_time: float | None = None
        for packet in self.container.demux(self.stream):
            time = _seconds(packet.dts if packet.dts is not None else packet.pts, packet)
            if packet.pts is not None and packet.time_base is not None:
                self.end = max(self.end or 0.0, _seconds(packet.pts + packet.duration, packet))
            if self.every_frame or packet.size == 0:  # size 0: the end, which flushes the decoder
                batch = [packet]
            elif packet.is_keyframe:
                key_time, pending, batch = time, [], [packet]
            elif self.keyframe_gap == math.inf:
                continue
            else:
                pending.append(packet)
                key_time = time if key_time is None else key_time
                if len(pending) < _MAX_PENDING and (None in (time, key_time) or time - key_time <= self.keyframe_gap):
                    continue
                log.debug("keyframes over %.1f s apart: decoding every frame from %s s", self.keyframe_gap, key_time)
                self.every_frame, batch, pending = True, pending, []
            for item in batch:
                yield from self._decode(item)

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        try:
            return self.stream.decode(packet)
        except av.error.EOFError:
            return []
        except av.FFmpegError as exc:
            self.skipped, self.failure = self.skipped + 1, f" ({_why(exc)})"
            log.debug("skipped an undecodable video packet at %s%s", packet.pts, self.failure)
            return []


def _seconds(stamp: int | None, packet: av.Packet) -> float | None:
    return None if stamp is None or packet.time_base is None else float(stamp * packet.time_base)


class _SceneDetector:
    """Scores each frame against the previous one decoded, a keyframe earlier when ``apart`` (module
    docstring). About 0.3 ms of CPU a frame at 720p: the reformatter keeps FFmpeg's scaler set up."""

    def __init__(self):
        self._shrink, self._previous, self._previous_share = VideoReformatter(), None, 0.0

    def score(self, frame: av.VideoFrame, apart: bool) -> float:
        cells = self._shrink.reformat(frame, THUMBNAIL, THUMBNAIL, "rgb24", interpolation="AREA")
        thumbnail = cells.to_ndarray().astype(np.int16)
        previous, self._previous = self._previous, thumbnail
        if previous is None:  # the first frame
            return 0.0
        share = float((np.abs(thumbnail - previous).mean(axis=2) > CELL_CHANGE * 255).mean())
        score = min(share, 2 * _colour_change(thumbnail, previous)) if apart else share * (1 - self._previous_share)
        self._previous_share = share
        return score


def _colour_change(one: np.ndarray, other: np.ndarray) -> float:
    """Half the L1 distance of two pictures' colour histograms (4 levels a channel): 0 same, 1 disjoint."""
    counts = [np.bincount((picture // 64 * (16, 4, 1)).sum(axis=2).ravel(), minlength=64) for picture in (one, other)]
    return 0.5 * float(np.abs(counts[0] - counts[1]).sum()) / one[..., 0].size


# -- pictures -------------------------------------------------------------------------------------------
def _picture(frame: av.VideoFrame, reformatter: VideoReformatter, target_size: int | None,
             aspect: float) -> Image.Image:
    """The frame as an upright RGB picture: stretched to square pixels, shrunk so that its short side is
    ``target_size`` (when larger) before the colour conversion, and turned by its display matrix."""
    width, height = frame.width, frame.height
    if aspect > 0 and abs(aspect - 1) > 0.01:
        width = max(1, round(width * aspect))
    scale = target_size / min(width, height) if target_size and min(width, height) > target_size else 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrinking = size[0] * size[1] < frame.width * frame.height
    rgb = reformatter.reformat(frame, *size, "rgb24", interpolation="AREA" if shrinking else "BICUBIC")
    image = Image.fromarray(rgb.to_ndarray(), "RGB")
    matrix = _display_matrix(frame)
    for step in display_transposes(matrix) if matrix else display_transposes(None, -frame.rotation):
        image = image.transpose(step)
    return image


def _display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    try:
        side = frame.side_data.get("DISPLAYMATRIX")
    except ValueError:  # PyAV 18 cannot list a frame's side data when one kind is new to it
        return None
    return None if side is None else tuple(np.frombuffer(bytes(side), dtype=np.int32)[:9].tolist())


def display_transposes(matrix: tuple[int, ...] | None, clockwise: int = 0) -> list[Image.Transpose]:
    """The PIL transposes that show a frame as players do: from its display matrix (9 int32 in FFmpeg's
    layout) by ffmpeg's own autorotate rules (fftools), quarter turns and mirrors; without one, from a
    rotation in clockwise degrees. Other angles are left alone."""
    turn, flip, mirror = Image.Transpose, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.FLIP_LEFT_RIGHT
    if matrix is None:
        return {90: [turn.ROTATE_270], 180: [turn.ROTATE_180], 270: [turn.ROTATE_90]}.get(round(clockwise) % 360, [])
    a, b, c, d = (value / 65536 for value in (matrix[0], matrix[1], matrix[3], matrix[4]))
    if not (math.hypot(a, c) and math.hypot(b, d)):
        return []
    theta = round(math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))) % 360  # clockwise
    if theta == 90:
        return [turn.TRANSPOSE if matrix[3] > 0 else turn.ROTATE_270]
    if theta == 180:
        return [step for step, flipped in ((mirror, matrix[0] < 0), (flip, matrix[4] < 0)) if flipped]
    if theta == 270:
        return [turn.TRANSVERSE if matrix[3] < 0 else turn.ROTATE_90]
    return [flip] if theta == 0 and matrix[4] < 0 else []


# -- the container --------------------------------------------------------------------------------------
def _open(path: Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeError) as exc:
        raise DecodeError(path, f"not a readable video ({_why(exc)})") from exc


def _video_stream(container):
    """The first video stream that is not cover art, or None."""
    return next((stream for stream in container.streams.video
                 if not stream.disposition & av.stream.Disposition.attached_pic), None)


def _duration(container) -> float | None:
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    spans = [float(stream.duration * stream.time_base) for stream in container.streams
             if stream.duration and stream.time_base]
    return max(spans) if spans else None


def _declared_end(stream) -> float | None:
    """Where the video stream says it ends (seconds of its timestamps): its duration, or Matroska's tag."""
    start = float((stream.start_time or 0) * stream.time_base) if stream.time_base else 0.0
    if stream.duration and stream.time_base:
        return start + float(stream.duration * stream.time_base)
    try:  # "HH:MM:SS.nnnnnnnnn"
        hours, minutes, seconds = str(stream.metadata["DURATION"]).split(":")
        return start + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (KeyError, ValueError):
        return None


def _estimated_duration(container) -> float:
    """The end of the last packet (read from near the end when the file can seek there; nothing decoded)."""
    try:
        container.seek(2**62, backward=True, any_frame=False)
    except (av.FFmpegError, OSError, OverflowError):
        pass
    ends = [_seconds(packet.pts + packet.duration, packet) for packet in container.demux() if packet.pts is not None]
    last = max([end for end in ends if end is not None], default=0.0)
    return max(last - max(container.start_time or 0, 0) / av.time_base, 0.0)


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DecodeError(path, f"video frames too large ({width}x{height} pixels, limit {max_pixels:,})")


def _check_settings(**settings) -> None:
    ranges = {"every_seconds": (1e-9, math.inf), "min_gap_seconds": (0, math.inf), "max_frames": (1, math.inf),
              "target_size": (1, math.inf), "keyframe_gap": (0, math.inf), "scene_threshold": (0, 1 - 1e-9)}
    for name, value in settings.items():
        if value is not None and not ranges[name][0] <= value <= ranges[name][1]:
            raise UsageError(f"{{opt:{name}}} cannot be {value}")


def _why(exc: BaseException) -> str:
    """A one-line reason of at most 200 characters, without the file name FFmpeg's messages repeat."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason).splitlines()[0][:200]
