"""Helpers shared by the reliability tests: a fork server for killable CLI runs, a small corpus maker,
and store inspection."""
from __future__ import annotations

import atexit
import json
import os
import tempfile
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = "test-tiny:random"


class ForkServer:
    """Runs ``tests/_forkserver.py``; ``spawn`` starts one CLI run in a forked child and returns its pid."""

    def __init__(self, workdir: Path, preload: tuple[str, ...] = (TINY,)):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "_forkserver.py"), *preload],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        ready = self._read()
        assert ready.get("ready"), ready
        self._count = 0

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        return json.loads(line)

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def spawn(self, args: list[str]) -> "Child":
        self._count += 1
        out, err = self.workdir / f"run{self._count}.out", self.workdir / f"run{self._count}.err"
        pid = self._ask({"op": "spawn", "args": [str(a) for a in args], "stdout": str(out), "stderr": str(err)})["pid"]
        return Child(self, pid, out, err)

    def wait(self, pid: int) -> tuple[int | None, int | None]:
        answer = self._ask({"op": "wait", "pid": pid})
        return answer["code"], answer["signal"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


_SHARED: list[ForkServer] = []


def shared_fork_server() -> ForkServer:
    """One fork server for the whole test session (its start costs the imports once)."""
    if not _SHARED:
        server = ForkServer(Path(tempfile.mkdtemp(prefix="mmsearch-forkserver-")))
        atexit.register(server.close)
        _SHARED.append(server)
    return _SHARED[0]


class Child:
    def __init__(self, server: ForkServer, pid: int, out: Path, err: Path):
        self.server, self.pid, self.out, self.err = server, pid, out, err
        self.started = time.monotonic()
        self.result: tuple[int | None, int | None] | None = None

    def running(self) -> bool:
        """Whether the child has not exited yet (it stays a zombie until waited for)."""
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                return handle.read().split(") ", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass

    def wait(self) -> tuple[int | None, int | None]:
        if self.result is None:
            self.result = self.server.wait(self.pid)
        return self.result

    def json(self) -> dict:
        return json.loads(self.out.read_text())


def write_png(path: Path, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def words(seed: int, count: int) -> str:
    rng = np.random.default_rng(seed)
    vocabulary = "river lantern violin harbour meadow copper glacier orchard thunder pepper saddle canyon".split()
    return " ".join(rng.choice(vocabulary, size=count))


def make_folder(root: Path, images: int, texts: int, seed: int = 0) -> Path:
    """``images`` small noise PNGs and ``texts`` notes of 1-3 passages each."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        write_png(root / "img" / f"p{i:03d}.png", seed * 1000 + i)
    for i in range(texts):
        (root / "txt").mkdir(parents=True, exist_ok=True)
        (root / "txt" / f"n{i:03d}.txt").write_text(words(seed * 1000 + i, 10 + 37 * (i % 3)))
    return root


def catalog_rows(store: Path) -> dict:
    """Logical content of a catalog (to prove that a command changed nothing)."""
    with sqlite3.connect(f"file:{store / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("store_info", "items", "segments", "vectors")}


def segments_created(store: Path) -> int:
    """How many segment rows were ever committed (AUTOINCREMENT never reuses an id)."""
    if not (store / "catalog.sqlite").exists():
        return 0
    with sqlite3.connect(f"file:{store / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'segments'").fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0]) if row else 0
