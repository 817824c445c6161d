"""Bad queries through the CLI: one clear line on stderr, exit status 2, no traceback, nothing written."""
from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from conftest import TINY, write_image, write_text
from reliability_helpers import catalog_rows

from mmsearch_cli.app import app


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from mmsearch.config import Settings
    from mmsearch.encoders.clip import load_clip
    from mmsearch.engine import Engine

    root = tmp_path_factory.mktemp("hostile-queries")
    media = root / "media"
    for i in range(3):
        write_image(media / f"photo{i}.png", seed=i)
    write_text(media / "note.txt", "a lighthouse keeper and his cat")
    store = root / "store"
    with Engine.open(Settings.resolve(store=store, model=TINY, audio_model="none"), create=True,
                     clip=load_clip(TINY)) as engine:
        engine.index([media])
    (root / "zero.png").write_bytes(b"")
    return root, store


@pytest.fixture
def cli(monkeypatch, tiny_clip):
    import mmsearch.encoders.clip as clip_module

    monkeypatch.setattr(clip_module, "load_clip", lambda *a, **k: tiny_clip)
    return CliRunner()


def _listing(store):
    return sorted(p.name for p in store.iterdir() if not p.name.endswith(("-wal", "-shm")))


CASES = {
    "empty text": ["search", ""],
    "blank text": ["search", "   \n\t"],
    "no query at all": ["search"],
    "k zero": ["search", "cat", "-k", "0"],
    "k negative": ["search", "cat", "-k", "-3"],
    "k beyond the store": ["search", "cat", "-k", "1000"],
    "unclosed glob": ["search", "cat", "--path", "*[abc"],
    "stray bracket glob": ["search", "cat", "--path", "a]b"],
    "empty glob": ["search", "cat", "--path", ""],
    "text file as --image": ["search", "--image", "{root}/media/note.txt"],
    "empty file as --image": ["search", "--image", "{root}/zero.png"],
    "missing --image": ["search", "--image", "{root}/nothing-here.png"],
    "unknown kind": ["search", "cat", "--kind", "video"],
    "kind the store lacks": ["search", "cat", "--kind", "audio"],
    "other model": ["search", "cat", "--model", "ViT-B-32:random"],
    "remove what is not there": ["remove", "{root}/elsewhere"],
    "index a missing folder": ["index", "{root}/no-such-folder", "--model", TINY],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_query_is_one_line_exit_2_and_writes_nothing(case, built, cli):
    root, store = built
    before, files_before = catalog_rows(store), _listing(store)
    args = [a.format(root=root) for a in CASES[case]] + ["--store", str(store)]
    result = cli.invoke(app, args)
    assert result.exit_code == 2, (case, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmsearch: error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert catalog_rows(store) == before and _listing(store) == files_before


def test_missing_store_is_refused_without_creating_it(built, cli, tmp_path):
    for command in (["search", "cat"], ["status"], ["verify"], ["rebuild"], ["remove", "x"]):
        missing = tmp_path / "no-store"
        result = cli.invoke(app, [*command, "--store", str(missing)])
        assert result.exit_code == 2 and "no mmsearch store here" in result.stderr, (command, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert not missing.exists()


def test_text_beyond_the_context_is_truncated_and_said_so(built, cli):
    root, store = built
    before = catalog_rows(store)
    result = cli.invoke(app, ["search", " ".join(["lighthouse"] * 500), "--store", str(store)])
    assert result.exit_code == 0, result.stderr
    assert "truncated" in result.stderr and "Traceback" not in result.stderr
    assert catalog_rows(store) == before


def test_search_opens_the_store_read_only(built, cli):
    """A search creates no file but SQLite's -wal/-shm companions, and changes no row."""
    root, store = built
    before = catalog_rows(store)
    files_before = _listing(store)
    mtimes = {name: os.stat(store / name).st_mtime_ns for name in files_before}
    result = cli.invoke(app, ["search", "cat", "--store", str(store)])
    assert result.exit_code == 0, result.stderr
    assert _listing(store) == files_before and catalog_rows(store) == before
    assert {name: os.stat(store / name).st_mtime_ns for name in files_before if name != "catalog.sqlite"} == \
        {name: t for name, t in mtimes.items() if name != "catalog.sqlite"}
