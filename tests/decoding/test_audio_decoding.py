"""Audio decoding: every format libsndfile or FFmpeg (PyAV) reads, video soundtracks, short and long files,
bounded memory, both readers agreeing, clean failures. Test media are made here, with seeded signals, by
libsndfile (soundfile) or by FFmpeg's encoders (PyAV)."""
from __future__ import annotations

import csv
import fractions
import inspect
import os
import struct
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from mmsearch.decoding import audio_av
from mmsearch.decoding.audio import (AUDIO_EXTENSIONS, SOUNDFILE_FIRST, UNSUPPORTED_AUDIO_EXTENSIONS, AudioWindow,
                                     iter_audio_windows, probe_audio)
from mmsearch.errors import DecodeError

TARGET = 16_000  # small target rate keeps the tests fast; the resampling path is the same as 48 kHz


def corpus_dir() -> Path | None:
    folder = Path(os.environ.get("MMSEARCH_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "corpus")
    return folder if (folder / "MANIFEST.tsv").is_file() else None


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono


LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def write_av(path: Path, signal: np.ndarray, rate: int, codec: str, *, container: str | None = None,
             bit_rate: int | None = None, video: str | None = None, audio_start: float = 0.0,
             title: str | None = None) -> Path:
    """Encode ``signal`` ((frames,) or (frames, channels), floats in [-1, 1]) with FFmpeg's ``codec`` into
    ``path`` (the container from the suffix, or ``container``). ``video`` (an encoder: ``"mpeg4"``) adds a
    32x32 video stream as long as the audio, starting at 0; the audio starts at ``audio_start`` seconds."""
    planar = np.ascontiguousarray(np.atleast_2d(signal.T if signal.ndim > 1 else signal), dtype=np.float32)
    layout = LAYOUTS[planar.shape[0]]
    with av.open(str(path), "w", format=container) as out:
        if title:
            out.metadata["title"] = title
        if video:
            picture = out.add_stream(video, rate=10)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        sound = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            sound.codec_context.bit_rate = bit_rate
        context = sound.codec_context
        converter = av.AudioResampler(format=context.format.name, layout=layout, rate=rate,
                                      frame_size=context.frame_size or 1024)
        whole = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        whole.sample_rate = rate
        written = round(audio_start * rate)
        for frame in converter.resample(whole) + converter.resample(None):
            frame.pts, frame.time_base = written, fractions.Fraction(1, rate)
            written += frame.samples
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
        if video:
            for index in range(round(planar.shape[1] / rate * 10)):
                image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), index * 8 % 256, np.uint8), format="rgb24")
                image.pts = index
                out.mux(picture.encode(image))
            out.mux(picture.encode(None))
    return path


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * rate / samples.size)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


FORMATS = [
    ("wav", "WAV", "PCM_U8", 8_000, 1),
    ("wave", "WAV", "PCM_16", 16_000, 1),
    ("w64", "W64", "PCM_24", 22_050, 2),
    ("au", "AU", "PCM_16", 16_000, 1),
    ("snd", "AU", "ULAW", 8_000, 1),
    ("aif", "AIFF", "PCM_16", 22_050, 2),
    ("aifc", "AIFF", "FLOAT", 16_000, 1),
    ("caf", "CAF", "ALAC_16", 44_100, 2),
    ("oga", "OGG", "VORBIS", 16_000, 1),
    ("wav", "WAV", "PCM_16", 22_050, 2),
    ("wav", "WAV", "PCM_24", 44_100, 1),
    ("wav", "WAV", "PCM_32", 48_000, 2),
    ("wav", "WAV", "FLOAT", 16_000, 1),
    ("wav", "WAV", "DOUBLE", 11_025, 3),
    ("flac", "FLAC", "PCM_16", 32_000, 2),
    ("flac", "FLAC", "PCM_24", 96_000, 1),
    ("ogg", "OGG", "VORBIS", 44_100, 2),
    ("ogg", "OGG", "VORBIS", 22_050, 1),
    ("opus", "OGG", "OPUS", 48_000, 1),
    ("mp3", "MP3", "MPEG_LAYER_III", 44_100, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 16_000, 1),
    ("aiff", "AIFF", "PCM_16", 8_000, 4),
]


@pytest.mark.parametrize("ext,fmt,subtype,rate,channels", FORMATS)
def test_each_format_decodes_to_the_same_tone(tmp_path, ext, fmt, subtype, rate, channels):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, tone(2.0, rate, channels), rate, format=fmt, subtype=subtype)
    info = probe_audio(path)
    assert info.sample_rate == rate and info.channels == channels
    assert info.duration == pytest.approx(2.0, abs=0.1)
    windows = list(iter_audio_windows(path, sample_rate=TARGET, window_seconds=1.0, hop_seconds=1.0))
    assert [w.start for w in windows] == [0.0, 1.0]
    assert all(w.samples.dtype == np.float32 and w.samples.shape == (TARGET,) for w in windows)
    assert windows[-1].end <= info.duration + 1e-9
    # the decoded signal is the 440 Hz tone we wrote, resampled to the target rate
    samples = windows[0].samples
    spectrum = np.abs(np.fft.rfft(samples[TARGET // 4 : 3 * TARGET // 4]))
    peak = np.argmax(spectrum) * TARGET / (TARGET // 2)
    assert peak == pytest.approx(440, abs=10)
    assert 0.3 < np.abs(samples[TARGET // 4 : 3 * TARGET // 4]).max() < 0.7
    assert ext in {e.lstrip(".") for e in AUDIO_EXTENSIONS}


def test_stereo_is_downmixed_by_mean(tmp_path):
    rate = 8_000
    left, right = np.full(rate, 0.5), np.full(rate, -0.1)
    sf.write(tmp_path / "lr.wav", np.stack([left, right], axis=1), rate, subtype="FLOAT")
    (window,) = iter_audio_windows(tmp_path / "lr.wav", sample_rate=rate, window_seconds=1.0)
    assert np.allclose(window.samples, 0.2, atol=1e-6)


@pytest.mark.parametrize("frames", [1, 5, 100, 799])
def test_clip_shorter_than_a_tenth_of_a_second_is_padded_into_one_window(tmp_path, frames):
    rate = 8_000
    sf.write(tmp_path / "short.wav", np.full(frames, 0.25), rate, subtype="PCM_16")
    windows = list(iter_audio_windows(tmp_path / "short.wav", sample_rate=TARGET, window_seconds=10.0))
    assert len(windows) == 1
    (window,) = windows
    assert window.start == 0.0 and window.end == pytest.approx(frames / rate)
    assert window.samples.shape == (10 * TARGET,)
    assert np.all(window.samples[int(frames / rate * TARGET) + 200 :] == 0.0)  # zero padding after the clip


def test_zero_frame_file_is_a_decode_error(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16_000)
    assert probe_audio(tmp_path / "empty.wav").frames == 0
    with pytest.raises(DecodeError, match="no audio frames"):
        list(iter_audio_windows(tmp_path / "empty.wav", sample_rate=TARGET))


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty file"),
        (b"this is not audio at all, just some text in a file" * 20, "not a readable audio file"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a readable audio file"),
    ],
)
def test_garbage_raises_decode_error_with_one_line_reason(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    for call in (lambda: probe_audio(path), lambda: list(iter_audio_windows(path, sample_rate=TARGET))):
        with pytest.raises(DecodeError) as caught:
            call()
        assert reason in caught.value.reason and "\n" not in caught.value.reason
        assert caught.value.path == path


def test_missing_file_and_raw_pcm_are_decode_errors(tmp_path):
    with pytest.raises(DecodeError, match="no such file"):
        probe_audio(tmp_path / "nope.wav")
    (tmp_path / "x.raw").write_bytes(b"\x00\x01" * 1000)
    with pytest.raises(DecodeError, match="headerless raw"):
        list(iter_audio_windows(tmp_path / "x.raw", sample_rate=TARGET))


def test_truncated_flac_never_leaks_a_raw_exception(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, tone(3.0, 44_100), 44_100, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\x00garbage\xff" * 50)
    try:
        windows = list(iter_audio_windows(path, sample_rate=TARGET, window_seconds=1.0))
    except DecodeError as error:
        assert error.reason
    else:
        assert windows and all(isinstance(w, AudioWindow) for w in windows)


@pytest.mark.parametrize("suffix", ["wav", "mka"])  # libsndfile; FFmpeg (FLAC in Matroska, lossless: exact lengths)
@pytest.mark.parametrize("seconds,expected", [(10.0, [(0.0, 10.0)]), (10.5, [(0.0, 10.0), (7.5, 10.5)]),
                                              (17.5, [(0.0, 10.0), (7.5, 17.5)]), (25.0, [(0.0, 10.0), (7.5, 17.5), (15.0, 25.0)])])
def test_window_boundaries(tmp_path, seconds, expected, suffix):
    rate = 8_000
    path = tmp_path / f"a.{suffix}"
    if suffix == "wav":
        sf.write(path, tone(seconds, rate), rate)
    else:
        write_av(path, tone(seconds, rate), rate, "flac")
    windows = list(iter_audio_windows(path, sample_rate=8_000, block_seconds=3.0))
    assert [(w.start, w.end) for w in windows] == [pytest.approx(pair) for pair in expected]


def test_odd_sample_rate_uses_the_fft_fallback(tmp_path):
    sf.write(tmp_path / "odd.wav", tone(1.5, 44_101), 44_101)  # gcd(44101, 48000) = 1: no sinc kernel
    windows = list(iter_audio_windows(tmp_path / "odd.wav", sample_rate=48_000, window_seconds=1.0, hop_seconds=1.0))
    assert len(windows) == 2 and windows[1].end == pytest.approx(1.5, abs=1e-4)
    spectrum = np.abs(np.fft.rfft(windows[0].samples))
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)


def test_hour_long_file_streams_with_bounded_memory(tmp_path):
    rate, seconds = 8_000, 3600
    path = tmp_path / "hour.wav"
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        minute = (tone(60.0, rate) * 0.5).astype(np.float32)
        for _ in range(seconds // 60):
            out.write(minute)
    tracemalloc.start()
    try:
        count, last, previous_start = 0, None, -1.0
        for window in iter_audio_windows(path, sample_rate=rate, window_seconds=10.0, hop_seconds=7.5, block_seconds=60.0):
            assert window.start > previous_start and window.end - window.start <= 10.0 + 1e-9
            previous_start, last, count = window.start, window, count + 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 480  # starts 0, 7.5, ..., 3592.5: the window at 3592.5 reaches the end
    assert last.start == pytest.approx(3592.5) and last.end == pytest.approx(3600.0)
    whole_file = seconds * rate * 4  # float32 samples of the whole recording
    assert peak < whole_file / 10, f"peak {peak / 1e6:.1f} MB for a {whole_file / 1e6:.0f} MB recording"


def test_every_corpus_audio_file_decodes_or_raises_decode_error():
    root = corpus_dir()
    if root is None:
        pytest.skip("shared corpus not found (set MMSEARCH_CORPUS)")
    with open(root / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row["modality"] == "audio"]
    assert rows
    # every awkward file, plus a sample of the many ordinary clips (FSDD, ESC, UrbanSound)
    ordinary = ("fsdd/", "esc10-crying-baby-mp3/", "urbansound8k-subset/")
    chosen = [r for r in rows if not r["path"].startswith(ordinary)] + [r for r in rows if r["path"].startswith(ordinary)][::50]
    decoded = failed = 0
    for row in chosen:
        path = root / row["path"]
        try:
            probe_audio(path)
            first = next(iter(iter_audio_windows(path, sample_rate=48_000, block_seconds=10.0)))
        except DecodeError as error:
            assert error.reason.strip(), row["path"]
            failed += 1
            continue
        assert first.samples.shape == (480_000,) and np.isfinite(first.samples).all(), row["path"]
        decoded += 1
    assert decoded > 0 and failed > 0


# -- FFmpeg (PyAV): formats libsndfile does not read --------------------------------------------------------

PYAV_FORMATS = [  # suffix, encoder, container (None: from the suffix), rate, channels, bit rate
    ("m4a", "aac", None, 44_100, 2, None),
    ("m4a", "alac", None, 44_100, 2, None),
    ("m4b", "aac", "ipod", 48_000, 1, None),
    ("m4r", "aac", "ipod", 48_000, 1, None),
    ("3ga", "aac", "3gp", 48_000, 1, None),
    ("aac", "aac", "adts", 44_100, 2, None),
    ("adts", "aac", "adts", 22_050, 1, None),
    ("wma", "wmav2", "asf", 44_100, 2, 128_000),
    ("ac3", "ac3", None, 48_000, 2, None),
    ("eac3", "eac3", None, 48_000, 2, None),
    ("tta", "tta", None, 44_100, 2, None),
    ("wv", "wavpack", None, 44_100, 2, None),
    ("mka", "flac", None, 96_000, 2, None),
    ("weba", "libopus", "webm", 48_000, 2, None),
    ("opus", "libopus", None, 48_000, 1, None),
    ("oggflac", "flac", "ogg", 32_000, 1, None),
    ("oga", "flac", "ogg", 16_000, 2, None),  # Ogg FLAC: libsndfile (first for .oga) fails, FFmpeg takes over
    ("mp2", "mp2", None, 44_100, 2, None),
    ("mpa", "mp2", "mp2", 32_000, 1, None),
    ("voc", "pcm_u8", None, 8_000, 1, None),
    ("caf", "alac", None, 44_100, 2, None),
    ("amr", "libopencore_amrnb", None, 8_000, 1, None),
    ("ra", "real_144", "rm", 8_000, 1, None),
]
SPEECH_CODECS = {"libopencore_amrnb", "real_144"}
"""Narrow-band speech codecs: the pitch survives, the level does not (amplitude not checked)."""
CORPUS_ONLY = {".ape", ".dsf", ".mpc", ".tak", ".spx"}
"""No encoder in the PyAV wheel: checked on the shared corpus's files (tests/decoding/test_corpus_audio.py)."""


@pytest.mark.parametrize("suffix,codec,container,rate,channels,bit_rate", PYAV_FORMATS,
                         ids=[f"{row[0]}-{row[1]}" for row in PYAV_FORMATS])
def test_each_ffmpeg_format_decodes_to_the_same_tone(tmp_path, suffix, codec, container, rate, channels, bit_rate):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = write_av(tmp_path / f"tone.{suffix}", tone(2.5, rate, channels), rate, codec, container=container,
                    bit_rate=bit_rate)
    info = probe_audio(path)
    assert info.sample_rate == rate and info.channels == channels
    assert info.duration == pytest.approx(2.5, abs=0.3) or (suffix == "ra" and info.duration == 0.0)  # rm: unknown
    windows = list(iter_audio_windows(path, sample_rate=TARGET, window_seconds=1.0, hop_seconds=1.0))
    assert [w.start for w in windows] == [0.0, 1.0, 2.0]  # the last one partial and padded
    assert windows[-1].end == pytest.approx(2.5, abs=0.15)
    assert all(w.samples.dtype == np.float32 and w.samples.shape == (TARGET,) for w in windows)
    middle = windows[1].samples[TARGET // 4 : 3 * TARGET // 4]
    assert peak_hz(middle, TARGET) == pytest.approx(440, abs=10)
    if codec not in SPEECH_CODECS:
        assert 0.3 < np.abs(middle).max() < 0.7
    assert f".{suffix}" in AUDIO_EXTENSIONS


def write_dsdiff(path: Path, seconds: float = 1.0) -> Path:
    """A DSDIFF (.dff) file of DSD silence, written by hand: no DSD encoder in the wheel."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack(">Q", len(body)) + body + b"\0" * (len(body) % 2)
    rate, channels = 2_822_400, 2
    sound = b"SND " + chunk(b"FS  ", struct.pack(">I", rate)) \
        + chunk(b"CHNL", struct.pack(">H", channels) + b"SLFTSRGT") \
        + chunk(b"CMPR", b"DSD " + bytes([14]) + b"not compressed\0")
    body = b"DSD " + chunk(b"FVER", struct.pack(">I", 0x01050000)) + chunk(b"PROP", sound) \
        + chunk(b"DSD ", b"\x69" * (round(seconds * rate / 8) * channels))  # 0x69: the DSD idle pattern
    path.write_bytes(chunk(b"FRM8", body))
    return path


def test_dsdiff_decodes(tmp_path):
    path = write_dsdiff(tmp_path / "silence.dff")
    assert probe_audio(path).duration == pytest.approx(1.0)
    (window,) = iter_audio_windows(path, sample_rate=TARGET, window_seconds=1.0)
    assert window.end == pytest.approx(1.0) and np.abs(window.samples).max() < 0.01


def test_every_audio_extension_is_checked_by_decoding_a_file():
    checked = {f".{row[0]}" for row in FORMATS} | {f".{row[0]}" for row in PYAV_FORMATS} | CORPUS_ONLY | {".dff"}
    assert AUDIO_EXTENSIONS == checked
    assert not AUDIO_EXTENSIONS & UNSUPPORTED_AUDIO_EXTENSIONS
    videos = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}  # found as video; their soundtrack decodes here
    assert not videos & (AUDIO_EXTENSIONS | UNSUPPORTED_AUDIO_EXTENSIONS)
    assert SOUNDFILE_FIRST <= AUDIO_EXTENSIONS | UNSUPPORTED_AUDIO_EXTENSIONS


def test_midi_is_listed_but_not_decoded(tmp_path):
    path = tmp_path / "song.mid"
    path.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00")
    assert path.suffix in UNSUPPORTED_AUDIO_EXTENSIONS
    with pytest.raises(DecodeError, match="not a readable audio file") as caught:
        list(iter_audio_windows(path, sample_rate=TARGET))
    assert "\n" not in caught.value.reason and str(path) not in caught.value.reason


# -- video containers: the soundtrack ------------------------------------------------------------------------

@pytest.mark.parametrize("suffix,codec,video", [("mp4", "aac", "mpeg4"), ("mkv", "libopus", "mpeg4"),
                                                ("mov", "aac", "mpeg4"), ("avi", "mp2", "mpeg4"),
                                                ("webm", "libopus", "libvpx")])
def test_the_soundtrack_of_a_video_is_decoded(tmp_path, suffix, codec, video):
    if video not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {video} encoder")
    rate = 48_000
    path = write_av(tmp_path / f"clip.{suffix}", tone(2.5, rate, 2), rate, codec, video=video)
    with av.open(str(path)) as container:
        assert [stream.type for stream in container.streams] == ["video", "audio"]
    info = probe_audio(path)
    assert (info.sample_rate, info.channels) == (rate, 2)
    windows = list(iter_audio_windows(path, sample_rate=TARGET, window_seconds=1.0, hop_seconds=1.0))
    assert [w.start for w in windows] == [0.0, 1.0, 2.0]
    middle = windows[1].samples[TARGET // 4 : 3 * TARGET // 4]
    assert peak_hz(middle, TARGET) == pytest.approx(440, abs=10) and 0.3 < np.abs(middle).max() < 0.7


def test_a_soundtrack_that_starts_late_keeps_the_time_a_player_shows(tmp_path):
    rate = 16_000
    path = write_av(tmp_path / "late.mkv", tone(2.0, rate), rate, "flac", video="mpeg4", audio_start=1.0)
    one = list(iter_audio_windows(path, sample_rate=rate, window_seconds=1.0, hop_seconds=1.0))
    assert [(w.start, w.end) for w in one] == [(1.0, 2.0), (2.0, 3.0)]  # [0, 1) holds no audio: skipped
    two = list(iter_audio_windows(path, sample_rate=rate, window_seconds=2.0, hop_seconds=1.0))
    assert [(w.start, w.end) for w in two] == [(0.0, 2.0), (1.0, 3.0)]
    assert np.abs(two[0].samples[: rate - 100]).max() == 0.0  # the gap before the audio is silence
    assert np.abs(two[0].samples[rate + 100 :]).max() == pytest.approx(0.5, abs=0.01)


def test_a_video_without_audio_is_a_decode_error(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as out:
        picture = out.add_stream("mpeg4", rate=10)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        for index in range(5):
            image = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            image.pts = index
            out.mux(picture.encode(image))
        out.mux(picture.encode(None))
    for call in (lambda: probe_audio(path), lambda: list(iter_audio_windows(path, sample_rate=TARGET))):
        with pytest.raises(DecodeError) as caught:
            call()
        assert caught.value.reason == "no audio stream" and caught.value.path == path


# -- what FFmpeg decodes is what libsndfile decodes ---------------------------------------------------------

@pytest.mark.parametrize("layout_channels", [2, 6])
def test_channels_are_averaged_not_mixed_by_libswresample(tmp_path, layout_channels):
    rate = 16_000
    signal = np.zeros((2 * rate, layout_channels))
    signal[:, 0] = tone(2.0, rate)  # one channel carries the tone, the others are silent
    path = write_av(tmp_path / "one-channel.mka", signal, rate, "flac")
    windows = list(iter_audio_windows(path, sample_rate=rate, window_seconds=1.0, hop_seconds=1.0))
    assert len(windows) == 2
    expected = tone(2.0, rate)[:rate] / layout_channels  # the mean: 1/2 for stereo, 1/6 for 5.1 (LFE included)
    np.testing.assert_allclose(windows[0].samples, expected, atol=1e-4)


def noisy_tone(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = round(seconds * rate)
    signal = 0.3 * np.sin(2 * np.pi * 330 * np.arange(frames) / rate)[:, None]
    return np.clip(signal + 0.1 * rng.standard_normal((frames, channels)), -1, 1)


@pytest.mark.parametrize("suffix,fmt,subtype,rate,channels", [
    ("wav", "WAV", "PCM_16", 44_100, 2), ("wav", "WAV", "PCM_24", 22_050, 1), ("wav", "WAV", "FLOAT", 8_000, 3),
    ("flac", "FLAC", "PCM_16", 32_000, 2), ("ogg", "OGG", "VORBIS", 44_100, 2), ("opus", "OGG", "OPUS", 48_000, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 44_100, 2),  # with a LAME header; without one, see test_corpus_audio.py
])
def test_both_readers_give_the_same_windows(tmp_path, suffix, fmt, subtype, rate, channels):
    path = tmp_path / f"noise.{suffix}"
    sf.write(path, noisy_tone(5.3, rate, channels, seed=7), rate, format=fmt, subtype=subtype)
    ours = list(iter_audio_windows(path, reader="soundfile", sample_rate=48_000, window_seconds=1.0, hop_seconds=1.0))
    theirs = list(iter_audio_windows(path, reader="pyav", sample_rate=48_000, window_seconds=1.0, hop_seconds=1.0))
    assert [w.start for w in ours] == [w.start for w in theirs] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert ours[-1].end == pytest.approx(theirs[-1].end, abs=0.05)  # FFmpeg's Vorbis ends up to a block off
    assert min(cosine(a.samples, b.samples) for a, b in zip(ours, theirs)) >= 0.999
    if fmt in ("WAV", "FLAC"):  # lossless: the same samples, resampled the same way
        assert max(np.abs(a.samples - b.samples).max() for a, b in zip(ours, theirs)) < 1e-5


def test_a_stream_whose_rate_changes_is_brought_to_its_first_rate(tmp_path):
    first = write_av(tmp_path / "a.aac", tone(1.0, 44_100), 44_100, "aac", container="adts")
    second = write_av(tmp_path / "b.aac", tone(1.0, 22_050), 22_050, "aac", container="adts")
    spliced = tmp_path / "spliced.aac"
    spliced.write_bytes(first.read_bytes() + second.read_bytes())
    assert probe_audio(spliced).sample_rate == 44_100
    windows = list(iter_audio_windows(spliced, sample_rate=TARGET, window_seconds=1.0, hop_seconds=1.0))
    assert windows[1].start == 1.0 and windows[-1].end == pytest.approx(2.0, abs=0.15)
    for window in windows[:2]:  # 440 Hz in both halves: the 22.05 kHz half was not played at 44.1 kHz
        assert peak_hz(window.samples[TARGET // 4 : 3 * TARGET // 4], TARGET) == pytest.approx(440, abs=10)


def test_tags_that_are_not_utf8_do_not_stop_the_audio(tmp_path):
    path = write_av(tmp_path / "tagged.m4a", tone(1.0, 44_100), 44_100, "aac", title="PLACEHOLDER!")
    data = path.read_bytes()
    assert data.count(b"PLACEHOLDER!") == 1
    path.write_bytes(data.replace(b"PLACEHOLDER!", b"\xed\xa0\x80\xff caf\xe9 ok"))  # same length, not UTF-8
    with pytest.raises(UnicodeDecodeError):
        av.open(str(path))  # what PyAV does with such tags by default
    (window,) = iter_audio_windows(path, sample_rate=TARGET, window_seconds=2.0)
    assert window.end == pytest.approx(1.0, abs=0.1)


# -- long files: lazily, in bounded memory -------------------------------------------------------------------

def test_hour_long_ffmpeg_file_streams_lazily_with_bounded_memory(tmp_path, monkeypatch):
    rate, seconds = 8_000, 3600
    path = tmp_path / "hour.mka"  # PCM in Matroska: an FFmpeg-only container, cheap to write
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        second = (tone(1.0, rate) * 0.5 * 32767).astype(np.int16)[None]
        for index in range(seconds):
            frame = av.AudioFrame.from_ndarray(second, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, index * rate, fractions.Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    decoded = []
    real = audio_av.PyAVSource._decoded

    def counted(self):
        for frame in real(self):
            decoded.append(frame.samples)
            yield frame
    monkeypatch.setattr(audio_av.PyAVSource, "_decoded", counted)
    windows = iter_audio_windows(path, sample_rate=rate, window_seconds=10.0, hop_seconds=7.5, block_seconds=60.0)
    first = next(windows)
    assert inspect.getgeneratorstate(windows) == inspect.GEN_SUSPENDED
    assert (first.start, first.end) == (0.0, 10.0)
    assert sum(decoded) <= 61 * rate  # one block of the hour was decoded for the first window, not more
    tracemalloc.start()
    try:
        count, last = 1, first
        for window in windows:
            count, last = count + 1, window
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 480 and last.start == pytest.approx(3592.5) and last.end == pytest.approx(3600.0)
    assert sum(decoded) == seconds * rate
    whole_file = seconds * rate * 4
    assert peak < whole_file / 10, f"peak {peak / 1e6:.1f} MB for a {whole_file / 1e6:.0f} MB recording"


# -- broken files --------------------------------------------------------------------------------------------

def assert_one_line(error: DecodeError, path: Path) -> None:
    assert error.path == path and error.reason and "\n" not in error.reason and len(error.reason) <= 200
    assert str(path) not in error.reason and path.name not in error.reason


@pytest.mark.parametrize("name,content,reason", [
    ("empty.m4a", b"", "empty file (0 bytes)"),
    ("junk.m4a", np.random.default_rng(1).bytes(4000), "not a readable audio file ("),
    ("junk.opus", b"OggS" + np.random.default_rng(2).bytes(4000), "not a readable audio file ("),
    ("junk.wma", np.random.default_rng(3).bytes(300), "not a readable audio file ("),
])
def test_unreadable_ffmpeg_files_raise_one_line_decode_errors(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    for call in (lambda: probe_audio(path), lambda: list(iter_audio_windows(path, sample_rate=TARGET))):
        with pytest.raises(DecodeError) as caught:
            call()
        assert caught.value.reason.startswith(reason), caught.value.reason
        assert_one_line(caught.value, path)


def test_mp4_cut_before_its_index_is_not_readable(tmp_path):
    path = write_av(tmp_path / "cut.m4a", tone(3.0, 44_100), 44_100, "aac")  # the moov index is written last
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])
    with pytest.raises(DecodeError, match="not a readable audio file") as caught:
        list(iter_audio_windows(path, sample_rate=TARGET))
    assert_one_line(caught.value, path)


def test_data_corrupt_mid_stream_is_a_decode_error(tmp_path):
    path = write_av(tmp_path / "hit.m4a", tone(3.0, 44_100, 2), 44_100, "aac")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(4).bytes(3000)
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match=r"^.*corrupt audio data \(") as caught:
        list(iter_audio_windows(path, sample_rate=TARGET, window_seconds=1.0))
    assert_one_line(caught.value, path)


@pytest.mark.parametrize("suffix,codec,container", [("aac", "aac", "adts"), ("flac", "flac", None),
                                                   ("wv", "wavpack", None)])  # the decoder, the demuxer fails
def test_a_truncated_stream_keeps_the_audio_before_the_cut(tmp_path, suffix, codec, container):
    path = write_av(tmp_path / f"cut.{suffix}", tone(3.0, 44_100), 44_100, codec, container=container)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 + 7])  # cut inside a frame
    windows = list(iter_audio_windows(path, sample_rate=TARGET, window_seconds=1.0, hop_seconds=1.0))
    assert windows[0].start == 0.0 and 1.0 <= windows[-1].end < 2.0  # about half of the 3 s
    assert peak_hz(windows[0].samples[TARGET // 4 : 3 * TARGET // 4], TARGET) == pytest.approx(440, abs=10)
