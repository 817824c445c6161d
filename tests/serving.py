"""A served store for the server's tests: images, text notes and sounds indexed with the tiny random
models, the app around it (``TestClient``), and a real uvicorn server on 127.0.0.1 for the browser and
load tests, stopped at the end by itself. A plugin of the tests' conftest (``pytest_plugins``), so its
fixtures reach every test; not a conftest.py of tests/server, which would take the name ``conftest``
from the shared one."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import TINY, sentence, write_image, write_text


def write_tone(path: Path, seconds: float, freq: float, rate: int = 16000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), rate)
    return path


def make_library(root: Path) -> Path:
    """30 images (one a 1600x1200 JPEG), 6 notes, 3 sounds (one 25 s long: three windows)."""
    for i in range(29):
        write_image(root / "photos" / f"photo{i:02d}.png", seed=i)
    write_image(root / "photos" / "big.jpg", seed=500, size=(1600, 1200))
    for i in range(6):
        write_text(root / "notes" / f"note{i}.txt", sentence(200 + i, words=20))
    write_tone(root / "sounds" / "a440.wav", 3.0, 440, seed=1)
    write_tone(root / "sounds" / "a880.wav", 4.0, 880, seed=2)
    write_tone(root / "sounds" / "long.wav", 25.0, 200, seed=3, rate=8000)
    return root


@pytest.fixture(scope="session")
def tiny_clap():
    from mmsearch.encoders.clap import load_audio_encoder

    return load_audio_encoder("test-tiny:random")


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("library"))


@pytest.fixture(scope="module")
def served_store(tmp_path_factory, library, tiny_clip, tiny_clap) -> Path:
    """A store holding ``library``, indexed once per module (then opened read-only by each test's engine)."""
    from mmsearch.config import Settings
    from mmsearch.engine import Engine

    store = tmp_path_factory.mktemp("served") / "store"
    with Engine.open(Settings.resolve(store=store, model=TINY, audio_model=TINY, precision="fp32"), create=True,
                     clip=tiny_clip, clap=tiny_clap) as engine:
        report = engine.index([library])
    assert report.failed == () and report.added == 39, report
    return store


def open_engine(store: Path, tiny_clip, tiny_clap, rerank_model: str = TINY):
    """The served engine: the tiny models, and the tiny random re-ranking model (loaded on the first search
    that re-ranks) unless ``rerank_model`` names another."""
    from mmsearch.config import Settings
    from mmsearch.engine import Engine

    return Engine.open(Settings.resolve(store=store, model=TINY, audio_model=TINY, rerank_model=rerank_model),
                       clip=tiny_clip, clap=tiny_clap)


@pytest.fixture
def engine(served_store, tiny_clip, tiny_clap):
    engine = open_engine(served_store, tiny_clip, tiny_clap)
    yield engine
    engine.close()


@pytest.fixture
def client(engine):
    from fastapi.testclient import TestClient

    from mmsearch_server.app import create_app

    with TestClient(create_app(engine), base_url="http://127.0.0.1") as client:
        yield client


@contextlib.contextmanager
def running_server(app, *, seconds: float = 120.0):
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL. The server
    stops when the block ends, or by itself after ``seconds`` whatever happens."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = threading.Timer(seconds, lambda: setattr(server, "should_exit", True))
    deadline.daemon = True
    deadline.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        deadline.cancel()
        thread.join(timeout=15)
        sock.close()
