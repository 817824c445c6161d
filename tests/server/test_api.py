"""The JSON API over a real store (tiny random models): search by text, by uploaded files and by an
indexed item's id; pages; thumbnails made once and cached; files with HTTP Range; status; and errors
that are one clear line with a 4xx code, never a traceback."""
from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
from PIL import Image


from mmsearch.search.queries import Query

HIT_KEYS = {"id", "path", "modality", "score", "calibrated"}


def test_text_search_returns_hits_with_ids_and_the_library_ranking(client, engine):
    response = client.get("/api/search", params={"q": "harbour meadow", "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert len(body["hits"]) == 5 and body["next"] is not None
    expected = engine.search(Query(text="harbour meadow"), k=5).hits
    assert [h["id"] for h in body["hits"]] == [h.item_id for h in expected]
    for hit in body["hits"]:
        assert HIT_KEYS <= hit.keys()
        if hit["modality"] == "text":
            assert hit["passage"]
        if hit["modality"] == "audio":
            assert 0 <= hit["start"] < hit["end"]


def test_kind_filter_and_audio_windows(client):
    images = client.get("/api/search", params={"q": "a dog", "kind": "image", "k": 8}).json()["hits"]
    assert len(images) == 8 and {h["modality"] for h in images} == {"image"}
    sounds = client.get("/api/search", params={"q": "a low hum", "kind": "audio", "k": 3}).json()
    assert {h["modality"] for h in sounds["hits"]} == {"audio"} and sounds["next"] is None
    assert all("start" in h and "end" in h for h in sounds["hits"])


def test_pages_follow_each_other_without_overlap_until_the_end(client, engine):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"q": "copper lantern", "kind": "image", "k": 7}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/search", params=params).json()
        seen += [h["id"] for h in body["hits"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 5 and len(seen) == 30 == len(set(seen))  # 7+7+7+7+2 images, none twice
    whole = engine.search(Query(text="copper lantern"), kind="image", k=30).hits
    assert seen == [h.item_id for h in whole]  # the pages are the ranking, cut in pieces


def test_more_like_this_uses_the_stored_vector_and_leaves_the_item_out(client, engine, tiny_clip, library):
    first = client.get("/api/search", params={"q": "falcon", "kind": "image", "k": 1}).json()["hits"][0]
    similar = client.get("/api/search", params={"like": first["id"], "kind": "image", "k": 5}).json()["hits"]
    assert first["id"] not in [h["id"] for h in similar] and len(similar) == 5
    by_file = engine.search(Query(image=first["path"]), kind="image", k=6).hits  # the same photo, re-embedded
    assert by_file[0].item_id == first["id"]
    assert [h["id"] for h in similar] == [h.item_id for h in by_file[1:]]
    assert similar[0]["score"] == pytest.approx(by_file[1].score, abs=1e-4)


def test_more_like_this_crosses_modalities(client):
    sound = client.get("/api/search", params={"q": "hum", "kind": "audio", "k": 1}).json()["hits"][0]
    images = client.get("/api/search", params={"like": sound["id"], "kind": "image", "k": 3}).json()["hits"]
    assert len(images) == 3 and {h["modality"] for h in images} == {"image"}
    note = client.get("/api/search", params={"q": "river", "kind": "text", "k": 1}).json()["hits"][0]
    mixed = client.get("/api/search", params={"like": note["id"], "k": 6}).json()["hits"]
    assert note["id"] not in [h["id"] for h in mixed] and len(mixed) == 6


def test_upload_an_indexed_image_finds_itself_first(client, library):
    path = library / "photos" / "photo07.png"
    response = client.post("/api/search", data={"kind": "image", "k": "3"},
                           files={"image": ("mine.png", path.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["path"] == str(path) and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_upload_an_audio_file_with_text(client, library):
    path = library / "sounds" / "a880.wav"
    response = client.post("/api/search", data={"q": "a high tone", "kind": "audio", "k": "2"},
                           files={"audio": ("tone.wav", path.read_bytes(), "audio/wav")})
    assert response.status_code == 200, response.text
    assert {h["modality"] for h in response.json()["hits"]} == {"audio"}


def test_thumbnail_is_made_once_cached_and_remade_when_the_file_changes(client, engine, served_store, tmp_path):
    hit = client.get("/api/search", params={"q": "x", "kind": "image", "k": 30}).json()["hits"]
    big = next(h for h in hit if h["path"].endswith("big.jpg"))
    first = client.get(f"/api/items/{big['id']}/thumbnail")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(first.content)) as image:
        assert max(image.size) == 256 and image.size == (256, 192)
    cached = list((served_store / "thumbnails").glob(f"{big['id']}-256-*.jpg"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = client.get(f"/api/items/{big['id']}/thumbnail")
    assert again.content == first.content and cached[0].stat().st_mtime_ns == stamp  # read, not made again
    small = client.get(f"/api/items/{big['id']}/thumbnail", params={"size": 128})
    with Image.open(io.BytesIO(small.content)) as image:
        assert max(image.size) == 128
    assert client.get(f"/api/items/{big['id']}/thumbnail", params={"size": 300}).status_code == 422


def test_a_changed_file_gets_a_new_thumbnail(tmp_path, tiny_clip, tiny_clap):
    from fastapi.testclient import TestClient

    from conftest import write_image
    from mmsearch.config import Settings
    from mmsearch.engine import Engine
    from mmsearch_server.app import create_app

    folder = tmp_path / "pics"
    path = write_image(folder / "a.png", seed=1, size=(300, 200))
    store = tmp_path / "store"
    with Engine.open(Settings.resolve(store=store, model="test-tiny:random", audio_model="none"), create=True,
                     clip=tiny_clip) as engine:
        engine.index([folder])
        client = TestClient(create_app(engine))
        item = client.get("/api/search", params={"q": "x", "k": 1}).json()["hits"][0]["id"]
        before = client.get(f"/api/items/{item}/thumbnail").content
        Image.new("RGB", (100, 300), (250, 10, 10)).save(path)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        after = client.get(f"/api/items/{item}/thumbnail").content
        with Image.open(io.BytesIO(after)) as image:
            assert image.size == (85, 256) and np.asarray(image)[100, 40, 0] > 200
        assert after != before
        assert len(list((store / "thumbnails").glob(f"{item}-256-*.jpg"))) == 1  # the stale one is gone


def test_file_is_served_whole_and_by_range(client, library):
    hit = client.get("/api/search", params={"q": "hum", "kind": "audio", "k": 3}).json()["hits"]
    long = next(h for h in hit if h["path"].endswith("long.wav"))
    data = (library / "sounds" / "long.wav").read_bytes()
    whole = client.get(f"/api/items/{long['id']}/file")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"].startswith("audio/") and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/items/{long['id']}/file", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    tail = client.get(f"/api/items/{long['id']}/file", headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == data[-100:]
    bad = client.get(f"/api/items/{long['id']}/file", headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416


def test_text_files_are_served_as_plain_text_in_a_sandbox(client):
    note = client.get("/api/search", params={"q": "river", "kind": "text", "k": 1}).json()["hits"][0]
    response = client.get(f"/api/items/{note['id']}/file")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert "sandbox" in response.headers["content-security-policy"]


def test_status_reports_counts_models_indexes_and_failures(client):
    body = client.get("/api/status").json()
    assert body["counts"] == {"image": 30, "text": 6, "audio": 3, "video": 0}
    assert body["model"] == "test-tiny:random" and body["audio_model"] == "test-tiny:random"
    assert set(body["index"]) == {"image", "text", "audio"} and body["failed"] == []
    assert body["server"]["token_required"] is False


@pytest.mark.parametrize("params, fragment", [
    ({"q": "x", "k": 0}, "k: must be between 1 and 100"),
    ({"q": "x", "k": "many"}, "k: "),
    ({"q": "x", "kind": "movie"}, "kind must be one of"),
    ({"q": "   "}, "empty text query"),
    ({}, "nothing to search for"),
    ({"q": "x", "cursor": "garbage!"}, "cursor: not a cursor"),
    ({"q": "x", "path": "[abc"}, "unclosed '['"),
])
def test_bad_searches_get_422_with_one_clear_line(client, params, fragment):
    response = client.get("/api/search", params=params)
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert fragment in message and "\n" not in message and "Traceback" not in message


def test_unknown_item_id_for_more_like_this_is_404(client):
    response = client.get("/api/search", params={"like": 999999})
    assert response.status_code == 404 and "no such item" in response.json()["error"]


def test_openapi_docs_are_served_without_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/items/{item_id}/thumbnail", "/api/items/{item_id}/file", "/api/status"} <= \
        set(schema["paths"])


def test_composed_queries_through_the_api(client, engine, library):
    from mmsearch.search.queries import Part

    first = client.get("/api/search", params={"q": "falcon", "kind": "image", "k": 2}).json()["hits"]
    params = [("q", "harbour"), ("text", "river:2"), ("like", f"{first[0]['id']}:-0.5"), ("kind", "image"),
              ("k", "5"), ("fusion", "rrf")]
    body = client.get("/api/search", params=params).json()
    assert body["fusion"] == "rrf" and len(body["hits"]) == 5 and all(len(h["parts"]) == 3 for h in body["hits"])
    expected = engine.search(Query(text="harbour", parts=(Part("text", "river", 2.0),
                                                          Part("like", first[0]["id"], -0.5))),
                             kind="image", k=5, fusion="rrf")
    assert [h["id"] for h in body["hits"]] == [h.item_id for h in expected.hits]
    cut = client.get("/api/search", params={"q": "x", "kind": "image", "k": 30, "cutoff": "auto"}).json()
    assert cut["cut"] + len(cut["hits"]) == 30 and cut["next"] is None
    photos = library / "photos"
    upload = client.post("/api/search", data={"kind": "image", "k": "3", "image_weight": ["1", "0.25"]},
                         files=[("image", ("a.png", (photos / "photo03.png").read_bytes(), "image/png")),
                                ("image", ("b.png", (photos / "photo04.png").read_bytes(), "image/png"))])
    assert upload.status_code == 200, upload.text
    hits = upload.json()["hits"]
    assert hits[0]["path"] == str(photos / "photo03.png") and hits[0]["parts"][0] == pytest.approx(1.0, abs=1e-3)
    assert client.get("/api/search", params={"text": "x:nan"}).status_code == 422
    assert client.get("/api/search", params={"q": "x", "min_duration": "10", "kind": "audio"}).json()["hits"][0][
        "path"].endswith("long.wav")
