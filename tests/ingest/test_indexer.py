"""Indexing runs: what gets embedded, what is reused, what is removed, and what is reported."""
from __future__ import annotations

import os
import shutil

from conftest import sentence, write_image, write_text

from mmsearch.search.queries import Query


def test_first_run_indexes_every_file(make_engine, media):
    engine = make_engine()
    report = engine.index([media])
    assert (report.added, report.updated, report.removed, report.failed) == (10, 0, 0, ())
    status = engine.status()
    assert status.counts == {"image": 6, "text": 4, "audio": 0, "video": 0}
    assert status.segments["image"] == 6
    from mmsearch.records import Modality

    for modality in (Modality.IMAGE, Modality.TEXT):  # each vector in its index exactly once
        ids = engine.store.index(modality).ids()
        assert len(ids) == len(set(ids.tolist())) == status.segments[modality.value]


def test_rerun_embeds_nothing(make_engine, media):
    engine = make_engine()
    engine.index([media])
    again = engine.index([media])
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 10)
    assert again.segments_embedded == 0


def test_edited_file_is_reembedded_and_found_by_its_new_content(make_engine, media):
    engine = make_engine()
    engine.index([media])
    note = media / "notes" / "note0.txt"
    new_text = "completely different words about a lighthouse keeper and his cat"
    note.write_text(new_text)
    os.utime(note, ns=(note.stat().st_atime_ns, note.stat().st_mtime_ns + 1_000_000_000))
    report = engine.index([media])
    assert (report.updated, report.added, report.unchanged) == (1, 0, 9)
    assert report.segments_embedded == 1
    hits = engine.search(Query(text=new_text), kind="text", k=1).hits
    assert hits[0].path == str(note) and hits[0].passage == new_text


def test_touched_but_identical_file_is_not_reembedded(make_engine, media):
    engine = make_engine()
    engine.index([media])
    photo = media / "photo1.png"
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 5_000_000_000))
    report = engine.index([media])
    assert report.segments_embedded == 0 and report.unchanged == 10


def test_deleted_file_disappears_from_store_and_results(make_engine, media):
    engine = make_engine()
    engine.index([media])
    (media / "photo2.png").unlink()
    report = engine.index([media])
    assert report.removed == 1
    paths = {hit.path for hit in engine.search(Query(text="anything"), kind="image", k=10).hits}
    assert str(media / "photo2.png") not in paths and len(paths) == 5
    assert engine.status().counts["image"] == 5


def test_renamed_file_reuses_its_vector(make_engine, media):
    engine = make_engine()
    engine.index([media])
    old, new = media / "photo3.png", media / "renamed" / "holiday.png"
    new.parent.mkdir()
    shutil.move(old, new)
    report = engine.index([media])
    assert (report.renamed, report.segments_embedded, report.removed, report.added) == (1, 0, 0, 0)
    hit = engine.search(Query(image=new), kind="image", k=1).hits[0]
    assert hit.path == str(new) and hit.score > 0.999


def test_copied_file_reuses_vectors_of_identical_content(make_engine, media):
    engine = make_engine()
    engine.index([media])
    shutil.copy(media / "notes" / "note1.txt", media / "notes" / "copy.txt")
    report = engine.index([media])
    assert report.added == 1 and report.segments_embedded == 0 and report.segments_reused == 1


def test_run_on_one_folder_leaves_other_folders_alone(make_engine, tmp_path, media):
    other = tmp_path / "other"
    write_image(other / "x.png", seed=7)
    engine = make_engine()
    engine.index([media])
    engine.index([other])
    assert engine.status().counts["image"] == 7


def test_undecodable_file_is_recorded_and_does_not_abort(make_engine, media):
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (media / "empty.png").write_bytes(b"")
    (media / "binary.txt").write_bytes(b"\x00\x01\x02\x03binary")
    engine = make_engine()
    report = engine.index([media])
    assert report.added == 10
    failed = {os.path.basename(f.path): f.reason for f in report.failed}
    assert set(failed) == {"broken.jpg", "empty.png", "binary.txt"}
    assert all(reason for reason in failed.values())
    assert "binary" in failed["binary.txt"]
    assert {os.path.basename(f.path) for f in engine.status().failed} == set(failed)
    # an unchanged failed file is not retried; once fixed it is indexed
    assert engine.index([media]).failed == ()
    write_image(media / "broken.jpg", seed=42)
    fixed = engine.index([media])
    assert fixed.updated == 1 and fixed.failed == ()
    assert "broken.jpg" not in {os.path.basename(f.path) for f in engine.status().failed}


def test_long_text_is_split_into_overlapping_passages_and_hits_group_per_file(make_engine, tmp_path):
    root = tmp_path / "docs"
    long_text = " ".join(sentence(i, 20) for i in range(30))  # 600 words
    write_text(root / "long.md", long_text)
    write_text(root / "short.txt", sentence(999))
    engine = make_engine()
    engine.index([root])
    status = engine.status()
    assert status.counts["text"] == 2 and status.segments["text"] > 10
    hits = engine.search(Query(text=sentence(3, 20)), kind="text", k=5).hits
    assert len(hits) == 2 and len({h.path for h in hits}) == 2


def test_hidden_files_and_the_store_itself_are_skipped(make_engine, media):
    write_image(media / ".hidden" / "secret.png", seed=5)
    write_text(media / ".dotfile.txt", "hidden")
    engine = make_engine(store=media / "store-inside")
    assert engine.index([media]).added == 10
    assert engine.index([media]).added == 0


def test_broken_and_looping_symlinks_are_listed_as_failed(make_engine, media):
    (media / "dangling.jpg").symlink_to(media / "nowhere.jpg")
    (media / "loop.png").symlink_to(media / "loop.png")
    (media / "linkdir").symlink_to(media, target_is_directory=True)  # not followed: no loop, no duplicates
    engine = make_engine()
    report = engine.index([media])
    reasons = {os.path.basename(f.path): f.reason for f in report.failed}
    assert report.added == 10
    assert "No such file" in reasons["dangling.jpg"] and "symbolic links" in reasons["loop.png"]
    assert engine.index([media]).failed == ()  # recorded once; retried only when the link changes
    (media / "nowhere.jpg").write_bytes((media / "photo0.png").read_bytes())
    assert engine.index([media]).failed == ()
    assert "dangling.jpg" not in {os.path.basename(f.path) for f in engine.status().failed}


def test_a_run_that_grows_the_collection_re_chooses_the_index_in_the_background(make_engine, tmp_path, monkeypatch):
    from mmsearch.index import selection
    from mmsearch.records import Modality
    from mmsearch.store import reselect

    monkeypatch.setattr(selection, "FLAT_MAX", 2)  # a handful of files counts as a large collection
    monkeypatch.setattr(reselect, "_machine", lambda: {"faiss_gpus": 0, "torch_cuda": False})
    root = tmp_path / "many"
    for i in range(12):
        write_image(root / f"img{i:02d}.png", seed=i)
    engine = make_engine(batch_size=1, workers=1)
    report = engine.index([root])
    assert report.added == 12 and report.failed == ()
    assert any("re-chosen in the background" in note for note in report.notes), report.notes
    index = engine.store.index(Modality.IMAGE)
    assert index.kind == "hnsw" and len(index) == 12
    assert engine.store.index_choice(Modality.IMAGE).kind == "hnsw"
    hits = engine.search(Query(image=root / "img05.png"), kind="image", k=3).hits
    assert hits[0].path == str(root / "img05.png")
