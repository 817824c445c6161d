"""The web page as HTML (the browser tests drive it in Chromium): the search its URL names is rendered
on the server, hits in rank order; names from the disk are escaped; the status lists failed files with
their reasons; a bad query is a message on the page with a 4xx code."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from conftest import TINY, write_image, write_text

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch_server.app import create_app
from mmsearch_server.page import PAGE_K

HOSTILE = '<img src=x onerror="alert(1)">.png'


@pytest.fixture
def page_store(tmp_path, tiny_clip):
    root = tmp_path / "media"
    for i in range(30):
        write_image(root / f"p{i:02d}.png", seed=i)
    write_image(root / HOSTILE, seed=99)
    write_text(root / "note.txt", "<script>alert('passage')</script> by the river")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    store = tmp_path / "store"
    with Engine.open(Settings.resolve(store=store, model=TINY, audio_model="none"), create=True,
                     clip=tiny_clip) as engine:
        engine.index([root])
    return store


def _client(store, tiny_clip, rerank_model: str = TINY):
    engine = Engine.open(Settings.resolve(store=store, model=TINY, audio_model="none", rerank_model=rerank_model),
                         clip=tiny_clip)
    return engine, TestClient(create_app(engine))


@pytest.fixture
def page_client(page_store, tiny_clip):
    engine, client = _client(page_store, tiny_clip)
    yield client
    engine.close()


def _ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="hit [^"]+" data-id="(\d+)"', html)]


def test_the_url_names_the_search_and_the_server_renders_its_hits(page_client):
    response = page_client.get("/", params={"q": "meadow", "kind": "image"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    api = page_client.get("/api/search", params={"q": "meadow", "kind": "image", "k": PAGE_K}).json()
    assert _ids(response.text) == [hit["id"] for hit in api["hits"]] and len(api["hits"]) == PAGE_K
    assert f'src="/api/items/{api["hits"][0]["id"]}/thumbnail"' in response.text
    assert 'value="meadow"' in response.text and '<option value="image" selected>' in response.text
    following = re.search(r'<a id="next" href="([^"]+)"', response.text).group(1).replace("&amp;", "&")
    second = page_client.get(following)
    api2 = page_client.get("/api/search", params={"q": "meadow", "kind": "image", "k": PAGE_K,
                                                  "cursor": api["next"]}).json()
    assert _ids(second.text) == [hit["id"] for hit in api2["hits"]] and 'data-rank="25"' in second.text
    assert not set(_ids(second.text)) & set(_ids(response.text))


def test_names_and_passages_from_disk_are_escaped(page_client):
    html = page_client.get("/", params={"q": "river", "k": 40}).text + page_client.get("/", params={"q": "x"}).text
    assert "<img src=x" not in html and "<script>alert" not in html
    found = page_client.get("/api/search", params={"q": "river", "kind": "text", "k": 1}).json()["hits"][0]
    assert "&lt;script&gt;" in page_client.get("/", params={"q": "river", "kind": "text"}).text
    assert found["passage"].startswith("<script>")  # the API gives the text as it is: JSON, not HTML


def test_status_panel_lists_counts_and_failed_files_with_reasons(page_client):
    html = page_client.get("/").text
    assert '<details id="status">' in html and "31 images, 1 texts" in html and "1 failed" in html
    assert "broken.jpg</code>: " in html and "decoded" in html


def test_more_like_this_links_and_bad_queries(page_client):
    html = page_client.get("/", params={"q": "meadow"}).text
    like = re.search(r'<a class="like" href="/\?like=(\d+)&amp;kind=all">', html)
    liked = page_client.get("/", params={"like": like.group(1)})
    assert liked.status_code == 200 and int(like.group(1)) not in _ids(liked.text) and _ids(liked.text)
    bad = page_client.get("/", params={"q": "x", "kind": "image", "cursor": "nonsense"})
    assert bad.status_code == 422 and "not a cursor" in bad.text
    missing = page_client.get("/", params={"like": "424242"})
    assert missing.status_code == 404 and "no such item" in missing.text
    assert page_client.get("/", params={"like": "abc"}).status_code == 422


def test_a_video_hit_plays_from_its_moment_and_a_pdf_hit_names_its_page(tmp_path, tiny_clip):
    from PIL import Image

    from media_makers import text_pdf, write_test_video

    root = tmp_path / "media"
    root.mkdir()
    write_test_video(root / "walk.mp4", seconds=12, colours=((0.0, (255, 0, 0)), (6.0, (0, 0, 255))), audio=False)
    (root / "paper.pdf").write_bytes(text_pdf(["lanterns by the river " * 4, "copper kettles on a stove " * 4]))
    store = tmp_path / "store"
    with Engine.open(Settings.resolve(store=store, model=TINY, audio_model="none"), create=True,
                     clip=tiny_clip) as engine:
        assert engine.index([root]).failed == ()
    Image.new("RGB", (64, 48), (0, 0, 255)).save(tmp_path / "blue.png")
    with Engine.open(Settings.resolve(store=store, model=TINY, audio_model="none"), clip=tiny_clip) as engine:
        client = TestClient(create_app(engine))
        with open(tmp_path / "blue.png", "rb") as picture:
            found = client.post("/api/search", data={"kind": "video"},
                                files={"image": ("blue.png", picture, "image/png")}).json()["hits"][0]
        assert found["modality"] == "video" and found["track"] == "image" and 6.0 <= found["start"] < 12.0
        video = client.get("/", params={"q": "a walk", "kind": "video"}).text
        item = found["id"]
        assert re.search(rf'<video controls preload="metadata" src="/api/items/{item}/file#t=[0-9.]+" '
                         rf'data-start="[0-9.]+"', video), video
        assert '<span class="window">frame at 0:' in video
        served = client.get(f"/api/items/{item}/file", headers={"Range": "bytes=0-99"})
        assert served.status_code == 206 and served.headers["content-type"] == "video/mp4"
        text = client.get("/", params={"q": "copper kettles on a stove", "kind": "text"}).text
        assert '<span class="window">page 2</span>' in text


def test_a_reranked_search_shows_each_hits_match_and_keeps_rerank_in_its_next_page(page_client):
    response = page_client.get("/", params={"q": "meadow", "kind": "image", "rerank": PAGE_K})
    assert response.status_code == 200
    api = page_client.get("/api/search", params={"q": "meadow", "kind": "image", "k": PAGE_K,
                                                 "rerank": PAGE_K}).json()
    assert api["reranked"] == PAGE_K and _ids(response.text) == [hit["id"] for hit in api["hits"]]
    first = api["hits"][0]
    assert (f'<span class="match" title="re-ranked: match {first["match"]:.4f} + cosine {first["score"]:.4f} = '
            f'{first["rerank_score"]:.4f}">match {first["match"]:.2f} · cos {first["score"]:.2f} '
            f'<small>sum {first["rerank_score"]:.2f}</small></span>') in response.text
    assert response.text.count('<span class="match"') == PAGE_K
    assert f"Results: 1-{PAGE_K}, the first {PAGE_K} re-ranked" in response.text
    assert f'name="rerank" value="{PAGE_K}" checked>' in response.text
    following = re.search(r'<a id="next" href="([^"]+)"', response.text).group(1).replace("&amp;", "&")
    assert f"rerank={PAGE_K}" in following
    second = page_client.get(following)
    api2 = page_client.get("/api/search", params={"q": "meadow", "kind": "image", "k": PAGE_K,
                                                  "cursor": api["next"]}).json()
    assert _ids(second.text) == [hit["id"] for hit in api2["hits"]] and '<span class="match"' not in second.text
    plain = page_client.get("/", params={"q": "meadow", "kind": "image"}).text
    assert '<span class="match"' not in plain and f'name="rerank" value="{PAGE_K}">' in plain
    assert "re-ranking model</th><td>test-tiny:random" in plain


def test_the_page_reranks_only_where_it_applies_and_notes_a_model_that_cannot_load(page_store, tiny_clip, tmp_path):
    engine, client = _client(page_store, tiny_clip, rerank_model=str(tmp_path / "nowhere"))
    try:
        noted = client.get("/", params={"q": "meadow", "kind": "image", "rerank": PAGE_K})
        assert noted.status_code == 200 and len(_ids(noted.text)) == PAGE_K
        assert '<span class="match"' not in noted.text and "(not re-ranked: cannot load model" in noted.text
        wrong = client.get("/", params={"q": "meadow", "kind": "all", "rerank": PAGE_K})
        assert wrong.status_code == 422 and "add kind image" in wrong.text
        assert client.get("/", params={"q": "meadow", "kind": "image", "rerank": "x"}).status_code == 422
    finally:
        engine.close()
