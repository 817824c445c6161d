"""Shared fixtures: a tiny random open_clip model (built once per session, offline) and media makers."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["serving", "milvus_server"]  # the served store and the test server (tests/server); Milvus

CORPUS = Path(os.environ.get("MMSEARCH_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")
TINY = "test-tiny:random"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No test may reach the network: point the hub at a closed local port and use an empty cache (and
    mmsearch's own cache of precision verdicts is the session's, not the user's). Indexing runs the torch
    image tower in float32 unless a test asks for another precision (auto's choice differs by machine)."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
    monkeypatch.delenv("MMSEARCH_STORE", raising=False)
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mmsearch-cache"))
    monkeypatch.setenv("MMSEARCH_PRECISION", "fp32")  # torch's image tower, the same on every machine


@pytest.fixture
def connections(monkeypatch) -> list[tuple[object, float | None]]:
    """Every network connection the test attempts, as (address, its timeout in seconds or None for none)."""
    made: list[tuple[object, float | None]] = []
    real = socket.socket.connect

    def connect(self, address):
        made.append((address, self.gettimeout()))
        return real(self, address)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return made


def fails_fast(made: list[tuple[object, float | None]]) -> bool:
    """What failing fast offline means, in events rather than seconds: at most a couple of connection
    attempts, each with a timeout of at most 15 s (so no retry loop and no wait without end)."""
    return len(made) <= 2 and all(timeout is not None and timeout <= 15 for _, timeout in made)


@pytest.fixture(scope="session")
def tiny_clip():
    from mmsearch.encoders.clip import load_clip

    return load_clip(TINY)


@pytest.fixture
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS


def write_image(path: Path, seed: int, size: tuple[int, int] = (96, 80), mode: str = "RGB") -> Path:
    """A distinct noise image per seed (random models tell noise apart well)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


WORDS = ("river mountain lantern violin harbour meadow copper glacier orchard thunder pepper saddle "
         "canyon velvet compass falcon marble lemon ember tulip").split()


def sentence(seed: int, words: int = 12) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=words))


@pytest.fixture
def media(tmp_path) -> Path:
    """A small folder: 6 images (one in a subfolder) and 4 text notes."""
    root = tmp_path / "media"
    for i in range(5):
        write_image(root / f"photo{i}.png", seed=i)
    write_image(root / "sub" / "deep.jpg", seed=99)
    for i in range(4):
        write_text(root / "notes" / f"note{i}.txt", sentence(100 + i))
    return root


@pytest.fixture
def make_engine(tmp_path, tiny_clip):
    """Engine factory over a store in tmp_path, with the session's tiny model injected."""
    from mmsearch.config import Settings
    from mmsearch.engine import Engine

    engines = []

    def make(store: Path | None = None, **settings):
        settings.setdefault("model", TINY)
        engine = Engine.open(Settings.resolve(store=store or tmp_path / "store", **settings), create=True,
                             clip=tiny_clip)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def catalog_path(tmp_path) -> Path:
    """Where a store's catalog goes (nothing there yet)."""
    from mmsearch.store.folder import CATALOG_NAME

    return tmp_path / "store" / CATALOG_NAME


@pytest.fixture
def catalog(catalog_path):
    """A new, empty catalog, closed after the test."""
    from mmsearch.store.catalog import Catalog

    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    opened = Catalog(catalog_path, create=True)
    yield opened
    opened.close()


def break_sessions(monkeypatch, encoder_class) -> None:
    """Every ``encoder_class`` (an exported tower) opened from now on loads but fails when it runs."""
    class Broken:
        def run(self, *args, **kwargs):
            raise RuntimeError("kernel exploded")

    real_init = encoder_class.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._session = Broken()

    monkeypatch.setattr(encoder_class, "__init__", init)


def damage_export(folder: Path, damage: str, other_spec: str) -> None:
    """Make the export in ``folder`` unusable: its graph 'missing' or 'corrupt' (overwritten), or its record
    naming 'other model' (``other_spec``, random weights)."""
    record = json.loads((folder / "export.json").read_text())
    if damage == "missing":
        (folder / record["model"]).unlink()
    elif damage == "corrupt":
        (folder / record["model"]).write_bytes(b"not an onnx graph")
    else:
        (folder / "export.json").write_text(json.dumps({**record, "fingerprint": f"{other_spec}:seed0",
                                                        "spec": other_spec}))
