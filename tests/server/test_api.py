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
    assert_422(client, params, fragment)


def assert_422(client, params, fragment):
    """One line naming the parameters as the API spells them (no traceback, no library setting names)."""
    response = client.get("/api/search", params=params)
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert fragment in message and "\n" not in message and "Traceback" not in message and "{opt:" not in message


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


# --- re-ranking (the served engine's re-ranking model: test-tiny:random) ---------------------------------

def _reranked_first(hits: list[dict], depth: int) -> None:
    """The first ``depth`` hits carry match and rerank_score (= match + score), in descending rerank_score;
    the hits after them carry neither."""
    head, tail = hits[:depth], hits[depth:]
    assert all({"match", "rerank_score"} <= hit.keys() for hit in head), head
    assert all(0.0 <= hit["match"] <= 1.0 for hit in head)
    assert all(hit["rerank_score"] == pytest.approx(hit["match"] + hit["score"], abs=1e-5) for hit in head)
    scores = [hit["rerank_score"] for hit in head]
    assert scores == sorted(scores, reverse=True)
    assert not any({"match", "rerank_score"} & hit.keys() for hit in tail)


def test_rerank_orders_the_first_hits_by_match_plus_cosine_and_the_rest_follow(client, engine):
    params = {"q": "copper lantern", "kind": "image", "k": 8}
    plain = client.get("/api/search", params=params).json()
    body = client.get("/api/search", params={**params, "rerank": 5}).json()
    assert body["reranked"] == 5 and plain["reranked"] == 0 and len(body["hits"]) == 8
    _reranked_first(body["hits"], 5)
    ids, plain_ids = [h["id"] for h in body["hits"]], [h["id"] for h in plain["hits"]]
    assert set(ids[:5]) == set(plain_ids[:5]) and ids[5:] == plain_ids[5:]  # the same hits, the first 5 re-ordered
    expected = engine.search(Query(text="copper lantern"), kind="image", k=8, rerank=5).hits
    assert [h.item_id for h in expected] == ids
    assert [h["rerank_score"] for h in body["hits"][:5]] == [pytest.approx(h.rerank_score, abs=1e-4) for h in expected[:5]]


@pytest.mark.parametrize("params, fragment", [
    ({"q": "x", "rerank": 5}, "rerank with a text query re-ranks image hits: add kind image"),
    ({"q": "x", "kind": "text", "rerank": 5}, "add kind image"),
    ({"q": "x", "text": "y", "kind": "image", "rerank": 5}, "rerank re-ranks a search by one text"),
    ({"q": "x", "kind": "image", "rerank": 101}, "rerank: must be between 0 and 100, not 101"),
    ({"q": "x", "kind": "image", "rerank": -1}, "rerank: must be between 0 and 100, not -1"),
    ({"q": "x", "kind": "image", "rerank": "lots"}, "rerank: "),
    ({"q": "x", "kind": "image", "rerank": 5, "rerank_optional": "maybe"}, "rerank_optional: "),
])
def test_rerank_where_it_does_not_apply_gets_422_naming_the_parameters(client, params, fragment):
    assert_422(client, params, fragment)


def test_a_like_query_cannot_be_reranked(client):
    item = client.get("/api/search", params={"q": "x", "kind": "image", "k": 1}).json()["hits"][0]["id"]
    response = client.get("/api/search", params={"like": item, "kind": "image", "rerank": 3})
    assert response.status_code == 422 and "an indexed file" in response.json()["error"]


@pytest.mark.parametrize("spec", ["empty folder", "Salesforce/blip-itm-base-coco"])
def test_a_rerank_model_that_cannot_be_loaded_is_503_or_with_rerank_optional_a_note(
        spec, served_store, tiny_clip, tiny_clap, tmp_path, connections):
    """An empty folder, or the default hub model offline (HF_HUB_OFFLINE, an empty cache): the server
    starts and answers other searches; a re-ranked one gets 503 saying why, or with rerank_optional the
    hits of the search as it is, with a note."""
    from fastapi.testclient import TestClient

    from conftest import fails_fast
    from mmsearch_server.app import create_app
    from serving import open_engine

    if spec == "empty folder":
        spec = str(tmp_path / "empty")
        (tmp_path / "empty").mkdir()
    engine = open_engine(served_store, tiny_clip, tiny_clap, rerank_model=spec)
    try:
        client = TestClient(create_app(engine), base_url="http://127.0.0.1")
        params = {"q": "copper lantern", "kind": "image", "k": 6}
        plain = client.get("/api/search", params=params)
        assert plain.status_code == 200
        failed = client.get("/api/search", params={**params, "rerank": 4})
        assert failed.status_code == 503, failed.text
        message = failed.json()["error"]
        assert message.startswith(f"cannot load model '{spec}'") and "\n" not in message and "{opt:" not in message
        if "/" in spec and not spec.startswith("/"):  # the hub: how to do without it, as the server spells it
            assert "mmsearch serve --rerank-model /path/to/dir" in message and "rerank_optional=1" in message
        for optional in ("1", "true"):
            body = client.get("/api/search", params={**params, "rerank": 4, "rerank_optional": optional}).json()
            assert body["reranked"] == 0 and len(body["notes"]) == 1 and body["notes"][0].startswith("not re-ranked: ")
            assert not any("match" in hit or "rerank_score" in hit for hit in body["hits"])
            assert [h["id"] for h in body["hits"]] == [h["id"] for h in plain.json()["hits"]]
        assert client.get("/api/status").json()["server"]["rerank_model"] == spec
    finally:
        engine.close()
    assert fails_fast(connections)


def test_pages_of_a_reranked_search_continue_the_same_list(client):
    params = {"q": "harbour meadow", "kind": "image", "k": 4, "rerank": 6}
    whole = client.get("/api/search", params={**params, "k": 12}).json()
    _reranked_first(whole["hits"], 6)
    first = client.get("/api/search", params=params).json()
    second = client.get("/api/search", params={**params, "cursor": first["next"]}).json()
    # the cursor carries the re-ranking: the query and the cursor alone give the same page
    alone = client.get("/api/search", params={"q": "harbour meadow", "kind": "image", "k": 4,
                                              "cursor": first["next"]}).json()
    assert [h["id"] for h in alone["hits"]] == [h["id"] for h in second["hits"]] and alone["next"] == second["next"]
    assert alone["reranked"] == second["reranked"] == 6
    third = client.get("/api/search", params={"q": "harbour meadow", "kind": "image", "k": 4,
                                              "cursor": second["next"]}).json()
    pages = [h["id"] for page in (first, second, third) for h in page["hits"]]
    assert pages == [h["id"] for h in whole["hits"]]
    assert ["match" in h for h in second["hits"]] == [True, True, False, False]  # ranks 5-6 re-ranked, 7-8 not
    plain = client.get("/api/search", params={"q": "harbour meadow", "kind": "image", "k": 4}).json()
    assert "rerank" not in str(plain["next"]) and client.get("/api/search", params={
        "q": "harbour meadow", "kind": "image", "k": 4, "cursor": plain["next"]}).json()["reranked"] == 0
    mixed = client.get("/api/search", params={**params, "rerank": 3, "cursor": first["next"]})
    assert mixed.status_code == 422
    assert mixed.json()["error"].startswith("cursor: it continues a search with rerank=6, not rerank=3")


def test_an_uploaded_image_reranks_passages(client, engine, library):
    photo = library / "photos" / "photo03.png"
    response = client.post("/api/search", data={"kind": "text", "k": "5", "rerank": "3"},
                           files={"image": ("mine.png", photo.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reranked"] == 3 and {h["modality"] for h in body["hits"]} == {"text"}
    _reranked_first(body["hits"], 3)
    expected = engine.search(image=photo, kind="text", k=5, rerank=3).hits
    assert [h["id"] for h in body["hits"]] == [h.item_id for h in expected]
    assert [h["match"] for h in body["hits"][:3]] == [pytest.approx(h.match, abs=1e-5) for h in expected[:3]]
    wrong = client.post("/api/search", data={"kind": "image", "rerank": "3"},
                        files={"image": ("mine.png", photo.read_bytes(), "image/png")})
    assert wrong.status_code == 422 and "re-ranks text hits: add kind text" in wrong.json()["error"]
    flagged = client.post("/api/search", data={"kind": "text", "k": "5", "rerank": "3", "rerank_optional": "yes"},
                          files={"image": ("mine.png", photo.read_bytes(), "image/png")})
    assert flagged.status_code == 200 and [h["id"] for h in flagged.json()["hits"]] == [h["id"] for h in body["hits"]]


def test_the_openapi_schema_documents_rerank(client):
    schema = client.get("/openapi.json").json()["paths"]["/api/search"]
    parameters = {p["name"]: p for p in schema["get"]["parameters"]}
    assert "match" in parameters["rerank"]["description"] and "rerank_score" in parameters["rerank"]["description"]
    assert "503" in parameters["rerank_optional"]["description"]
    assert "rerank_score" in schema["get"]["description"]
    form = schema["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["rerank"] == {"type": "integer"} and form["rerank_optional"] == {"type": "boolean"}


def test_serve_takes_a_rerank_model_and_loads_it_on_the_first_reranked_search(served_store, monkeypatch, tmp_path):
    """``mmsearch serve --rerank-model``: the engine it serves re-ranks with that model; one that cannot be
    loaded does not stop the server from starting (it loads on the first re-ranked search, which gets 503)."""
    import uvicorn
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from mmsearch_cli.app import app as cli_app

    answers = {}

    def run(app, **options):  # instead of listening: a few requests to the app the command built
        client = TestClient(app, base_url="http://127.0.0.1")
        answers["status"] = client.get("/api/status").json()
        answers["search"] = client.get("/api/search", params={"q": "x", "kind": "image", "k": 3, "rerank": 2})
    monkeypatch.setattr(uvicorn, "run", run)
    for spec, code in (("test-tiny:random", 200), (str(tmp_path / "nowhere"), 503)):
        answers.clear()
        result = CliRunner().invoke(cli_app, ["serve", "--store", str(served_store), "--no-warm", "--rerank-model",
                                              spec], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert answers["status"]["server"]["rerank_model"] == spec
        assert answers["search"].status_code == code, answers["search"].text
        if code == 200:
            assert answers["search"].json()["reranked"] == 2
        else:
            assert "no such directory" in answers["search"].json()["error"]
