"""Audio decoding: every format libsndfile reads, short and long files, bounded memory, clean failures."""
from __future__ import annotations

import csv
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmsearch.decoding.audio import AUDIO_EXTENSIONS, AudioWindow, iter_audio_windows, probe_audio
from mmsearch.errors import DecodeError

TARGET = 16_000  # small target rate keeps the tests fast; the resampling path is the same as 48 kHz


def corpus_dir() -> Path | None:
    folder = Path(os.environ.get("MMSEARCH_CORPUS") or Path(__file__).resolve().parents[3] / "shared" / "corpus")
    return folder if (folder / "MANIFEST.tsv").is_file() else None


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono


FORMATS = [
    ("wav", "WAV", "PCM_U8", 8_000, 1),
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


@pytest.mark.parametrize("seconds,expected", [(10.0, [(0.0, 10.0)]), (10.5, [(0.0, 10.0), (7.5, 10.5)]),
                                              (17.5, [(0.0, 10.0), (7.5, 17.5)]), (25.0, [(0.0, 10.0), (7.5, 17.5), (15.0, 25.0)])])
def test_window_boundaries(tmp_path, seconds, expected):
    rate = 8_000
    sf.write(tmp_path / "a.wav", tone(seconds, rate), rate)
    windows = list(iter_audio_windows(tmp_path / "a.wav", sample_rate=8_000, block_seconds=3.0))
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
