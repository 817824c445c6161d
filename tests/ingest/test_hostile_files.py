"""Hostile files: each ends indexed or recorded as failed with a reason; nothing hangs, nothing aborts the run."""
from __future__ import annotations

import builtins
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import CORPUS, write_image, write_text

from mmsearch.store.rows import RETRY

def junk(count: int, seed: int) -> bytes:
    """Seeded junk bytes: the same hostile files on every run."""
    return np.random.default_rng(seed).bytes(count)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, side: int = 20_000) -> None:
    """A valid 1-bit grey PNG of side x side pixels in one colour: ~50 KB on disk, 400 megapixels decoded."""
    squeeze = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    body = b"".join(squeeze.compress(row * 1000) for _ in range(side // 1000)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
                     + _png_chunk(b"IEND", b""))


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16_000) -> None:
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def build_hostile(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    good = write_image(root / "good.png", seed=1)
    files["good image"] = good
    files["good text"] = write_text(root / "good.txt", "an ordinary note about orchards")
    data = good.read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    files["truncated PNG"] = root / "truncated.png"
    jpeg = root / "src.jpg"
    write_image(jpeg, seed=2)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + junk(64, seed=1) + jpeg.read_bytes()[200:400])
    jpeg.unlink()
    files["corrupt JPEG"] = root / "corrupt.jpg"
    for name in ("zero.png", "zero.txt", "zero.wav"):
        (root / name).write_bytes(b"")
        files[f"zero-byte {name.split('.')[1]}"] = root / name
    write_png_bomb(root / "bomb.png")
    files["20000x20000 PNG bomb"] = root / "bomb.png"
    (root / "latin1.txt").write_bytes("Le café du marché était fermé à midi, déjà.".encode("cp1252"))
    files["non-UTF-8 text (cp1252)"] = root / "latin1.txt"
    (root / "binary.txt").write_bytes(bytes(range(256)) * 8)
    files["binary data named .txt"] = root / "binary.txt"
    (root / "invalid-utf16.txt").write_bytes(b"\xff\xfe" + b"\x00\xd8" * 10)
    files["UTF-16 BOM, broken surrogates"] = root / "invalid-utf16.txt"
    wav = root / "good.wav"
    write_wav(wav)
    files["good audio"] = wav
    (root / "truncated.wav").write_bytes(wav.read_bytes()[:60])
    files["truncated WAV"] = root / "truncated.wav"
    (root / "garbage.flac").write_bytes(b"fLaC" + junk(300, seed=2))
    files["corrupt FLAC"] = root / "garbage.flac"
    (root / "noise.mp3").write_bytes(b"ID3" + junk(500, seed=3))
    files["corrupt MP3"] = root / "noise.mp3"
    unicode_dir = root / "ünïcødé 日本語 ✓"
    files["unicode names"] = write_text(unicode_dir / "naïve — résumé ☃.txt", "snow and winter")
    files["newline in name"] = write_text(root / "two\nlines.txt", "a name with a line break")
    deep = root
    for level in range(12):
        deep = deep / (f"{level:02d}" + "d" * 240)
    files["long path (~3,000 chars)"] = write_text(deep / ("n" * 250 + ".txt"), "deep down in the folders")
    loop = root / "loop"
    loop.mkdir()
    os.symlink("..", loop / "back-up")            # a folder loop: must not be followed
    os.symlink("b.txt", root / "a.txt")           # a file loop: a.txt -> b.txt -> a.txt
    os.symlink("a.txt", root / "b.txt")
    os.symlink("does-not-exist.png", root / "dangling.png")
    return files


@pytest.fixture
def hostile_engine(make_engine, monkeypatch):
    from mmsearch.encoders.clap import load_audio_encoder
    from mmsearch.engine import Engine

    clap = load_audio_encoder("test-tiny:random")
    monkeypatch.setattr(Engine, "_ensure_bridge", lambda self: None)  # fitting the audio bridge is not tested here

    def make(**settings):
        settings.setdefault("audio_model", "test-tiny:random")
        settings.setdefault("file_timeout", 20.0)
        engine = make_engine(**settings)
        engine._clap = clap
        return engine
    return make


def _outcomes(engine) -> dict[str, str]:
    rows = engine.store.catalog.all_items()
    return {path: ("indexed" if row.state == "indexed" else f"{row.state}: {row.error}") for path, row in rows.items()}


EXPECTED = {
    "good image": "indexed",
    "good text": "indexed",
    "truncated PNG": "failed: image could not be decoded (image file is truncated)",
    "corrupt JPEG": "failed: image could not be decoded (",
    "zero-byte png": "failed: not a readable image (format not recognised)",
    "zero-byte txt": "failed: text file is empty (no words)",
    "zero-byte wav": "failed: empty file (0 bytes)",
    "20000x20000 PNG bomb": "failed: refused as a possible decompression bomb (",
    "non-UTF-8 text (cp1252)": "indexed",
    "binary data named .txt": "failed: binary data, not text (contains NUL bytes)",
    "UTF-16 BOM, broken surrogates": "failed: invalid utf-16 text (illegal UTF-16 surrogate at byte 2)",
    "good audio": "indexed",
    "truncated WAV": "indexed",  # its header and 8 samples survive: one (padded) window
    "corrupt FLAC": "failed: not a readable audio file (",
    "corrupt MP3": "failed: not a readable audio file (",
    "unicode names": "indexed",
    "newline in name": "indexed",
    "long path (~3,000 chars)": "indexed",
}
"""What becomes of each hostile file: indexed, or failed with this reason (a prefix where the rest is the
decoder's own words)."""


def test_every_hostile_file_is_indexed_or_failed_with_a_reason(tmp_path, hostile_engine):
    files = build_hostile(tmp_path / "hostile")
    engine = hostile_engine()
    report = engine.index([tmp_path / "hostile"])
    outcome = _outcomes(engine)
    assert set(files) == set(EXPECTED)
    for label, path in files.items():
        assert str(path) in outcome, f"{label} was neither indexed nor recorded"
        assert outcome[str(path)].startswith(EXPECTED[label]), (label, outcome[str(path)])
    assert not any("/loop/" in p for p in outcome)  # the folder loop is not followed
    root = tmp_path / "hostile"
    assert "Too many levels of symbolic links" in outcome[str(root / "a.txt")]
    assert "Too many levels of symbolic links" in outcome[str(root / "b.txt")]
    assert "broken symbolic link to does-not-exist.png" in outcome[str(root / "dangling.png")]
    assert {f.path for f in report.failed} == {p for p, o in outcome.items() if o != "indexed"}
    status = engine.status()
    assert {f.path for f in status.failed} == {p for p, o in outcome.items() if o != "indexed"}
    # a later run retries nothing that did not change
    again = engine.index([tmp_path / "hostile"])
    assert again.segments_embedded == 0 and again.failed == () and again.unchanged == len(outcome)
    # ...and retries a failed file once it changes
    write_text(files["zero-byte txt"], "now it has words")
    third = engine.index([tmp_path / "hostile"])
    assert third.updated == 1 and _outcomes(engine)[str(files["zero-byte txt"])] == "indexed"


def test_unreadable_file_is_recorded_and_retried_every_run(tmp_path, hostile_engine, monkeypatch):
    """Root reads through chmod 000, so the PermissionError is simulated where the file is opened."""
    root = tmp_path / "media"
    locked = write_text(root / "locked.txt", "secret words")
    write_text(root / "open.txt", "public words")
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    engine = hostile_engine()
    report = engine.index([root])
    assert [(f.path, f.reason) for f in report.failed] == [(str(locked), "cannot read file (Permission denied)")]
    assert engine.store.catalog.all_items()[str(locked)].state == RETRY
    monkeypatch.setattr(builtins, "open", real_open)  # permissions fixed: no change to size or mtime
    again = engine.index([root])
    assert again.updated == 1 and again.failed == () and _outcomes(engine)[str(locked)] == "indexed"


def test_file_changing_or_vanishing_while_read_is_not_indexed_from_a_stale_read(tmp_path, hostile_engine, monkeypatch):
    from mmsearch.ingest import pipelines
    from mmsearch.ingest.decoders import Decoder
    from mmsearch.search.queries import Query

    root = tmp_path / "media"
    changing = write_text(root / "changing.txt", "the first version")
    vanishing = write_text(root / "vanishing.txt", "here today")
    write_text(root / "steady.txt", "nothing happens to me")
    # the file changes (or goes) after it was hashed, while a decoding process reads it
    monkeypatch.setattr(pipelines.TextPipeline, "decoder", lambda self: Decoder.of("hostile_decoders:change_while_read"))
    engine = hostile_engine()
    report = engine.index([root])
    reasons = {f.path: f.reason for f in report.failed}
    assert "changed while being indexed" in reasons[str(changing)]
    assert "vanished while being indexed" in reasons[str(vanishing)]
    monkeypatch.undo()
    again = engine.index([root])
    outcome = _outcomes(engine)
    assert outcome[str(changing)] == "indexed" and str(vanishing) not in outcome and again.removed == 1
    hits = engine.search(Query(text="second longer version"), kind="text", k=3).hits
    assert any(h.path == str(changing) and "second" in (h.passage or "") for h in hits)


def test_a_stuck_decoder_times_out_and_the_run_goes_on(tmp_path, hostile_engine, monkeypatch):
    """A decoder stuck in a C call (``time.sleep``): its process is killed after the limit, not waited for."""
    from mmsearch.ingest import pipelines
    from mmsearch.ingest.decoders import Decoder

    root = tmp_path / "media"
    stuck = write_text(root / "hang.txt", "this one never finishes decoding")
    for i in range(5):
        write_text(root / f"fine{i}.txt", f"note number {i} about copper")
    monkeypatch.setattr(pipelines.TextPipeline, "decoder", lambda self: Decoder.of("hostile_decoders:passages"))
    engine = hostile_engine(file_timeout=1.0, workers=2)
    report = engine.index([root])
    assert [(f.path, f.reason.split(" (")[0]) for f in report.failed] == [(str(stuck), "timed out: nothing decoded for 1 s")]
    assert report.added == 5


FFMPEG_KEEPS_THE_START = {"mutagen-container-zoo/variable-block.flac"}
"""Both manifest columns say no, yet FFmpeg decodes its first 0.91 s before data that does not decode, with
nothing good after it: a truncated stream, whose start is kept (tests/decoding/test_corpus_audio.py)."""


@pytest.mark.corpus
def test_corrupt_files_of_the_shared_corpus(tmp_path, hostile_engine):
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    chosen, ffmpeg_reads = [], set()
    for line in (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) > 9 and fields[7] == "no" and fields[1] in ("image", "audio", "text") \
                and int(fields[3] or 0) <= 100_000:
            chosen.append(fields[0])
            if fields[1] == "audio" and (fields[9].startswith("yes") or fields[0] in FFMPEG_KEEPS_THE_START):
                ffmpeg_reads.add(fields[0])  # libsndfile cannot read it; FFmpeg (PyAV) can
    folder = tmp_path / "corpus"
    for name in chosen[:24]:
        target = folder / name.replace("/", "__")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / name, target)
    engine = hostile_engine(file_timeout=20.0)
    engine.index([folder])
    outcome = _outcomes(engine)
    for name in chosen[:24]:  # the manifest's decoders (libsndfile, Pillow) cannot read them, nor can ours...
        reason = outcome[str(folder / name.replace("/", "__"))]
        if name in ffmpeg_reads:  # ...except the audio FFmpeg reads: M4A, WMA, APE, TAK, DSF...
            assert reason == "indexed", (name, reason)
        else:
            assert reason.startswith("failed: ") and len(reason) > len("failed: ") + 10, (name, reason)
    assert 8 <= len(ffmpeg_reads & set(chosen[:24]))
