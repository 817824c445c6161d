"""Serving while indexing: an `mmsearch index` process writes to the store the server reads; every request
keeps succeeding, and new files appear in searches and the status without a restart."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from conftest import TINY
from reliability_helpers import make_folder, shared_fork_server

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch_server.app import create_app


@pytest.mark.slow
def test_new_files_appear_while_another_process_indexes(tmp_path, tiny_clip):
    store = tmp_path / "store"
    seed = make_folder(tmp_path / "seed", images=4, texts=2, seed=3)
    settings = Settings.resolve(store=store, model=TINY, audio_model="none")
    with Engine.open(settings, create=True, clip=tiny_clip) as engine:
        engine.index([seed])
    big = make_folder(tmp_path / "big", images=120, texts=60, seed=4)
    with Engine.open(settings, clip=tiny_clip) as engine:
        client = TestClient(create_app(engine))
        assert client.get("/api/status").json()["counts"]["image"] == 4
        writer = shared_fork_server().spawn(["index", str(big), "--store", str(store), "--model", TINY,
                                             "--audio-model", "none", "--batch-size", "2", "--workers", "1"])
        seen = []
        while writer.running() or len(seen) < 3:
            hits = client.get("/api/search", params={"q": "lantern", "kind": "image", "k": 100})
            status = client.get("/api/status")
            assert hits.status_code == 200 and status.status_code == 200, (hits.text, status.text)
            seen.append((len(hits.json()["hits"]), status.json()["counts"]["image"]))
        assert writer.wait() == (0, None), writer.err.read_text()
        final = client.get("/api/search", params={"q": "lantern", "kind": "image", "k": 100}).json()["hits"]
        counts = client.get("/api/status").json()["counts"]
    assert counts == {"image": 124, "text": 62, "audio": 0, "video": 0}
    assert len(final) == 100 and any("/big/" in hit["path"] for hit in final)
    assert [s for _, s in seen] == sorted(s for _, s in seen), "the count went back"
    assert any(4 < hits < 100 or 4 < count < 124 for hits, count in seen), f"no request saw the run half done: {seen}"
