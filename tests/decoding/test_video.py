"""Video frames: the sampling rule (first, every few seconds, shot changes, minimum gap, cap), keyframe-only
decoding and its switch to every frame, colours, rotation, sizes, probing, and clean failures. Every clip
is written at test time by FFmpeg's own encoders (``media_makers``)."""
from __future__ import annotations

import random

import av
import numpy as np
import pytest
from media_makers import encoder_available, write_audio_only, write_test_video
from PIL import Image

from mmsearch.decoding import video
from mmsearch.decoding.video import (VIDEO_EXTENSIONS, FrameSampler, VideoInfo, display_transposes,
                                     iter_video_frames, probe_video)
from mmsearch.errors import DecodeError, UsageError

FPS = 25
FRAME = 1 / FPS
RED, BLUE, GREEN, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255), (0, 0, 0)
CUTS = [(0.0, RED), (4.0, BLUE), (7.0, GREEN)]
"""A 12-second clip: red, a cut to blue at 4 s, a cut to green at 7 s."""
EXPECTED = [(0.0, "first"), (4.0, "scene"), (5.0, "interval"), (7.0, "scene"), (10.0, "interval")]
"""What the default rule takes from it, decoding every frame."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {
        # mpeg4's default: a keyframe every 12 frames (0.48 s), and at each cut
        "dense": write_test_video(folder / "cuts.mp4", seconds=12, colours=CUTS),
        # a keyframe every 10 s (and at the cuts): keyframes more than 2 s apart
        "sparse": write_test_video(folder / "cuts.mkv", seconds=12, colours=CUTS, gop_size=250),
    }


def sampled(path, **settings) -> list[tuple[float, str]]:
    return [(frame.time, frame.reason) for frame in iter_video_frames(path, **settings)]


def keyframe_times(path) -> list[float]:
    with av.open(str(path)) as container:
        return [frame.time for frame in container.decode(video=0) if frame.key_frame]


def colour(image: Image.Image) -> tuple[int, ...]:
    return tuple(int(round(value)) for value in np.asarray(image).reshape(-1, 3).mean(axis=0))


def close_to(found, expected, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(found, expected))


def assert_times(found, expected, late=FRAME / 2):
    """Same reasons in the same order; each time no earlier than expected, and at most ``late`` after."""
    assert [reason for _, reason in found] == [reason for _, reason in expected], found
    for (time, _), (wanted, _) in zip(found, expected):
        assert wanted - FRAME / 2 <= time <= wanted + late, (found, expected)


# -- the sampling rule ----------------------------------------------------------------------------------
def test_every_frame_decoded_gives_first_intervals_and_cuts_to_the_frame(clips):
    frames = list(iter_video_frames(clips["dense"], keyframe_gap=0))
    assert_times([(frame.time, frame.reason) for frame in frames], EXPECTED)
    shown = {round(frame.time): colour(frame.image) for frame in frames}
    assert close_to(shown[0], RED) and close_to(shown[4], BLUE) and close_to(shown[5], BLUE)
    assert close_to(shown[7], GREEN) and close_to(shown[10], GREEN)
    assert all(frame.image.mode == "RGB" and frame.image.size == (64, 48) for frame in frames)


def test_with_keyframes_close_together_only_keyframes_are_decoded_and_times_snap_to_them(clips):
    keys = keyframe_times(clips["dense"])
    gap = max(b - a for a, b in zip(keys, keys[1:]))
    assert gap <= 0.5  # the clip is what the test needs
    found = sampled(clips["dense"])
    assert_times(found, EXPECTED, late=gap)
    assert all(any(abs(time - key) < 1e-6 for key in keys) for time, _ in found)


def test_keyframes_further_apart_than_keyframe_gap_switch_to_every_frame(clips):
    keys = keyframe_times(clips["sparse"])
    assert max(b - a for a, b in zip(keys, keys[1:])) > 2  # the clip is what the test needs
    assert_times(sampled(clips["sparse"]), EXPECTED)


def test_keyframes_only_decodes_nothing_else_however_sparse(clips):
    keys = keyframe_times(clips["sparse"])
    found = sampled(clips["sparse"], keyframe_gap=float("inf"))
    assert found[:2] == [(0.0, "first"), (4.0, "scene")] and (7.0, "scene") in found
    assert all(any(abs(time - key) < 1e-6 for key in keys) for time, _ in found)


def test_back_to_back_cuts_between_keyframes_are_each_found(tmp_path):
    path = write_test_video(tmp_path / "montage.mkv", seconds=5, gop_size=250, audio=False,
                            colours=[(0, RED), (1, BLUE), (2, GREEN), (3, WHITE)])
    assert keyframe_times(path) == [0.0, 1.0, 2.0, 3.0]  # the encoder puts a keyframe at each cut
    assert sampled(path, keyframe_gap=float("inf"), every_seconds=100, min_gap_seconds=0.5) == [
        (0.0, "first"), (1.0, "scene"), (2.0, "scene"), (3.0, "scene")]


def test_scene_detection_off_leaves_first_and_intervals(clips):
    assert_times(sampled(clips["dense"], scene_threshold=None, keyframe_gap=0),
                 [(0.0, "first"), (5.0, "interval"), (10.0, "interval")])


def test_a_cut_within_the_minimum_gap_is_taken_once_the_gap_has_passed(tmp_path):
    path = write_test_video(tmp_path / "quick.mkv", seconds=8, colours=[(0, RED), (4.0, BLUE), (4.4, GREEN)],
                            audio=False)
    frames = list(iter_video_frames(path, every_seconds=100, keyframe_gap=0))
    assert_times([(frame.time, frame.reason) for frame in frames], [(0.0, "first"), (4.0, "scene"), (5.0, "scene")])
    assert close_to(colour(frames[-1].image), GREEN)
    assert_times(sampled(path, every_seconds=100, keyframe_gap=0, min_gap_seconds=0.2),
                 [(0.0, "first"), (4.0, "scene"), (4.4, "scene")])


def test_max_frames_widens_the_interval_so_the_end_is_still_sampled(clips):
    found = sampled(clips["dense"], every_seconds=1, max_frames=4, keyframe_gap=0)
    assert_times(found, [(0.0, "first"), (3.0, "interval"), (6.0, "interval"), (9.0, "interval")])


def test_frames_are_never_closer_than_the_minimum_gap(clips):
    for settings in ({}, {"keyframe_gap": 0}, {"every_seconds": 0.5}, {"every_seconds": 0.1, "keyframe_gap": 0}):
        times = [time for time, _ in sampled(clips["dense"], **settings)]
        assert all(b - a >= 1.0 - 1e-6 for a, b in zip(times, times[1:])), (settings, times)


def test_sampler_alone_skips_a_tick_just_after_a_cut_and_stops_at_the_cap():
    sampler = FrameSampler(every_seconds=5, min_gap_seconds=1)
    offers = [(0.0, 0.0), (4.5, 0.9), (5.0, 0.0), (5.6, 0.0), (9.96, 0.0), (10.0, 0.0)]
    assert [sampler.offer(time, score) for time, score in offers] == ["first", "scene", None, None, None, "interval"]
    capped = FrameSampler(every_seconds=1, max_frames=3)  # no duration known: a hard stop
    assert [capped.offer(float(t)) for t in range(6)] == ["first", "interval", "interval", None, None, None]
    assert capped.done


def test_a_cut_is_taken_only_while_the_budget_keeps_room_for_the_intervals():
    sampler = FrameSampler(every_seconds=5, max_frames=3, duration=15)  # ticks 0, 5, 10 fill the budget
    assert [sampler.offer(t, s) for t, s in [(0, 0), (2, 0.9), (5, 0), (10, 0)]] == ["first", None, "interval",
                                                                                   "interval"]


# -- pictures -------------------------------------------------------------------------------------------
def edges(image: Image.Image) -> dict[str, str]:
    """Which edge's midpoint is white (the marker's left quarter) and which black (its top quarter)."""
    width, height = image.size
    points = {"left": (0, height // 2), "right": (width - 1, height // 2), "top": (width // 2, 0),
              "bottom": (width // 2, height - 1)}
    found = {}
    for edge, point in points.items():
        pixel = image.getpixel(point)
        if close_to(pixel, WHITE, 40):
            found["white"] = edge
        elif close_to(pixel, BLACK, 40):
            found["black"] = edge
    return found


@pytest.mark.parametrize("rotation,hflip,size,white,black", [
    (0, False, (64, 48), "left", "top"),
    (90, False, (48, 64), "bottom", "left"),  # turned a quarter counter-clockwise
    (-90, False, (48, 64), "top", "right"),  # a phone held upright: turned a quarter clockwise
    (180, False, (64, 48), "right", "bottom"),
    (0, True, (64, 48), "right", "top"),  # mirrored
    (90, True, (48, 64), "bottom", "right"),  # a quarter counter-clockwise, then mirrored
])
def test_display_matrix_turns_frames_upright(tmp_path, rotation, hflip, size, white, black):
    path = write_test_video(tmp_path / "turned.mp4", seconds=1, colours=[(0, BLUE)], marker=True,
                            rotation=rotation, hflip=hflip, audio=False)
    image = next(iter_video_frames(path)).image
    assert image.size == size
    assert edges(image) == {"white": white, "black": black}


def test_display_transposes_follow_ffmpeg_for_a_portrait_phone_video():
    portrait = (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)  # the matrix an upright phone writes
    assert display_transposes(portrait) == [Image.Transpose.ROTATE_270]  # 90 degrees clockwise
    assert display_transposes((65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)) == []
    assert display_transposes(None, 90) == [Image.Transpose.ROTATE_270]
    assert display_transposes(None, 45) == []


def test_target_size_shrinks_the_short_side_early_and_keeps_the_aspect(tmp_path):
    path = write_test_video(tmp_path / "big.mp4", seconds=1, size=(320, 240), rotation=-90, audio=False)
    assert next(iter_video_frames(path, target_size=60)).image.size == (60, 80)
    assert next(iter_video_frames(path, target_size=1000)).image.size == (240, 320)


# -- probing --------------------------------------------------------------------------------------------
def test_probe_reports_what_the_container_says(clips, tmp_path):
    assert probe_video(clips["dense"]) == VideoInfo(duration=pytest.approx(12.0, abs=0.05), has_video=True,
                                                    has_audio=True, width=64, height=48, fps=25.0, codec="mpeg4")
    silent = probe_video(write_test_video(tmp_path / "silent.avi", seconds=2, audio=False))
    assert (silent.has_video, silent.has_audio, silent.duration) == (True, False, pytest.approx(2.0, abs=0.05))


def test_probe_estimates_a_missing_duration_from_the_last_packets(tmp_path):
    path = write_test_video(tmp_path / "recorded.mkv", seconds=6, live=True, audio=False)
    with av.open(str(path)) as container:
        assert container.duration is None  # the clip is what the test needs
    assert probe_video(path).duration == pytest.approx(6.0, abs=0.1)
    assert_times(sampled(path, keyframe_gap=0), [(0.0, "first"), (5.0, "interval")])


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".avi"])
def test_test_videos_carry_their_tone_for_as_long_as_the_pictures(tmp_path, suffix):
    path = write_test_video(tmp_path / f"tone{suffix}", seconds=2, tone_hz=1000, sample_rate=16000)
    with av.open(str(path)) as container:
        sound = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    sound = sound / 32768 if sound.dtype == np.int16 else sound
    assert abs(len(sound) - 32000) <= 1024  # AAC adds one frame of priming
    spectrum = np.abs(np.fft.rfft(sound[:16000]))
    assert int(np.argmax(spectrum)) == 1000  # 1 Hz per bin over one second


@pytest.mark.skipif(not encoder_available("libvpx"), reason="this FFmpeg has no VP8 encoder")
def test_webm_with_vp8_and_opus(tmp_path):
    path = write_test_video(tmp_path / "cuts.webm", seconds=12, colours=CUTS)
    info = probe_video(path)
    assert (info.codec, info.has_audio, info.fps) == ("vp8", True, 25.0)
    assert_times(sampled(path, keyframe_gap=0), EXPECTED)


# -- failures -------------------------------------------------------------------------------------------
def decode_error(path, **settings) -> tuple[list[tuple[float, str]], DecodeError]:
    """The frames yielded before the DecodeError, and the error."""
    found = []
    with pytest.raises(DecodeError) as raised:
        for frame in iter_video_frames(path, **settings):
            found.append((frame.time, frame.reason))
    error = raised.value
    assert error.path == path and "\n" not in error.reason and len(error.reason) <= 200
    return found, error


def test_a_file_without_video_says_so(tmp_path):
    path = write_audio_only(tmp_path / "voice.m4a", seconds=2)
    assert probe_video(path).has_video is False
    assert decode_error(path)[1].reason == "no video stream"


def test_files_ffmpeg_cannot_open_say_why(tmp_path, clips):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(random.Random(7).randbytes(50_000))
    cut = tmp_path / "cut.mp4"  # the index (moov) of a file written in one pass is at its end
    cut.write_bytes(clips["dense"].read_bytes()[:20_000])
    for path in (noise, cut, tmp_path / "missing.mp4"):
        _, error = decode_error(path)
        assert error.reason.startswith("not a readable video ("), error.reason
        with pytest.raises(DecodeError):
            probe_video(path)


def test_a_cut_short_file_gives_its_frames_then_says_where_it_stops(tmp_path, clips):
    cut = tmp_path / "cut.mkv"
    data = clips["sparse"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    found, error = decode_error(cut)
    assert found and found[0] == (0.0, "first")
    assert error.reason.startswith("video stops at ") and error.reason.endswith("of 12.0 s: the file is cut short")


def test_corrupt_packets_mid_file_are_skipped(tmp_path, clips):
    damaged = bytearray(clips["dense"].read_bytes())
    middle, noise = len(damaged) // 2, random.Random(3)
    damaged[middle:middle + 2000] = noise.randbytes(2000)
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(damaged))
    found = sampled(path, keyframe_gap=0)
    assert found[0] == (0.0, "first") and found[-1][0] >= 10.0


def test_frame_size_limit(clips):
    assert decode_error(clips["dense"], max_pixels=1000)[1].reason == \
        "video frames too large (64x48 pixels, limit 1,000)"


def test_bad_settings_are_refused(clips):
    for settings in ({"every_seconds": 0}, {"scene_threshold": 1.5}, {"max_frames": 0}, {"min_gap_seconds": -1}):
        with pytest.raises(UsageError):
            next(iter_video_frames(clips["dense"], **settings))


def test_extensions_are_lower_case_suffixes():
    assert {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"} <= VIDEO_EXTENSIONS
    assert all(suffix.startswith(".") and suffix == suffix.lower() for suffix in VIDEO_EXTENSIONS)


# -- streaming ------------------------------------------------------------------------------------------
class WatchedContainer:
    """An opened container that counts the packets read from it, notes when it is closed, and can fail
    for good after ``fail_after`` packets, as a disk error would."""

    def __init__(self, container, fail_after: int | None = None):
        self._container, self._fail_after = container, fail_after
        self.packets, self.closed = 0, False

    def __getattr__(self, name):
        return getattr(self._container, name)

    def demux(self, *streams):
        for packet in self._container.demux(*streams):
            if self._fail_after is not None and self.packets >= self._fail_after:
                raise OSError(5, "Input/output error")
            self.packets += 1
            yield packet

    def close(self):
        self.closed = True
        self._container.close()


def watch(monkeypatch, **options) -> list[WatchedContainer]:
    opened: list[WatchedContainer] = []
    real_open = av.open

    def watched_open(*args, **kwargs):
        opened.append(WatchedContainer(real_open(*args, **kwargs), **options))
        return opened[-1]

    monkeypatch.setattr(video.av, "open", watched_open)
    return opened


def test_frames_come_one_at_a_time_without_reading_the_whole_file(tmp_path, monkeypatch):
    path = write_test_video(tmp_path / "long.mp4", seconds=120, audio=False)  # 3000 frames
    opened = watch(monkeypatch)
    frames = iter_video_frames(path)
    first = next(frames)
    assert first.reason == "first" and opened[0].packets < 3000 // 4  # a few decoder threads' worth
    frames.close()
    assert opened[0].closed


def test_reading_that_fails_for_good_mid_file_raises_after_the_frames_already_yielded(monkeypatch, clips):
    watch(monkeypatch, fail_after=240)  # 9.6 s into the clip: after the cut at 7 s, before the frame at 10 s
    found, error = decode_error(clips["dense"], keyframe_gap=0)
    assert_times(found, EXPECTED[:4])
    assert error.reason.startswith("video decoding failed after ") and error.reason.endswith("(Input/output error)")
