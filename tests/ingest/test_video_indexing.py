"""Videos and documents through a whole index run and search: a video's sampled frames go into the image
index at their time and its soundtrack into the audio index; image, text and sound queries reach video
moments; a hit names the file and the moment (or a passage's page); ``kind`` keeps photos, sounds and
videos apart; copies reuse both tracks' vectors; broken videos fail with a reason.

Videos are written at test time (``media_makers.write_test_video``): solid colours that change at known
times, with a 440 Hz tone. The models are the tiny random-weight ones, so a query finds its own pixels
(cosine 1 for the same picture), not meanings."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import write_image, write_text
from media_makers import text_pdf, write_test_video

from mmsearch.errors import UsageError
from mmsearch.records import Modality
from mmsearch.search.queries import Query

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)
SCHEDULE = ((0.0, RED), (4.0, BLUE), (7.0, GREEN))
"""12 s: red until 4 s, blue until 7 s, then green."""


@pytest.fixture
def video_engine(make_engine, monkeypatch):
    from mmsearch.encoders.clap import load_audio_encoder
    from mmsearch.engine import Engine

    clap = load_audio_encoder("test-tiny:random")
    monkeypatch.setattr(Engine, "_ensure_bridge", lambda self: None)  # the audio bridge is not tested here

    def make(**settings):
        engine = make_engine(audio_model="test-tiny:random", **settings)
        engine._clap = clap
        return engine
    return make


def _solid(path, colour, size=(64, 48)):
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    write_test_video(root / "walk.mp4", seconds=12, colours=SCHEDULE)
    for seed in range(3):
        write_image(root / f"photo{seed}.png", seed=seed)
    return root


def test_a_video_is_indexed_as_frames_at_their_time_and_soundtrack_windows(video_engine, library):
    engine = video_engine()
    report = engine.index([library])
    assert report.failed == () and report.added == 4
    status = engine.status()
    assert status.counts["video"] == 1 and status.counts["image"] == 3
    rows = engine.store.catalog.all_items()
    video = rows[str(library / "walk.mp4")]
    assert video.modality == Modality.VIDEO and video.state == "indexed"
    with engine.store.catalog.snapshot() as read:
        by_index = read.item_segment_ids([video.id])
    frames = engine.store.catalog.segment_rows(by_index[Modality.IMAGE])
    times = sorted(row.start for row in frames.values())
    assert times[0] == 0.0 and any(3.9 <= t <= 4.6 for t in times) and any(6.9 <= t <= 7.6 for t in times)
    assert all(row.start == row.end and row.file_modality == Modality.VIDEO for row in frames.values())
    windows = engine.store.catalog.segment_rows(by_index[Modality.AUDIO])
    assert min(row.start for row in windows.values()) == 0.0
    assert max(row.end for row in windows.values()) == pytest.approx(12.0, abs=0.1)
    assert status.segments["image"] == 3 + len(frames) and status.segments["audio"] == len(windows)


def test_an_image_query_finds_the_video_moment_that_shows_it(video_engine, library, tmp_path):
    engine = video_engine()
    engine.index([library])
    query = _solid(tmp_path / "blue.png", BLUE)
    hits = engine.search(Query(image=str(query)), kind="video", k=3).hits
    assert len(hits) == 1
    hit = hits[0]
    assert hit.path == str(library / "walk.mp4") and hit.modality == Modality.VIDEO and hit.track == Modality.IMAGE
    assert 3.9 <= hit.start < 7.0 and hit.score > 0.99  # a blue frame: the same pixels as the query
    data = hit.as_json()
    assert data["modality"] == "video" and data["track"] == "image" and data["start"] == hit.start


def test_kinds_keep_photos_and_videos_apart(video_engine, library, tmp_path):
    engine = video_engine()
    engine.index([library])
    query = Query(image=str(_solid(tmp_path / "green.png", GREEN)))
    photos = engine.search(query, kind="image", k=10).hits
    assert {h.modality for h in photos} == {Modality.IMAGE} and len(photos) == 3
    everything = engine.search(query, kind="all", k=10).hits
    paths = [h.path for h in everything]
    assert len(paths) == len(set(paths)) and str(library / "walk.mp4") in paths  # once, by its best track
    with pytest.raises(UsageError, match="this store holds no audio files"):  # a soundtrack is not a sound file
        engine.search(Query(text="a tone"), kind="audio", k=5)


def test_a_sound_query_reaches_the_soundtrack(video_engine, library, tmp_path):
    import soundfile

    engine = video_engine()
    write_test_video(library / "quiet.mkv", seconds=6, colours=((0.0, RED),), audio=False)
    engine.index([library])
    rate = 16000
    t = np.arange(4 * rate) / rate
    soundfile.write(tmp_path / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    hits = engine.search(Query(audio=str(tmp_path / "tone.wav")), kind="video", k=5).hits
    assert [h.path for h in hits] == [str(library / "walk.mp4")]  # the silent film has no soundtrack
    assert hits[0].track == Modality.AUDIO and hits[0].start is not None and hits[0].end > hits[0].start


def test_a_copied_video_reuses_both_tracks_and_a_broken_one_fails_with_a_reason(video_engine, library):
    engine = video_engine()
    engine.index([library])
    shutil.copy(library / "walk.mp4", library / "walk-copy.mp4")
    data = (library / "walk.mp4").read_bytes()
    (library / "cut.mp4").write_bytes(data[: len(data) // 3])
    (library / "noise.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    report = engine.index([library])
    assert report.segments_embedded == 0 and report.segments_reused > 0  # the copy: both tracks' stored vectors
    rows = engine.store.catalog.all_items()
    assert rows[str(library / "walk-copy.mp4")].state == "indexed"
    for broken in ("cut.mp4", "noise.mp4"):  # cut short: not indexed from the part that decoded
        row = rows[str(library / broken)]
        assert row.state == "failed" and row.error and "\n" not in row.error, (broken, row.error)
    with engine.store.catalog.snapshot() as read:
        original = read.item_segment_ids([rows[str(library / "walk.mp4")].id])
        copied = read.item_segment_ids([rows[str(library / "walk-copy.mp4")].id])
    assert {m: len(ids) for m, ids in original.items()} == {m: len(ids) for m, ids in copied.items()}
    from mmsearch.store.verify import verify_store

    assert verify_store(engine.store).ok


def test_a_pdf_hit_names_its_page(make_engine, tmp_path, capsys):
    from mmsearch_cli.output import print_hits

    root = tmp_path / "papers"
    root.mkdir()
    pages = ["orchards and apples in the autumn valley " * 3, "copper wires and electric motors " * 3,
             "whales singing in the deep cold ocean " * 3]
    (root / "paper.pdf").write_bytes(text_pdf(pages))
    write_text(root / "note.txt", "a plain note about lanterns")
    engine = make_engine()
    report = engine.index([root])
    assert report.failed == ()
    hits = engine.search(Query(text=pages[1]), kind="text", k=5).hits
    top = hits[0]
    assert top.path == str(root / "paper.pdf") and top.page == 2 and top.passage.startswith("copper")
    assert json.loads(json.dumps(top.as_json()))["page"] == 2
    print_hits(hits[:1])
    assert "[page 2]" in capsys.readouterr().out


def test_more_like_a_video_searches_with_its_frames(video_engine, library, tmp_path):
    engine = video_engine()
    write_test_video(library / "sunset.mp4", seconds=6, colours=((0.0, BLUE),), audio=False)
    engine.index([library])
    rows = engine.store.catalog.all_items()
    walk = rows[str(library / "walk.mp4")].id
    hits = engine.search(Query(like=walk), kind="video", k=5).hits
    assert [h.path for h in hits] == [str(library / "sunset.mp4")]  # itself left out
    assert hits[0].track == Modality.IMAGE  # reached through the frames (the walk has sound, the sunset none)
