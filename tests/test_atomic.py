"""Atomic file replacement (``mmsearch.atomic``): a save either lands whole or leaves the old file as it
was, its temporary file lives beside the target (so the rename stays on one filesystem) and never
outlives a save that finished or failed, the folder is created when missing, and ``leftover_temp_files``
finds exactly what an interrupted save leaves behind."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmsearch.atomic import atomic_path, fsync_dir, leftover_temp_files

ROOT = Path(__file__).resolve().parents[1]


def test_a_finished_save_puts_the_new_bytes_in_place_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "index.faiss"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.faiss"]


def test_a_finished_save_replaces_an_existing_file(tmp_path):
    target = tmp_path / "index.faiss"
    target.write_bytes(b"old contents")
    with atomic_path(str(target)) as tmp:  # a str is accepted as well as a Path
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.faiss"]


def test_a_failed_save_keeps_the_old_bytes_removes_its_temp_file_and_raises(tmp_path):
    target = tmp_path / "index.faiss"
    target.write_bytes(b"old contents")
    boom = RuntimeError("disk full")
    with pytest.raises(RuntimeError) as raised, atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise boom
    assert raised.value is boom
    assert target.read_bytes() == b"old contents"
    assert not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.faiss"]


def test_a_failed_first_save_leaves_no_target_and_no_temp_file(tmp_path):
    target = tmp_path / "index.faiss"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_folders_are_created(tmp_path):
    target = tmp_path / "store" / "indexes" / "image.faiss"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"vectors")
    assert target.read_bytes() == b"vectors"
    assert leftover_temp_files(target.parent) == []


def test_the_temp_file_is_created_beside_the_target(tmp_path):
    target = tmp_path / "sub" / "map.npz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".map.npz.") and tmp.name.endswith(".tmp")
        assert tmp.is_file()  # created up front, so the name is reserved
        assert os.stat(tmp).st_dev == os.stat(target.parent).st_dev
        assert leftover_temp_files(target.parent) == [tmp]  # what a crash right now would leave
        tmp.write_bytes(b"x")


def test_concurrent_saves_of_one_target_use_distinct_temp_files(tmp_path):
    target = tmp_path / "index.faiss"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    assert target.read_bytes() == b"first"  # the outer save finished last
    assert leftover_temp_files(tmp_path) == []


def test_leftover_temp_files_finds_what_an_interrupted_save_leaves(tmp_path):
    target = tmp_path / "index.faiss"
    target.write_bytes(b"old contents")
    script = textwrap.dedent(f"""
        import os
        from mmsearch.atomic import atomic_path

        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"new contents")
            os._exit(3)  # the process dies mid-save: no cleanup runs
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          check=False)
    assert done.returncode == 3, done.stderr
    assert target.read_bytes() == b"old contents"
    leftovers = leftover_temp_files(tmp_path)
    assert len(leftovers) == 1
    assert leftovers[0].name.startswith(".index.faiss.") and leftovers[0].name.endswith(".tmp")
    assert leftovers[0].read_bytes() == b"new contents"


def test_leftover_temp_files_lists_only_hidden_tmp_files_sorted(tmp_path):
    wanted = [tmp_path / ".index.faiss.a1b2c3.tmp", tmp_path / ".catalog.json.zz9.tmp"]
    others = ["index.faiss", ".hidden", ".config.json", "visible.tmp", "notes.tmp.txt", ".tmp.keep"]
    for path in wanted:
        path.write_bytes(b"partial")
    for name in others:
        (tmp_path / name).write_bytes(b"kept")
    assert leftover_temp_files(tmp_path) == sorted(wanted)


def test_leftover_temp_files_is_empty_for_a_missing_folder_or_a_file(tmp_path):
    assert leftover_temp_files(tmp_path / "absent") == []
    (tmp_path / "plain").write_bytes(b"not a folder")
    assert leftover_temp_files(tmp_path / "plain") == []
    assert leftover_temp_files(tmp_path) == []


def test_fsync_dir_accepts_a_folder_and_ignores_a_missing_one(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "absent")  # best effort: no error


def test_a_saved_file_keeps_the_targets_permissions_and_a_new_one_gets_the_usual_ones(tmp_path):
    import os

    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"old")
    shared.chmod(0o640)
    with atomic_path(shared) as tmp:
        tmp.write_bytes(b"new")
    assert shared.stat().st_mode & 0o777 == 0o640
    mask = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "fresh.bin") as tmp:
            tmp.write_bytes(b"new")
    finally:
        os.umask(mask)
    assert (tmp_path / "fresh.bin").stat().st_mode & 0o777 == 0o640  # 0666 less the umask, not mkstemp's 0600


def test_a_folder_named_like_a_temp_file_is_not_a_leftover(tmp_path):
    (tmp_path / ".index.faiss.x1.tmp").mkdir()
    assert leftover_temp_files(tmp_path) == []
