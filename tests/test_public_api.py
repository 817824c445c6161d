"""The public Python API as README.md shows it: its example runs as written (with tiny random-weight
models chosen through the environment, as a user may choose theirs), and ``import mmsearch`` stays cheap."""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

from conftest import TINY, sentence, write_image, write_text
from media_makers import write_test_video

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    media = tmp_path / "media"
    write_image(media / "beach.jpg", seed=1)
    for i in range(4):
        write_image(media / "photos" / f"p{i}.png", seed=10 + i)
        write_text(media / "notes" / f"n{i}.txt", sentence(20 + i, words=60))
    t = np.arange(48_000 * 3) / 48_000
    soundfile.write(media / "birdsong.wav", (0.3 * np.sin(2 * np.pi * 2_000 * t)).astype(np.float32), 48_000)
    (media / "clips").mkdir()
    write_test_video(media / "clips" / "match.mp4", seconds=6, colours=((0.0, (0, 128, 0)), (3.0, (255, 255, 255))))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMSEARCH_MODEL", TINY)
    monkeypatch.setenv("MMSEARCH_AUDIO_MODEL", "test-tiny:random")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})
    lines = printed.getvalue().splitlines()
    assert lines[0] == "11 added, 0 failed"  # the hits that follow depend on the random weights
    assert lines[-1] == "{'image': 5, 'text': 4, 'audio': 1, 'video': 1}"
    assert any(line.endswith("birdsong.wav 0.0 3.0") for line in lines)  # the audio hit names its window
    assert any("match.mp4 image " in line or "match.mp4 audio " in line for line in lines)  # and the video its moment
    assert (tmp_path / "my-store" / "catalog.sqlite").is_file()


def test_importing_mmsearch_loads_nothing_heavy():
    """The package's names load on first use: importing it pulls in no model, index or database library."""
    code = ("import sys, mmsearch; heavy = {'torch', 'open_clip', 'faiss', 'sqlalchemy', 'numpy', 'transformers'}; "
            "print(sorted(heavy & set(sys.modules))); "
            "print(mmsearch.open_store.__module__, mmsearch.Query.__module__, mmsearch.Hit.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.splitlines() == ["[]", "mmsearch.engine mmsearch.search.queries mmsearch.records"]
