"""The server against hostile requests: traversal in every spelling, symlinks out of an indexed folder and
removed items all get 404; without the token, 401; a bind other machines can reach refuses to start
without a token; oversized and malformed uploads get 413/422 with a message; no endpoint writes to the
store (the thumbnail cache aside)."""
from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import TINY, write_image, write_text
from reliability_helpers import catalog_rows

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.errors import UsageError
from mmsearch_server.app import create_app
from mmsearch_server.run import check_bind, is_loopback

TRAVERSALS = [
    "/api/items/../../../../etc/passwd/file",
    "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
    "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/file",
    "/api/items/%252e%252e%252fetc%252fpasswd/file",
    "/api/items/%2Fetc%2Fpasswd/file",
    "/api/items//etc/passwd/file",
    "/api/items/-1/file",
    "/api/items/1e2/file",
    "/api/items/0x10/file",
    "/api/items/１/file",
    "/api/items/99999999/file",
    "/api/items/99999999999999999999999/thumbnail",
    "/api/items/1/file/../../../../etc/passwd",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2Fapp.py",
    "/static/swagger/../../../catalog.sqlite",
    "/catalog.sqlite",
    "/etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_attempts_get_404(client, path):
    response = client.get(path)
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
    assert "root:" not in response.text and "Traceback" not in response.text


@pytest.fixture
def own_store(tmp_path, tiny_clip):
    """A store of its own (some tests change the files): two folders indexed, a secret outside both."""
    root, other = tmp_path / "root", tmp_path / "other"
    for i in range(4):
        write_image(root / f"p{i}.png", seed=i)
    write_image(other / "o.png", seed=40)
    write_text(root / "note.txt", "a note about the river")
    secret = write_image(tmp_path / "outside" / "secret.png", seed=77)
    write_text(tmp_path / "outside" / "secret.txt", "the password is swordfish")
    store = tmp_path / "store"
    with Engine.open(Settings.resolve(store=store, model=TINY, audio_model="none"), create=True,
                     clip=tiny_clip) as engine:
        engine.index([root, other])
    engine = Engine.open(Settings.resolve(store=store, model=TINY, audio_model="none"), clip=tiny_clip)
    yield engine, root, other, secret
    engine.close()


def _ids(client) -> dict[str, int]:
    hits = client.get("/api/search", params={"q": "x", "k": 6}).json()["hits"]
    return {os.path.basename(h["path"]): h["id"] for h in hits}


def test_symlinks_out_of_an_indexed_folder_are_refused(own_store):
    engine, root, other, secret = own_store
    client = TestClient(create_app(engine))
    ids = _ids(client)
    assert client.get(f"/api/items/{ids['p1.png']}/file").status_code == 200
    (root / "p1.png").unlink()
    (root / "p1.png").symlink_to(secret)  # after indexing: the catalog still holds p1.png
    (root / "note.txt").unlink()
    (root / "note.txt").symlink_to(secret.with_name("secret.txt"))
    for item, what in ((ids["p1.png"], "file"), (ids["p1.png"], "thumbnail"), (ids["note.txt"], "file")):
        response = client.get(f"/api/items/{item}/{what}")
        assert response.status_code == 404, (item, what, response.text)
        assert "outside the indexed folders" in response.json()["error"]
        assert b"swordfish" not in response.content
    (root / "inner").mkdir()
    write_image(root / "inner" / "target.png", seed=3)
    (root / "p2.png").unlink()
    (root / "p2.png").symlink_to(root / "inner" / "target.png")  # a symlink that stays inside is fine
    assert client.get(f"/api/items/{ids['p2.png']}/file").status_code == 200


def test_removed_items_and_vanished_files_get_404(own_store):
    engine, root, other, secret = own_store
    client = TestClient(create_app(engine))
    ids = _ids(client)
    (root / "p0.png").unlink()
    for what in ("file", "thumbnail"):
        assert client.get(f"/api/items/{ids['p0.png']}/{what}").status_code == 404
    assert engine.remove([root / "p3.png"]) == 1
    assert client.get(f"/api/items/{ids['p3.png']}/file").status_code == 404
    assert client.get("/api/search", params={"like": ids["p3.png"]}).status_code == 404
    assert engine.remove([other]) == 1  # the whole folder: no longer an indexed root
    assert engine.store.roots() == [str(root)]
    assert client.get(f"/api/items/{ids['o.png']}/file").status_code == 404


def test_a_non_loopback_bind_needs_a_token():
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        with pytest.raises(UsageError, match="without a token"):
            check_bind(host, None)
        check_bind(host, "s3cret")
    for host in ("127.0.0.1", "127.8.0.1", "::1", "localhost"):
        assert is_loopback(host)
        check_bind(host, None)
    with pytest.raises(UsageError, match="empty"):
        check_bind("0.0.0.0", "  ")


def test_the_cli_refuses_to_serve_on_all_addresses_without_a_token(served_store):
    env = {k: v for k, v in os.environ.items() if k != "MMSEARCH_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "mmsearch", "serve", "--store", str(served_store), "--host",
                           "0.0.0.0", "--port", "9"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve on 0.0.0.0 without a token" in lines[0] and "--token" in lines[0]


@pytest.fixture
def guarded(engine):
    return TestClient(create_app(engine, token="s3cret-token"), base_url="http://127.0.0.1")


@pytest.mark.parametrize("path", ["/", "/?q=x", "/api/search?q=x", "/api/status", "/api/items/1/file",
                                  "/api/items/1/thumbnail", "/docs", "/openapi.json", "/static/app.js"])
def test_requests_without_the_token_get_401(guarded, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-MMSearch-Token": "s3cret-toke"},
                    {"Cookie": "mmsearch_token=nope"}):
        response = guarded.get(path, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert "token" in response.json()["error"]
    assert guarded.post("/api/search", data={"q": "x"}).status_code == 401


def test_the_token_opens_every_door(guarded):
    for headers in ({"Authorization": "Bearer s3cret-token"}, {"X-MMSearch-Token": "s3cret-token"},
                    {"Cookie": "mmsearch_token=s3cret-token"}):
        assert guarded.get("/api/search", params={"q": "x"}, headers=headers).status_code == 200
    visit = guarded.get("/?q=river&token=s3cret-token", follow_redirects=False)
    assert visit.status_code == 303 and visit.headers["location"] == "/?q=river"
    cookie = visit.headers["set-cookie"]
    assert "mmsearch_token=s3cret-token" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert guarded.get("/?q=river").status_code == 200  # the cookie the visit set
    guarded.cookies.clear()
    assert guarded.get("/?q=river&token=wrong", follow_redirects=False).status_code == 401


def _jpeg(size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, "JPEG")
    return out.getvalue()


def test_oversized_uploads_get_413(engine):
    small = TestClient(create_app(engine, max_upload=100_000))
    big = os.urandom(400_000)
    response = small.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and "upload too large" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is counted as the body arrives
        for _ in range(40):
            yield b"x" * 16384
    response = small.post("/api/search", content=chunks(),
                          headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert response.status_code == 413 and "0.0953674 MiB" in response.json()["error"]
    assert small.post("/api/search", files={"image": ("ok.jpg", _jpeg(), "image/jpeg")}).status_code == 200


@pytest.mark.parametrize("files, data, fragment", [
    ({"image": ("cat.jpg", b"this is not an image", "image/jpeg")}, {}, "upload 'cat.jpg'"),
    ({"image": ("cut.jpg", _jpeg((400, 300))[:300], "image/jpeg")}, {}, "upload 'cut.jpg'"),
    ({"image": ("empty.png", b"", "image/png")}, {}, "is empty"),
    ({"audio": ("noise.wav", b"RIFF\x00\x00\x00\x00WAVEjunk" * 10, "audio/wav")}, {}, "upload 'noise.wav'"),
    ({}, {"image": "not a file"}, "send a file"),
    ({}, {}, "nothing to search for"),
    ({"image": ("ok.jpg", _jpeg(), "image/jpeg")}, {"k": "ten"}, "k: not a whole number"),
    ({"image": ("ok.jpg", _jpeg(), "image/jpeg")}, {"kind": "movie"}, "kind must be one of"),
])
def test_malformed_uploads_get_422_with_a_message(client, files, data, fragment):
    response = client.post("/api/search", files=files or None, data=data)
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert fragment in message and "\n" not in message and "mmsearch-upload-" not in message, message


def test_a_request_that_is_not_multipart_gets_a_4xx(client):
    response = client.post("/api/search", content=b"\x00\x01garbage", headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500 and "error" in response.json()


def _store_state(store) -> dict:
    """Everything in the store folder but the thumbnail cache and SQLite's own WAL files, byte for byte, and
    the catalog's logical content."""
    files = {}
    for path in sorted(store.rglob("*")):
        relative = path.relative_to(store)
        if path.is_file() and relative.parts[0] != "thumbnails" and not path.name.startswith("catalog.sqlite"):
            files[str(relative)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return {"files": files, "catalog": catalog_rows(store)}


def test_no_endpoint_writes_to_the_store(served_store, engine, library):
    before = _store_state(served_store)
    client = TestClient(create_app(engine))
    hits = client.get("/api/search", params={"q": "x", "k": 39}).json()["hits"]
    for hit in hits:
        client.get(f"/api/items/{hit['id']}/file", headers={"Range": "bytes=0-10"})
        client.get(f"/api/items/{hit['id']}/thumbnail")
        client.get(f"/api/items/{hit['id']}")
    client.get("/api/search", params={"like": hits[0]["id"]})
    client.post("/api/search", files={"image": ("x.png", (library / "photos" / "photo01.png").read_bytes(), "image/png")})
    client.post("/api/search", files={"image": ("bad.png", b"junk", "image/png")})
    for path in ("/", "/?q=meadow", "/api/status", "/docs", "/openapi.json", "/static/app.js"):
        assert client.get(path).status_code == 200
    for method in ("put", "delete", "patch"):
        assert getattr(client, method)("/api/items/1/file").status_code == 405
    assert _store_state(served_store) == before


def test_a_store_from_before_roots_keeps_its_files_servable(own_store, tmp_path, tiny_clip):
    """Stores made before roots were recorded: their files' folders stand in, also after a new index run."""
    engine, root, other, secret = own_store
    with sqlite3.connect(engine.store.catalog.path) as conn:  # as an older mmsearch left it: no roots recorded
        conn.execute("DELETE FROM store_info WHERE key = 'roots'")
    client = TestClient(create_app(engine))
    ids = _ids(client)
    assert client.get(f"/api/items/{ids['p0.png']}/file").status_code == 200
    newer = tmp_path / "newer"
    write_image(newer / "n.png", seed=5)
    engine.index([newer])
    assert client.get(f"/api/items/{ids['p0.png']}/file").status_code == 200
    assert client.get(f"/api/items/{ids['o.png']}/file").status_code == 200
    assert str(newer) in engine.store.roots() and str(root) in engine.store.roots()
