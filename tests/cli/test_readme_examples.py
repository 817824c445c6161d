"""The composed-query examples in README.md run as written (with test-tiny), from a folder holding the
files they name, against a store of 100-odd files (so that the item ids they use exist)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from conftest import TINY, sentence, write_image, write_text

from mmsearch_cli.app import app

README = Path(__file__).resolve().parents[2] / "README.md"


def composed_examples(heading: str = "## Composed queries") -> list[list[str]]:
    section = README.read_text(encoding="utf-8").split(heading, 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    return [shlex.split(line) for line in lines]


def test_the_readme_composed_query_examples_run_as_written(tmp_path, monkeypatch):
    examples = composed_examples()
    assert len(examples) >= 6 and all(argv[:2] == ["mmsearch", "search"] for argv in examples)
    media = tmp_path / "media"
    for i in range(100):
        write_image(media / "photos" / f"p{i:03d}.png", seed=i)
    for i in range(4):
        write_text(media / "notes" / f"n{i}.txt", sentence(i))
    rate = 16000
    t = np.arange(3 * rate) / rate
    sf.write(tmp_path / "clip.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    write_image(tmp_path / "reference.jpg", seed=1000)
    write_image(tmp_path / "street.jpg", seed=1001)
    store = tmp_path / "store"
    runner = CliRunner()
    indexed = runner.invoke(app, ["index", str(media), str(tmp_path / "clip.wav"), "--store", str(store),
                                  "--model", TINY, "--audio-model", TINY, "--json"], catch_exceptions=False)
    assert indexed.exit_code == 0, indexed.output
    assert json.loads(indexed.stdout)["added"] == 105
    monkeypatch.chdir(tmp_path)
    for argv in examples:
        result = runner.invoke(app, argv[1:] + ["--store", str(store)], catch_exceptions=False)
        assert result.exit_code == 0, (argv, result.output)
        assert "error" not in result.stderr.lower(), (argv, result.stderr)
        if "--json" in argv:
            body = json.loads(result.stdout)
            assert isinstance(body, (list, dict))


def test_the_readme_re_ranking_examples_run_as_written(tmp_path, monkeypatch):
    """With the tiny matching model standing in for the default one (no download here)."""
    examples = composed_examples("## Re-ranking")
    assert len(examples) == 3 and all(argv[:2] == ["mmsearch", "search"] for argv in examples)
    media = tmp_path / "media"
    for i in range(8):
        write_image(media / "photos" / f"p{i:03d}.png", seed=i)
    for i in range(4):
        write_text(media / "notes" / f"n{i}.txt", sentence(i))
    write_image(tmp_path / "desk.jpg", seed=1002)
    store = tmp_path / "store"
    runner = CliRunner()
    indexed = runner.invoke(app, ["index", str(media), "--store", str(store), "--model", TINY, "--audio-model", "none"],
                            catch_exceptions=False)
    assert indexed.exit_code == 0, indexed.output
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMSEARCH_RERANK_MODEL", TINY)
    for argv in examples:
        result = runner.invoke(app, argv[1:] + ["--store", str(store)], catch_exceptions=False)
        assert result.exit_code == 0 and "= match 0." in result.stdout, (argv, result.output)
