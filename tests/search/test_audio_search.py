"""Audio as a first-class modality: indexing, audio->audio, text->audio, audio<->image through the bridge."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from conftest import TINY, write_image, write_text
from corpus_audio import DECODES_ANYWAY, REFUSED_ANYWAY, audio_rows, decodes_by_manifest

from mmsearch.records import Modality
from mmsearch.search.queries import Query


def write_tone(path, seconds: float, rate: int = 16000, freq: float = 440.0, seed: int = 0, channels: int = 1):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    data = np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), rate)
    return path


@pytest.fixture(scope="module")
def tiny_clap():
    from mmsearch.encoders.clap import load_audio_encoder

    return load_audio_encoder("test-tiny:random")


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "mixed"
    write_tone(root / "sounds" / "a440.wav", 3.0, freq=440, seed=1)
    write_tone(root / "sounds" / "a880.flac", 4.0, freq=880, seed=2, rate=22050)
    write_tone(root / "sounds" / "long.wav", 25.0, freq=200, seed=3, rate=8000, channels=2)
    write_tone(root / "sounds" / "blip.wav", 0.05, freq=1000, seed=4)
    for i in range(3):
        write_image(root / "pics" / f"p{i}.png", seed=i)
    write_text(root / "notes" / "n.txt", "the sound of rain on a tin roof")
    return root


@pytest.fixture
def engine(make_engine, tiny_clap, mixed):
    engine = make_engine(audio_model=TINY)
    engine._clap = tiny_clap
    report = engine.index([mixed])
    assert report.failed == () and report.added == 8
    return engine


def test_audio_files_are_windowed_and_counted(engine):
    status = engine.status()
    assert status.counts["audio"] == 4
    assert status.segments["audio"] == 1 + 1 + 3 + 1  # 25 s at 10 s windows, 7.5 s hop -> 3 windows
    assert status.extra["audio_model"] == TINY and isinstance(status.extra["bridge"], dict)


def test_indexed_audio_as_query_comes_back_first(engine, mixed):
    for name in ("a440.wav", "a880.flac", "long.wav", "blip.wav"):
        hits = engine.search(Query(audio=mixed / "sounds" / name), kind="audio", k=2).hits
        assert hits[0].path == str(mixed / "sounds" / name)
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_audio_hits_carry_window_times(engine, mixed):
    hits = engine.search(Query(audio=mixed / "sounds" / "long.wav"), kind="audio", k=4).hits
    long_hit = next(h for h in hits if h.path.endswith("long.wav"))
    assert 0.0 <= long_hit.start < long_hit.end <= 25.0 and long_hit.end - long_hit.start <= 10.0
    blip = next(h for h in engine.search(Query(text="a blip"), kind="audio", k=4).hits if h.path.endswith("blip.wav"))
    assert blip.start == 0.0 and blip.end == pytest.approx(0.05, abs=1e-3)


def test_text_to_audio_uses_the_audio_space(engine):
    hits = engine.search(Query(text="a high beep"), kind="audio", k=4).hits
    assert len(hits) == 4 and {h.modality for h in hits} == {Modality.AUDIO}


def test_audio_to_image_and_image_to_audio_return_the_right_kind(engine, mixed):
    to_images = engine.search(Query(audio=mixed / "sounds" / "a440.wav"), kind="image", k=3).hits
    assert len(to_images) == 3 and all(h.modality is Modality.IMAGE for h in to_images)
    to_audio = engine.search(Query(image=mixed / "pics" / "p0.png"), kind="audio", k=3).hits
    assert len(to_audio) == 3 and all(h.modality is Modality.AUDIO for h in to_audio)
    to_text = engine.search(Query(audio=mixed / "sounds" / "a440.wav"), kind="text", k=1).hits
    assert to_text[0].modality is Modality.TEXT and to_text[0].passage


def test_kind_all_from_audio_reaches_every_modality(engine, mixed):
    hits = engine.search(Query(audio=mixed / "sounds" / "a880.flac"), kind="all", k=8).hits
    assert {h.modality for h in hits} == {Modality.AUDIO, Modality.IMAGE, Modality.TEXT}


def test_remove_and_reindex_audio(engine, mixed):
    (mixed / "sounds" / "a440.wav").unlink()
    report = engine.index([mixed])
    assert report.removed == 1 and engine.status().counts["audio"] == 3


def test_default_audio_model_unavailable_skips_audio_with_a_note(make_engine, mixed):
    engine = make_engine()  # default CLAP from the (unreachable) hub
    report = engine.index([mixed])
    assert report.added == 4 and report.failed == ()
    assert any("4 audio files skipped" in note and "clap" in note for note in report.notes)


def test_explicit_audio_model_must_load(make_engine, mixed):
    from mmsearch.errors import ModelLoadError

    engine = make_engine(audio_model="laion/clap-htsat-unfused:hub")
    with pytest.raises(ModelLoadError, match="clap-htsat-unfused"):
        engine.index([mixed])


def test_cli_audio_search_json_has_start_and_end(tmp_path, mixed):
    from typer.testing import CliRunner

    from mmsearch_cli.app import app

    runner = CliRunner()
    store = tmp_path / "clistore"
    assert runner.invoke(app, ["index", str(mixed), "--store", str(store), "--model", TINY,
                               "--audio-model", TINY]).exit_code == 0
    result = runner.invoke(app, ["search", "--audio", str(mixed / "sounds" / "long.wav"), "--kind", "audio",
                                 "--store", str(store), "--json"])
    hits = json.loads(result.stdout)
    assert hits[0]["path"].endswith("long.wav") and {"start", "end"} <= set(hits[0])
    status = json.loads(runner.invoke(app, ["status", "--store", str(store), "--json"]).stdout)
    assert status["counts"]["audio"] == 4 and status["audio_model"] == TINY


@pytest.mark.slow
def test_one_hour_file_is_indexed_with_bounded_memory(make_engine, tiny_clap, tmp_path):
    import tracemalloc

    path = tmp_path / "hour" / "podcast.wav"
    path.parent.mkdir()
    rate, block = 8000, 8000 * 60
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        rng = np.random.default_rng(0)
        for minute in range(60):
            t = np.arange(block) / rate
            out.write((0.2 * np.sin(2 * np.pi * (200 + 5 * minute) * t) + 0.01 * rng.standard_normal(block)).astype(np.float32))
    engine = make_engine(audio_model=TINY, batch_size=4)  # memory per batch stays small next to the file
    engine._clap = tiny_clap
    tracemalloc.start()
    report = engine.index([path.parent])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.failed == () and engine.status().segments["audio"] == 480
    whole_file_at_model_rate = 3600 * tiny_clap.sample_rate * 4
    assert peak < whole_file_at_model_rate / 8, f"peak {peak / 1e6:.0f} MB"
    hits = engine.search(Query(text="a voice"), kind="audio", k=1).hits
    assert 0.0 <= hits[0].start < hits[0].end <= 3600.0


@pytest.mark.corpus
def test_every_corpus_audio_file_is_indexed_or_failed_with_a_reason(corpus, make_engine, tiny_clap):
    """Every audio file of the corpus, through a whole index run: what FFmpeg (``decodes_pyav``) or
    libsndfile (``decodes``) reads is indexed (an .mp4 or .webm as a video, by its soundtrack and any
    picture), the rest is recorded as failed with a one-line reason (exceptions: ``corpus_audio``)."""
    rows = audio_rows()
    folders = sorted({corpus / row["path"].split("/")[0] for row in rows})
    engine = make_engine(audio_model=TINY)
    engine._clap = tiny_clap
    report = engine.index(folders)
    failed = {f.path: f.reason for f in report.failed}
    items = engine.store.catalog.all_items()
    wrong = []
    for row in rows:
        name, path = row["path"], str(corpus / row["path"])
        expected = (decodes_by_manifest(row) or name in DECODES_ANYWAY) and name not in REFUSED_ANYWAY
        state = items[path].state if path in items else "missing"
        if state == "failed" and (not failed[path].strip() or "\n" in failed[path]):
            wrong.append(f"{name}: reason not one line: {failed[path]!r}")
        if state != ("indexed" if expected else "failed"):
            wrong.append(f"{name}: {state} ({failed.get(path, '')}), manifest: decodes {row['decodes']}, "
                         f"decodes_pyav {row['decodes_pyav']}")
    assert not wrong, "\n".join(wrong)
