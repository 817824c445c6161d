"""The shared corpus's audio, file by file: ``iter_audio_windows`` decodes what the manifest says FFmpeg (the
``decodes_pyav`` column) or libsndfile (``decodes``) decodes, refuses the rest with a one-line reason, and both
readers give the same windows for the files both read. Skipped when the corpus is absent."""
from __future__ import annotations


import numpy as np
import pytest

from corpus_audio import CORPUS, DECODES_ANYWAY, REFUSED_ANYWAY, audio_rows, decodes_by_manifest

from mmsearch.decoding.audio import iter_audio_windows
from mmsearch.errors import DecodeError

pytestmark = pytest.mark.corpus


READERS_DIFFER = {
    "mutagen-container-zoo/bad-xing.mp3":
        "broken Xing header: libsndfile (mpg123) stops at the frame count it states (4608), FFmpeg decodes all 5760",
    "mutagen-container-zoo/vbri.mp3":
        "VBRI header: mpg123 trims the stream to the header's length (0.41 s), FFmpeg decodes every frame (0.44 s)",
    "mutagen-container-zoo/xing.mp3":
        "Xing header: mpg123 trims the stream to the header's length (2.038 s), FFmpeg decodes every frame (2.064 s)",
    "pydub-testdata/test3.mp3":
        "no LAME/Xing gapless header: mpg123 drops the 529-sample MP3 decoder delay, FFmpeg keeps it (a 12 ms shift)",
    "mutagen-container-zoo/empty.ogg":
        "Vorbis: FFmpeg's output ends 128 samples (2.9 ms) short of the last granule position libsndfile honours",
    "mutagen-container-zoo/multipagecomment.ogg":
        "Vorbis: FFmpeg's output ends 128 samples (2.9 ms) short of the last granule position libsndfile honours",
    "scipy-wav-testdata/test-8000Hz-be-3ch-5S-24bit.wav":
        "RIFX (big-endian WAV): FFmpeg decodes its 24-bit samples as little-endian ones (noise), libsndfile right",
}
"""Files both readers read but decode differently (.wav, .mp3 and .ogg go to libsndfile first, as
``audio.SOUNDFILE_FIRST`` records)."""

ORDINARY = ("fsdd/", "esc10-crying-baby-mp3/", "urbansound8k-subset/")
"""Folders of many alike clips (8 kHz WAV, 44.1 kHz MP3, 22.05 kHz WAV): the readers' parity is checked on
every 10th of them, every other file in full."""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))


def test_every_corpus_audio_file_decodes_as_the_manifest_says():
    wrong = []
    for row in audio_rows():
        name, path = row["path"], CORPUS / row["path"]
        expected = (decodes_by_manifest(row) or name in DECODES_ANYWAY) and name not in REFUSED_ANYWAY
        try:
            windows = list(iter_audio_windows(path, sample_rate=16_000, block_seconds=30.0))
        except DecodeError as error:
            reason = error.reason
            if not reason.strip() or "\n" in reason or len(reason) > 200 or str(path) in reason:
                wrong.append(f"{name}: reason not one short line: {reason!r}")
            elif expected:
                wrong.append(f"{name}: expected to decode ({row['decodes_pyav']}), got DecodeError({reason!r})")
            elif name in REFUSED_ANYWAY:
                assert reason == "no audio frames", name
            continue
        if not expected:
            wrong.append(f"{name}: expected to fail ({row['decodes_pyav']}), got {len(windows)} windows")
        elif not windows or not all(w.samples.shape == (160_000,) and np.isfinite(w.samples).all() for w in windows):
            wrong.append(f"{name}: bad windows")
    assert not wrong, "\n".join(wrong)


def test_both_readers_give_the_same_windows_for_files_both_read():
    rows = [row for row in audio_rows() if row["decodes"] == "yes" and row["decodes_pyav"] == "yes"]
    ordinary = [row for row in rows if row["path"].startswith(ORDINARY)]
    chosen = [row for row in rows if not row["path"].startswith(ORDINARY)] + ordinary[::10]
    assert len(chosen) > 50
    wrong = []
    for row in chosen:
        path = CORPUS / row["path"]
        ours = list(iter_audio_windows(path, reader="soundfile", sample_rate=48_000))
        theirs = list(iter_audio_windows(path, reader="pyav", sample_rate=48_000))
        problems = []
        if [w.start for w in ours] != [w.start for w in theirs]:
            problems.append(f"window starts {[w.start for w in ours]} != {[w.start for w in theirs]}")
        if abs(ours[-1].end - theirs[-1].end) > 0.001:
            problems.append(f"ends {ours[-1].end:.4f} != {theirs[-1].end:.4f}")
        for a, b in zip(ours, theirs):
            loud = min(np.sqrt(np.mean(a.samples**2)), np.sqrt(np.mean(b.samples**2))) > 1e-3
            if loud and cosine(a.samples, b.samples) < 0.999:
                problems.append(f"window at {a.start} s: cosine below 0.999")
            elif not loud and np.abs(a.samples - b.samples).max() > 1e-2:  # near silence: cosine is noise
                problems.append(f"quiet window at {a.start} s differs")
        if problems and row["path"] not in READERS_DIFFER:
            wrong.append(f"{row['path']}: {'; '.join(problems)}")
        elif not problems and row["path"] in READERS_DIFFER:
            wrong.append(f"{row['path']}: listed in READERS_DIFFER but the readers agree now")
    assert not wrong, "\n".join(wrong)
