"""The command line contract: --json shapes, exit statuses, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import TINY, fails_fast

from mmsearch_cli.app import app

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def store(tmp_path, media):
    store = tmp_path / "store"
    result = cli("index", media, "--store", store, "--model", TINY, "--json")
    assert result.exit_code == 0, result.output
    return store


def test_index_json(tmp_path, media):
    result = cli("index", media, "--store", tmp_path / "s", "--model", TINY, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert {"added", "updated", "removed", "unchanged", "failed", "seconds"} <= set(report)
    assert report["added"] == 10 and report["failed"] == []


def test_index_json_lists_failures(tmp_path, media):
    (media / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    report = json.loads(cli("index", media, "--store", tmp_path / "s", "--model", TINY, "--json").stdout)
    assert report["failed"][0]["path"].endswith("bad.png") and report["failed"][0]["reason"]


def test_search_json(store, media):
    result = cli("search", "river meadow", "--store", store, "--json", "-k", "5")
    assert result.exit_code == 0
    hits = json.loads(result.stdout)
    assert len(hits) == 5
    for hit in hits:
        assert {"path", "modality", "score"} <= set(hit)
        if hit["modality"] == "text":
            assert hit["passage"]
    image_hits = json.loads(cli("search", "--image", media / "photo0.png", "--kind", "image", "--store", store,
                                "--json").stdout)
    assert image_hits[0]["path"] == str(media / "photo0.png") and image_hits[0]["score"] == pytest.approx(1, abs=1e-4)


def test_search_like_an_indexed_file(store, media):
    """--like ID: the file's stored vectors are the query, and the file itself is left out."""
    by_image = json.loads(cli("search", "--image", media / "photo3.png", "--kind", "image", "-k", "4", "--store", store,
                              "--json").stdout)
    assert by_image[0]["path"] == str(media / "photo3.png")
    liked = json.loads(cli("search", "--like", by_image[0]["id"], "--kind", "image", "-k", "3", "--store", store,
                           "--json").stdout)
    assert [h["id"] for h in liked] == [h["id"] for h in by_image[1:]]
    missing = cli("search", "--like", "987654", "--store", store)
    assert missing.exit_code == 2 and "item 987654: no such item in this store" in missing.stderr


def test_composed_queries_from_the_command_line(store, media):
    """The README's composed-query examples, with test-tiny."""
    base = ["--store", store, "--json"]
    photo = json.loads(cli("search", "--image", media / "photo0.png", "--kind", "image", "-k", "1", *base).stdout)[0]
    hits = json.loads(cli("search", "harbour", "--text", "river:2", "--image", f"{media / 'photo1.png'}:0.5",
                          "--like", f"{photo['id']}:-1", "--fusion", "rrf", "-k", "4", *base).stdout)
    assert len(hits) == 4 and all(len(h["parts"]) == 4 for h in hits)  # harbour, river, photo1, like photo0
    assert photo["id"] not in [h["id"] for h in hits]
    early = json.loads(cli("search", "--text", "river", "--like", str(media / "photo2.png"), "--kind", "image",
                           "-k", "3", *base).stdout)
    assert [len(h["parts"]) for h in early] == [2, 2, 2] and all(h["parts"][1] is not None for h in early)
    cut = json.loads(cli("search", "river", "--kind", "image", "--cutoff", "auto", *base).stdout)
    assert set(cut) == {"hits", "cut", "more"} and len(cut["hits"]) + cut["cut"] == 6
    first, second = (json.loads(cli("search", "river", "-k", "3", "--offset", str(o), *base).stdout) for o in (0, 3))
    whole = json.loads(cli("search", "river", "-k", "6", *base).stdout)
    assert [h["id"] for h in first + second] == [h["id"] for h in whole]
    recent = json.loads(cli("search", "river", "--modified-after", "2000-01-01", "--modified-before", "2999-01-01",
                            "-k", "3", *base).stdout)
    assert len(recent) == 3
    assert json.loads(cli("search", "river", "--modified-before", "2000-01-01", *base).stdout) == []
    bad = cli("search", "--text", "river:inf", "--store", store)
    assert bad.exit_code == 2 and "the weight must be a finite number" in bad.stderr


def test_search_text_output(store):
    result = cli("search", "river", "--store", store, "--kind", "text", "-k", "2")
    assert result.exit_code == 0 and len([l for l in result.stdout.splitlines() if l.strip()]) == 4


def test_status_json(store):
    status = json.loads(cli("status", "--store", store, "--json").stdout)
    assert {"counts", "failed", "model", "dim", "index", "bytes"} <= set(status)
    assert status["counts"] == {"image": 6, "text": 4, "audio": 0, "video": 0}
    assert status["model"] == TINY and status["dim"] == 64 and status["bytes"] > 0
    assert status["semantic"] is False and set(status["index"]) == {"image", "text"}
    assert "no semantic meaning" in cli("status", "--store", store).stdout


def test_remove(store, media):
    result = cli("remove", media / "notes", "--store", store, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"removed": 4}
    assert json.loads(cli("status", "--store", store, "--json").stdout)["counts"]["text"] == 0


@pytest.mark.parametrize("args, message", [
    (["index", "/no/such/folder", "--model", TINY], "/no/such/folder: no such file or directory"),
    (["search", "x", "--store", "{tmp}/nowhere"], "no mmsearch store here (run `mmsearch index PATH --store "),
    (["status", "--store", "{tmp}/nowhere"], "no mmsearch store here"),
    (["search", "--image", "/no/such.jpg", "--store", "{store}"], "/no/such.jpg: no such file or directory"),
    (["index", "{media}", "--store", "{store}", "--model", "ViT-B-32:random"], "test-tiny:random"),
    (["search", "x", "-k", "0", "--store", "{store}"], ": -k must be at least 1, not 0"),
    (["search", "x", "--kind", "movie", "--store", "{store}"], "--kind must be one of all, image, text, audio, video"),
    (["search", "x", "--kind", "video", "--store", "{store}"], "this store holds no video files"),
    (["search", "x", "--path", "photos/[abc", "--store", "{store}"], "--path 'photos/[abc': unclosed '['"),
    (["index", "{media}", "--store", "{tmp}/s3", "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    (["index", "{media}", "--store", "{store}", "--model", "ViT-B-32:random"],
     "use --model test-tiny:random or another --store"),
    (["remove", "/not/indexed", "--store", "{store}"], "not in this store"),
    (["index", "{media}", "--store", "{tmp}/s2", "--model", "ViT-B-32:laion2b_s34b_b79k"], "cannot load model"),
])
def test_errors_are_one_line_with_status_2(tmp_path, store, media, args, message):
    args = [a.format(tmp=tmp_path, store=store, media=media) for a in args]
    result = cli(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_model_mismatch_names_both_models(store, media):
    result = cli("index", media, "--store", store, "--model", "ViT-B-32:random")
    assert "test-tiny:random" in result.stderr and "ViT-B-32:random" in result.stderr


def test_unreadable_query_image(store, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    result = cli("search", "--image", fake, "--store", store)
    assert result.exit_code == 2 and "fake.png" in result.stderr


def test_offline_model_failure_is_fast_and_clear(tmp_path, media, connections):
    result = cli("index", media, "--store", tmp_path / "s", "--model", "ViT-B-32:laion2b_s34b_b79k")
    assert fails_fast(connections) and len(connections) == 1  # one reachability probe, then the error
    assert result.exit_code == 2
    assert "ViT-B-32:laion2b_s34b_b79k" in result.stderr and "--model ViT-B-32:/path/to" in result.stderr


def test_store_from_environment(tmp_path, media, monkeypatch):
    monkeypatch.setenv("MMSEARCH_STORE", str(tmp_path / "envstore"))
    assert cli("index", media, "--model", TINY, "--json").exit_code == 0
    assert (tmp_path / "envstore" / "catalog.sqlite").is_file()


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mmsearch", "status", "--store", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no mmsearch store here" in result.stderr


def test_every_command_is_documented_in_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"mmsearch {name}" in readme, f"README lacks a reference for `mmsearch {name}`"
        for sub in getattr(command, "commands", {}):
            assert f"mmsearch {name} {sub}" in readme, f"README lacks `mmsearch {name} {sub}`"


def test_usage_mistakes_are_one_line_with_status_2():
    result = subprocess.run([sys.executable, "-m", "mmsearch", "search", "x", "-k", "abc"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'-k'" in lines[0] and "Traceback" not in result.stderr
