"""Finding media files (mmsearch.ingest.discovery): what `discover` yields from folders and files (each
file once, with its modality, size and mtime), what it skips (hidden names, symlinked folders, excluded
folders such as the store's own, non-media), modality from extension or content, a deterministic order,
and the path helpers `normalise_root` and `is_under`."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image, write_text

from mmsearch.errors import PathNotFoundError
from mmsearch.ingest.discovery import discover, is_under, modality_of, normalise_root
from mmsearch.records import MediaFile, Modality

PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
JPEG = b"\xff\xd8\xff\xe0" + bytes(24)
GIF = b"GIF89a" + bytes(24)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(16)
WAVE = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(16)
FLAC = b"fLaC" + bytes(28)
OGG = b"OggS" + bytes(28)
MP3 = b"ID3\x04\x00" + bytes(27)


def write_wav(path: Path, seconds: float = 0.25, rate: int = 16_000) -> Path:
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def found(roots, **kwargs) -> dict[Path, MediaFile]:
    """What discover yields, by path; fails if any path is yielded twice."""
    files = list(discover(roots, **kwargs))
    paths = [f.path for f in files]
    assert len(paths) == len(set(paths)), f"yielded twice: {sorted(p for p in paths if paths.count(p) > 1)}"
    return {f.path: f for f in files}


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "media"
    write_image(root / "a.png", seed=1)
    write_image(root / "sub" / "b.jpg", seed=2)
    write_text(root / "notes" / "c.txt", "a note about orchards")
    write_text(root / "notes" / "d.md", "# heading\nmore words")
    write_wav(root / "sounds" / "e.wav")
    write_text(root / "readme.json", '{"not": "media"}')
    return root


# -- what is yielded -----------------------------------------------------------------------------------

def test_every_media_file_is_found_once_with_its_modality_size_and_mtime(tree):
    files = found([tree])
    assert {p.relative_to(tree).as_posix(): f.modality for p, f in files.items()} == {
        "a.png": Modality.IMAGE, "sub/b.jpg": Modality.IMAGE, "notes/c.txt": Modality.TEXT,
        "notes/d.md": Modality.TEXT, "sounds/e.wav": Modality.AUDIO}
    for path, media in files.items():
        info = path.stat()
        assert path.is_absolute()
        assert (media.size, media.mtime_ns) == (info.st_size, info.st_mtime_ns)


def test_a_file_given_directly_is_found(tree):
    files = found([tree / "sub" / "b.jpg"])
    assert list(files) == [tree / "sub" / "b.jpg"]
    assert files[tree / "sub" / "b.jpg"].modality is Modality.IMAGE


def test_a_file_reached_through_two_roots_is_found_once(tree):
    both = found([tree / "notes" / "c.txt", tree, tree / "sub"])
    assert set(both) == set(found([tree]))


def test_roots_written_differently_name_the_same_files(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    relative = found(["media", tree / "sub" / ".." / "sub" / "b.jpg"])
    assert set(relative) == set(found([tree]))


def test_hidden_files_and_hidden_folders_are_skipped(tmp_path):
    write_image(tmp_path / "seen.png", seed=1)
    write_image(tmp_path / ".hidden.png", seed=2)
    write_image(tmp_path / ".cache" / "thumb.png", seed=3)
    write_text(tmp_path / "sub" / ".secret" / "note.txt", "hidden below a visible folder")
    write_text(tmp_path / "sub" / "shown.txt", "visible")
    assert set(found([tmp_path])) == {tmp_path / "seen.png", tmp_path / "sub" / "shown.txt"}


def test_symlinked_folders_are_not_followed(tmp_path):
    root = tmp_path / "root"
    write_image(root / "real" / "x.png", seed=1)
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the top
    (root / "alias").symlink_to(root / "real", target_is_directory=True)  # the same folder again
    assert set(found([root])) == {root / "real" / "x.png"}


def test_a_symlinked_file_is_found_under_its_link_name(tmp_path):
    write_image(tmp_path / "real.png", seed=1)
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    files = found([tmp_path])
    assert set(files) == {tmp_path / "real.png", tmp_path / "link.png"}
    assert files[tmp_path / "link.png"].size == (tmp_path / "real.png").stat().st_size


def test_a_dangling_symlink_with_a_media_name_is_found_with_size_minus_one(tmp_path):
    write_image(tmp_path / "ok.png", seed=1)
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "gone.unknownext").symlink_to(tmp_path / "missing.unknownext")
    (tmp_path / "gone.json").symlink_to(tmp_path / "missing.json")
    files = found([tmp_path])
    assert set(files) == {tmp_path / "ok.png", tmp_path / "gone.jpg"}
    broken = files[tmp_path / "gone.jpg"]
    assert broken.modality is Modality.IMAGE and broken.size == -1
    assert broken.mtime_ns == (tmp_path / "gone.jpg").lstat().st_mtime_ns


def test_a_symlink_loop_with_a_media_name_is_found_with_size_minus_one(tmp_path):
    (tmp_path / "self.png").symlink_to(tmp_path / "self.png")
    files = found([tmp_path])
    assert list(files) == [tmp_path / "self.png"] and files[tmp_path / "self.png"].size == -1


def test_what_is_not_a_regular_file_is_skipped_even_with_a_media_name(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block forever
    write_image(tmp_path / "ok.png", seed=1)
    assert set(found([tmp_path])) == {tmp_path / "ok.png"}


def test_an_excluded_folder_is_left_out(tmp_path):
    write_image(tmp_path / "photo.png", seed=1)
    store = tmp_path / "sub" / "my-store"
    write_bytes(store / "catalog.png", PNG)  # would be found, were the store's folder walked
    write_text(store / "inner" / "note.txt", "inside the store")
    write_text(tmp_path / "sub" / "kept.txt", "beside the store")
    assert set(found([tmp_path], exclude=[store])) == {tmp_path / "photo.png", tmp_path / "sub" / "kept.txt"}
    assert store / "inner" / "note.txt" in found([tmp_path])


def test_an_excluded_folder_given_relative_is_left_out(tmp_path, monkeypatch):
    write_image(tmp_path / "photo.png", seed=1)
    write_text(tmp_path / "store" / "note.txt", "inside the store")
    monkeypatch.chdir(tmp_path)
    assert set(found([tmp_path], exclude=[Path("store")])) == {tmp_path / "photo.png"}


def test_a_folder_whose_name_starts_like_an_excluded_one_is_still_walked(tmp_path):
    write_text(tmp_path / "store" / "note.txt", "excluded")
    write_text(tmp_path / "store2" / "note.txt", "kept")
    assert set(found([tmp_path], exclude=[tmp_path / "store"])) == {tmp_path / "store2" / "note.txt"}


def test_the_walk_order_is_sorted_and_repeatable(tmp_path):
    names = ["zeta.txt", "Alpha.txt", "beta.txt", "10.txt", "2.txt", "ümlaut.txt"]
    for name in reversed(names):
        write_text(tmp_path / name, name)
    for folder in ("b", "a", "c"):
        write_text(tmp_path / folder / "n.txt", folder)
    first = [f.path for f in discover([tmp_path])]
    here = [p.name for p in first if p.parent == tmp_path]
    assert here == sorted(names)
    assert [p.parent.name for p in first if p.parent != tmp_path] == ["a", "b", "c"]
    assert [f.path for f in discover([tmp_path])] == first


def test_roots_are_walked_in_the_order_given(tmp_path):
    write_text(tmp_path / "b" / "n.txt", "b")
    write_text(tmp_path / "a" / "n.txt", "a")
    order = [f.path.parent.name for f in discover([tmp_path / "b", tmp_path / "a"])]
    assert order == ["b", "a"]


def test_a_missing_root_raises_path_not_found(tmp_path):
    with pytest.raises(PathNotFoundError):
        list(discover([tmp_path / "nowhere"]))


# -- modality ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, modality", [
    ("x.png", Modality.IMAGE), ("x.JPG", Modality.IMAGE), ("x.JpEg", Modality.IMAGE), ("x.webp", Modality.IMAGE),
    ("x.txt", Modality.TEXT), ("x.MD", Modality.TEXT), ("x.csv", Modality.TEXT),
    ("x.wav", Modality.AUDIO), ("x.FLAC", Modality.AUDIO), ("x.mp3", Modality.AUDIO),
    ("x.m4a", Modality.AUDIO),  # not decodable, still found, so that it is listed as failed
])
def test_modality_comes_from_the_extension_whatever_its_case(tmp_path, name, modality):
    path = write_bytes(tmp_path / name, b"contents do not matter here")
    assert modality_of(path) is modality
    assert found([tmp_path])[path].modality is modality


@pytest.mark.parametrize("head, modality", [
    (PNG, Modality.IMAGE), (JPEG, Modality.IMAGE), (GIF, Modality.IMAGE), (WEBP, Modality.IMAGE),
    (WAVE, Modality.AUDIO), (FLAC, Modality.AUDIO), (OGG, Modality.AUDIO), (MP3, Modality.AUDIO),
    (b"%PDF-1.7\n", Modality.TEXT), (b"RIFF\x24\x00\x00\x00AVI LIST" + bytes(16), Modality.VIDEO),
])
@pytest.mark.parametrize("name", ["download", "photo.unknownext", "IMG_0001.bak"])
def test_modality_of_an_unknown_extension_comes_from_the_content(tmp_path, head, modality, name):
    path = write_bytes(tmp_path / name, head)
    assert modality_of(path) is modality
    files = found([tmp_path])
    assert list(files) == [path] and files[path].modality is modality


def test_a_real_image_and_a_real_wav_without_extensions_are_recognised(tmp_path):
    image = tmp_path / "image"
    write_image(tmp_path / "tmp.png", seed=1).rename(image)
    sound = tmp_path / "sound"
    write_wav(tmp_path / "tmp.wav").rename(sound)
    assert {p: f.modality for p, f in found([tmp_path]).items()} == {image: Modality.IMAGE, sound: Modality.AUDIO}


@pytest.mark.parametrize("head", [b"", b"plain text, no magic", b"%PDF", bytes(64)])
def test_an_unknown_extension_with_unknown_content_is_not_media(tmp_path, head):
    path = write_bytes(tmp_path / "thing.unknownext", head)
    assert modality_of(path) is None
    assert found([tmp_path]) == {}


@pytest.mark.parametrize("name", ["clip.avi", "clip"])
def test_a_riff_video_is_a_video_not_audio(tmp_path, name):
    path = write_bytes(tmp_path / name, b"RIFF\x24\x00\x00\x00AVI LIST" + bytes(16))
    assert modality_of(path) is Modality.VIDEO
    assert found([tmp_path])[path].modality is Modality.VIDEO


@pytest.mark.parametrize("name, modality", [("paper.pdf", Modality.TEXT), ("page.html", Modality.TEXT),
                                            ("book.epub", Modality.TEXT), ("letter.docx", Modality.TEXT),
                                            ("holiday.mp4", Modality.VIDEO), ("clip.MKV", Modality.VIDEO),
                                            ("memo.m4a", Modality.AUDIO), ("IMG_1.HEIC", Modality.IMAGE)])
def test_documents_videos_and_phone_formats_are_found_by_their_extension(tmp_path, name, modality):
    path = write_bytes(tmp_path / name, b"contents do not matter here")
    assert modality_of(path) is modality


@pytest.mark.parametrize("name", ["data.json", "notes.xml", "script.py", "weights.npy", "archive.zip",
                                  "catalog.sqlite", "CONFIG.JSON"])
def test_known_non_media_extensions_are_never_sniffed(tmp_path, name):
    path = write_bytes(tmp_path / name, PNG)
    assert modality_of(path) is None
    assert found([tmp_path]) == {}


def test_modality_of_an_unreadable_unknown_file_is_none(tmp_path):
    assert modality_of(tmp_path / "missing.unknownext") is None
    assert modality_of(tmp_path / "missing.jpg") is Modality.IMAGE  # the name alone decides


# -- path helpers --------------------------------------------------------------------------------------

def test_normalise_root_raises_path_not_found_for_a_missing_path(tmp_path):
    with pytest.raises(PathNotFoundError) as raised:
        normalise_root(tmp_path / "missing")
    assert raised.value.path == tmp_path / "missing"


def test_normalise_root_accepts_a_dangling_symlink(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    assert normalise_root(tmp_path / "link") == tmp_path / "link"  # the link itself, not its target


def test_normalise_root_makes_a_relative_path_absolute_against_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "photos" / "2021").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "photos")
    assert normalise_root("2021") == tmp_path / "photos" / "2021"
    assert normalise_root(Path("2021") / ".." / "2021") == tmp_path / "photos" / "2021"
    assert normalise_root(".") == tmp_path / "photos"
    assert normalise_root(str(tmp_path / "photos")) == tmp_path / "photos"
    assert normalise_root("2021").is_absolute()


def test_normalise_root_does_not_resolve_symlinks(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert normalise_root(tmp_path / "alias") == tmp_path / "alias"


def test_is_under_a_root_itself_and_anything_below_it():
    roots = {"/a/photos", "/b"}
    assert is_under("/a/photos", roots)
    assert is_under("/a/photos/x.jpg", roots)
    assert is_under("/a/photos/2021/deep/x.jpg", roots)
    assert is_under("/b/c", roots)


def test_is_under_not_a_sibling_whose_name_merely_starts_with_the_roots():
    roots = {"/a/photos"}
    assert not is_under("/a/photos2", roots)
    assert not is_under("/a/photos2/x.jpg", roots)
    assert not is_under("/a/photo", roots)
    assert not is_under("/a", roots)
    assert not is_under("/", roots)


def test_is_under_no_roots_is_false_and_the_filesystem_root_holds_everything():
    assert not is_under("/a/b", set())
    assert is_under("/a/b", {"/"})
