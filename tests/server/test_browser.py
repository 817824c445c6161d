"""The web page in a real browser (Playwright driving a local Chromium, headless): a text search's
thumbnails in rank order and in the server's HTML, an uploaded photo finding itself, audio players
started at their matched window, a video hit's player at its frame's moment, "more like this", next pages (server-rendered and for an uploaded
file), URL state across a reload, a screenshot, and no request to any host but the test server and no
console error on any page.

Skipped, with the reason, where playwright is not installed or no Chromium binary is found
(``/usr/bin/chromium``, then ``chromium``, ``chromium-browser``, ``google-chrome`` on the PATH; the
environment variable ``MMSEARCH_CHROMIUM`` names another). Never ``playwright install``: the system's
browser is used as it is. One browser and one server (127.0.0.1, stopped at the end of the module or by
itself) serve every test; each test gets a fresh browser context.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from PIL import Image

from conftest import TINY
from media_makers import write_test_video
from serving import open_engine, running_server, write_tone

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.media.thumbnails import DEFAULT_SIZE
from mmsearch_server.app import create_app
from mmsearch_server.page import PAGE_K

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
expect = sync_api.expect

WAIT_MS = 15_000
"""The longest any one wait in a browser may take (loads, renders, seeks) before the test fails."""
QUERY = "copper lantern"


def find_chromium() -> tuple[str | None, str]:
    """The Chromium (or Chrome) binary to drive, and where it was looked for when there is none."""
    named = os.environ.get("MMSEARCH_CHROMIUM")
    if named:
        if Path(named).is_file() and os.access(named, os.X_OK):
            return named, ""
        return None, f"MMSEARCH_CHROMIUM={named!r} is not an executable file"
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium", ""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found, ""
    return None, ("no Chromium found (looked for /usr/bin/chromium, then chromium, chromium-browser and google-chrome "
                  "on the PATH; set MMSEARCH_CHROMIUM to a Chromium or Chrome binary)")


CHROMIUM, NOT_FOUND = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NOT_FOUND)


# --- one server and one browser for the module; a fresh context per test ---------------------------

@pytest.fixture(scope="module")
def base_url(served_store, tiny_clip, tiny_clap) -> str:
    engine = open_engine(served_store, tiny_clip, tiny_clap)
    try:
        with running_server(create_app(engine), seconds=300) as url:
            yield url
    finally:
        engine.close()


@pytest.fixture(scope="module")
def browser():
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


class Watch:
    """What pages of one context asked for and complained about."""

    def __init__(self, context):
        self.requests: list[str] = []
        self.errors: list[str] = []
        context.on("request", lambda request: self.requests.append(request.url))
        context.on("page", self.follow)

    def follow(self, page) -> None:
        page.on("console", lambda message: self.errors.append(f"console {message.type}: {message.text} "
                                                              f"({message.location.get('url', '')})")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def foreign(self, base_url: str) -> list[str]:
        return [url for url in self.requests if not url.startswith(base_url + "/")]


def _new_context(browser, base_url: str, **options):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900}, **options)
    context.set_default_timeout(WAIT_MS)
    return context, Watch(context)


@pytest.fixture
def watched(browser, base_url):
    """A fresh context's page and its Watch; at the end, no console error and no foreign request."""
    context, watch = _new_context(browser, base_url)
    page = context.new_page()
    yield page, watch
    context.close()
    assert watch.errors == [], "the page reported errors:\n" + "\n".join(watch.errors)
    assert watch.foreign(base_url) == [], f"requests to other hosts than {base_url}: {watch.foreign(base_url)}"


@pytest.fixture
def page(watched):
    return watched[0]


# --- helpers -----------------------------------------------------------------------------------------

def api(base_url: str, **params) -> dict:
    with httpx.Client(base_url=base_url, trust_env=False, timeout=30) as client:
        response = client.get("/api/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def api_upload(base_url: str, part: str, file: Path, **fields) -> dict:
    with httpx.Client(base_url=base_url, trust_env=False, timeout=30) as client:
        response = client.post("/api/search", data={k: str(v) for k, v in fields.items()},
                               files={part: (file.name, file.read_bytes())})
    assert response.status_code == 200, response.text
    return response.json()


def shown(page) -> list[tuple[int, int]]:
    """The hits on the page, as (id, rank), in the page's order."""
    return [(int(i), int(r)) for i, r in page.eval_on_selector_all(
        "#results > li.hit", "items => items.map(li => [li.dataset.id, li.dataset.rank])")]


def ids(page) -> list[int]:
    return [item for item, _ in shown(page)]


def search_url(**params) -> str:
    return "/?" + urlencode(params)


def wait_for_ranks(page, first: int, count: int) -> None:
    """Until the results are exactly ranks ``first`` .. ``first + count - 1``."""
    items = page.locator("#results > li.hit")
    expect(items).to_have_count(count, timeout=WAIT_MS)
    expect(items.first).to_have_attribute("data-rank", str(first), timeout=WAIT_MS)


def wait_for_images(page) -> list[dict]:
    """Every result thumbnail scrolled into view (they load lazily) and loaded or failed; their sizes."""
    images = page.locator("#results img")
    for n in range(images.count()):
        images.nth(n).scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(img => img.complete)",
                           timeout=WAIT_MS)
    return page.eval_on_selector_all("#results img", "images => images.map(img => ({src: img.getAttribute('src'), "
                                                     "width: img.naturalWidth, height: img.naturalHeight}))")


def players(page) -> list[dict]:
    """Each audio player once its metadata has loaded and it stands at its data-start (bounded wait)."""
    page.wait_for_function(
        "() => { const all = [...document.querySelectorAll('#results audio[data-start]')];"
        " return all.length > 0 && all.every(a => a.readyState >= 1"
        " && Math.abs(a.currentTime - parseFloat(a.dataset.start)) < 0.05); }", timeout=WAIT_MS)
    return page.eval_on_selector_all(
        "#results audio[data-start]", "players => players.map(a => ({id: +a.closest('li').dataset.id,"
        " start: parseFloat(a.dataset.start), time: a.currentTime, duration: a.duration, src: a.getAttribute('src')}))")


# --- the tests -----------------------------------------------------------------------------------------

def test_text_search_shows_thumbnails_in_rank_order(page, base_url):
    expected = api(base_url, q=QUERY, kind="image", k=PAGE_K)["hits"]
    page.goto(search_url(q=QUERY, kind="image"))
    wait_for_ranks(page, 1, PAGE_K)
    assert shown(page) == [(hit["id"], rank) for rank, hit in enumerate(expected, 1)]
    images = wait_for_images(page)
    assert [image["src"] for image in images] == [f"/api/items/{hit['id']}/thumbnail" for hit in expected]
    broken = [image["src"] for image in images if image["width"] <= 0 or image["height"] <= 0]
    assert broken == [], f"thumbnails that did not load: {broken}"
    assert all(max(image["width"], image["height"]) <= DEFAULT_SIZE for image in images)  # thumbnails, not files
    names = page.eval_on_selector_all("#results .name", "links => links.map(a => a.title)")
    assert names == [hit["path"] for hit in expected]
    expect(page.locator("#summary")).to_have_text(f"Results: 1-{PAGE_K}")
    expect(page.locator("input[name=q]")).to_have_value(QUERY)
    expect(page.locator("select[name=kind]")).to_have_value("image")


def test_first_results_are_in_the_servers_html(browser, base_url):
    """With JavaScript off, the page still holds the ranked hits, thumbnails and a next-page link."""
    context, watch = _new_context(browser, base_url, java_script_enabled=False)
    try:
        page = context.new_page()
        expected = api(base_url, q=QUERY, k=PAGE_K)["hits"]
        page.goto(search_url(q=QUERY))
        assert shown(page) == [(hit["id"], rank) for rank, hit in enumerate(expected, 1)]
        kinds = page.eval_on_selector_all("#results > li.hit", "items => items.map(li => li.className)")
        assert kinds == [f"hit hit-{hit['modality']}" for hit in expected]
        assert page.locator("#results > li.hit-image img").count() == sum(h["modality"] == "image" for h in expected)
        passages = page.eval_on_selector_all("#results blockquote.passage", "quotes => quotes.map(q => q.textContent)")
        assert passages == [hit["passage"] for hit in expected if hit["modality"] == "text"]
        assert page.eval_on_selector("#next", "a => a.tagName") == "A"  # a plain link: no script needed
        assert "cursor" in parse_qs(urlsplit(page.get_attribute("#next", "href")).query)
        assert page.locator("#status summary").inner_text().startswith("Store: 30 images, 6 texts, 3 audio")
    finally:
        context.close()
    assert watch.errors == []


def test_uploaded_photo_finds_itself_first(page, library, base_url):
    photo = library / "photos" / "photo07.png"
    expected = api_upload(base_url, "image", photo, kind="image", k=PAGE_K)["hits"]
    page.goto(search_url(kind="image"))
    expect(page.locator("#results > li.hit")).to_have_count(0)
    page.set_input_files("#file", photo)
    expect(page.locator("#summary")).to_have_text(f"Results for photo07.png: 1-{PAGE_K}")
    wait_for_ranks(page, 1, PAGE_K)
    first = page.locator("#results > li.hit").first
    assert Path(first.locator(".name").get_attribute("title")).resolve() == photo.resolve()
    assert first.locator(".name").inner_text() == "photo07.png"
    assert shown(page) == [(hit["id"], rank) for rank, hit in enumerate(expected, 1)]
    images = wait_for_images(page)
    assert all(image["width"] > 0 for image in images)


def test_audio_players_start_at_the_matched_window(page, base_url):
    """A sound's later window: found with "more like this" from another sound (the tiny random text tower
    ranks every sound's first window first), the page's player stands at that window once loaded."""
    sounds = api(base_url, q="a low hum", kind="audio", k=3)["hits"]
    chosen = None
    for sound in sounds:
        similar = api(base_url, like=sound["id"], kind="audio", k=PAGE_K)["hits"]
        if any(hit["start"] > 0 for hit in similar):
            chosen = sound["id"], similar
            break
    assert chosen is not None, f"no sound matches a later window of another one: {sounds}"
    like, expected = chosen
    page.goto(search_url(like=like, kind="audio"))
    wait_for_ranks(page, 1, len(expected))
    found = players(page)
    assert [(p["id"], p["start"]) for p in found] == [(hit["id"], pytest.approx(hit["start"])) for hit in expected]
    later = [p for p in found if p["start"] > 0]
    assert later and all(p["time"] == pytest.approx(p["start"], abs=0.05) for p in found), found
    assert all(p["duration"] > p["start"] for p in later)
    windows = page.eval_on_selector_all("#results .window", "spans => spans.map(s => s.textContent)")
    assert len(windows) == len(expected)
    # Where a browser ignores the #t= fragment, the script's startPlayers seeks: a player without one.
    target = later[0]
    page.evaluate("""([src, start]) => {
        const box = document.createElement("div");
        box.id = "bare";
        box.innerHTML = `<audio preload="metadata" src="${src}" data-start="${start}"></audio>`;
        document.body.append(box);
        startPlayers(box);
    }""", [target["src"].split("#")[0], target["start"]])
    page.wait_for_function("() => { const a = document.querySelector('#bare audio'); return a.readyState >= 1 "
                           "&& Math.abs(a.currentTime - parseFloat(a.dataset.start)) < 0.05; }", timeout=WAIT_MS)


def test_uploaded_sound_players_start_at_their_windows(page, library, base_url):
    """Hits rendered by the page's script (an uploaded long recording) also start at their windows."""
    sound = library / "sounds" / "long.wav"
    expected = api_upload(base_url, "audio", sound, kind="audio", k=PAGE_K)["hits"]
    page.goto(search_url(kind="audio"))
    page.set_input_files("#file", sound)
    expect(page.locator("#summary")).to_contain_text("Results for long.wav")
    wait_for_ranks(page, 1, len(expected))
    found = players(page)
    assert [(p["id"], p["start"]) for p in found] == [(hit["id"], pytest.approx(hit["start"])) for hit in expected]
    assert all(p["time"] == pytest.approx(p["start"], abs=0.05) for p in found), found
    assert Path(page.locator("#results .name").first.get_attribute("title")).name == "long.wav"


def test_more_like_this(page, base_url):
    page.goto(search_url(q=QUERY, kind="image"))
    wait_for_ranks(page, 1, PAGE_K)
    first = ids(page)[0]
    expected = api(base_url, like=first, kind="image", k=PAGE_K)["hits"]
    page.locator("#results > li.hit").first.locator("a.like").click()
    expect(page).to_have_url(re.compile(rf"/\?like={first}&kind=image$"))
    wait_for_ranks(page, 1, PAGE_K)
    assert first not in ids(page)
    assert ids(page) == [hit["id"] for hit in expected]
    expect(page.locator("#summary")).to_have_text(f"More like item {first}: 1-{PAGE_K}")
    assert all(image["width"] > 0 for image in wait_for_images(page))


def test_next_page_of_a_text_search(page, base_url):
    whole = [hit["id"] for hit in api(base_url, q=QUERY, kind="image", k=30)["hits"]]
    page.goto(search_url(q=QUERY, kind="image"))
    wait_for_ranks(page, 1, PAGE_K)
    first_page = ids(page)
    page.click("#next")
    expect(page).to_have_url(re.compile(r"[?&]cursor="))
    wait_for_ranks(page, PAGE_K + 1, 30 - PAGE_K)
    assert [rank for _, rank in shown(page)] == list(range(PAGE_K + 1, 31))
    second_page = ids(page)
    assert not set(first_page) & set(second_page)
    assert first_page + second_page == whole
    query = parse_qs(urlsplit(page.url).query)
    assert query["q"] == [QUERY] and query["kind"] == ["image"] and query["cursor"]
    expect(page.locator("#next")).to_have_count(0)  # the last page
    assert all(image["width"] > 0 for image in wait_for_images(page))


def test_next_page_of_an_uploaded_file(page, library, base_url):
    photo = library / "photos" / "big.jpg"
    whole = [hit["id"] for hit in api_upload(base_url, "image", photo, kind="image", k=30)["hits"]]
    page.goto(search_url(kind="image"))
    page.set_input_files("#file", photo)
    wait_for_ranks(page, 1, PAGE_K)
    first_page = ids(page)
    assert first_page == whole[:PAGE_K]
    page.click("#next")
    wait_for_ranks(page, PAGE_K + 1, 30 - PAGE_K)
    expect(page.locator("#summary")).to_have_text(f"Results for big.jpg: {PAGE_K + 1}-30")
    second_page = ids(page)
    assert [rank for _, rank in shown(page)] == list(range(PAGE_K + 1, 31))
    assert not set(first_page) & set(second_page) and first_page + second_page == whole
    expect(page.locator("#next")).to_have_count(0)


def test_reload_reproduces_the_results(page, browser, base_url):
    """The URL is the state: a reload, the same URL in a new context, and going back show the same hits."""
    page.goto(search_url(q=QUERY, kind="image"))
    wait_for_ranks(page, 1, PAGE_K)
    first_page = shown(page)
    page.click("#next")
    wait_for_ranks(page, PAGE_K + 1, 30 - PAGE_K)
    url, second_page, summary = page.url, shown(page), page.inner_text("#summary")
    page.reload()
    wait_for_ranks(page, PAGE_K + 1, 30 - PAGE_K)
    assert page.url == url and shown(page) == second_page and page.inner_text("#summary") == summary
    context, watch = _new_context(browser, base_url)
    try:
        other = context.new_page()
        other.goto(url)
        wait_for_ranks(other, PAGE_K + 1, 30 - PAGE_K)
        assert shown(other) == second_page
    finally:
        context.close()
    assert watch.errors == [] and watch.foreign(base_url) == []
    page.go_back()
    wait_for_ranks(page, 1, PAGE_K)
    assert shown(page) == first_page


def test_screenshot(page, tmp_path):
    page.goto(search_url(q=QUERY))
    wait_for_ranks(page, 1, PAGE_K)
    wait_for_images(page)
    page.evaluate("() => window.scrollTo(0, 0)")
    path = tmp_path / "results.png"
    page.screenshot(path=path, full_page=True)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    with Image.open(path) as shot:
        assert shot.width >= 1280 and shot.height >= 900
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 100  # thumbnails and text, not a blank page


def test_no_request_leaves_the_test_server(watched, library, base_url):
    """Text, more like this, audio and an upload: every request goes to the test server (no CDN)."""
    page, watch = watched
    page.goto(search_url(q=QUERY))
    wait_for_ranks(page, 1, PAGE_K)
    wait_for_images(page)
    page.locator("#results > li.hit").first.locator("a.like").click()
    wait_for_ranks(page, 1, PAGE_K)
    page.goto(search_url(q="a low hum", kind="audio"))
    players(page)
    page.set_input_files("#file", library / "photos" / "photo03.png")
    expect(page.locator("#summary")).to_contain_text("Results for photo03.png")
    page.locator("details#status summary").click()
    expect(page.locator("#status table")).to_be_visible()
    paths = {urlsplit(url).path for url in watch.requests}
    assert {"/", "/static/app.js", "/static/style.css"} <= paths
    assert any(re.fullmatch(r"/api/items/\d+/thumbnail", p) for p in paths)
    assert any(re.fullmatch(r"/api/items/\d+/file", p) for p in paths)
    assert "/api/search" in paths
    assert watch.foreign(base_url) == [], watch.foreign(base_url)


@pytest.mark.parametrize("params", [{"q": QUERY}, {"q": "a low hum", "kind": "audio"}, {"q": QUERY, "kind": "text"},
                                    {"q": QUERY, "kind": "image", "rerank": str(PAGE_K)}],
                         ids=["all", "audio", "text", "reranked"])
def test_script_renders_the_same_markup_as_the_server(page, params):
    """The hits ``static/app.js`` builds for a file query are the server's markup (same classes, links,
    players, passages): rendered here from the JSON API's answer to the page's own query."""
    page.goto(search_url(**params))
    served = page.eval_on_selector_all("#results > li.hit", "items => items.map(li => li.outerHTML)")
    assert served
    built = page.evaluate(
        """async (params) => {
             const response = await fetch(`/api/search?${new URLSearchParams({...params, k: 24})}`);
             const body = await response.json();
             return body.hits.map((hit, n) => hitNode(hit, n + 1, params.kind || "all").outerHTML);
           }""", params)
    assert built == served


def test_the_rerank_box_applies_where_it_can_and_shows_each_hits_match(page, base_url):
    """Enabled for a text query with kind image (not all, nor a text's passages); checked, the search's first
    page is re-ranked and each hit shows its match and cosine."""
    box = page.locator("input[name=rerank]")
    page.goto(search_url(q=QUERY))
    expect(box).to_be_disabled()
    expect(page.get_by_label(f"Re-rank top {PAGE_K}")).to_be_disabled()  # the label names the box
    page.select_option("select[name=kind]", "text")
    expect(box).to_be_disabled()  # a text's passages: not re-ranked
    page.fill("input[name=q]", "")
    expect(box).to_be_enabled()  # an image file may still come
    page.fill("input[name=q]", QUERY)
    page.select_option("select[name=kind]", "image")
    expect(box).to_be_enabled()
    box.check()
    page.click("#search button[type=submit]")
    expect(page).to_have_url(re.compile(rf"rerank={PAGE_K}"))
    expected = api(base_url, q=QUERY, kind="image", k=PAGE_K, rerank=PAGE_K)["hits"]
    wait_for_ranks(page, 1, PAGE_K)
    assert ids(page) == [hit["id"] for hit in expected]
    expect(page.locator("#summary")).to_have_text(f"Results: 1-{PAGE_K}, the first {PAGE_K} re-ranked")
    matches = page.eval_on_selector_all("#results .match", "spans => spans.map(s => s.textContent)")
    assert matches == [f"match {hit['match']:.2f} · cos {hit['score']:.2f} sum {hit['rerank_score']:.2f}"
                       for hit in expected]
    expect(box).to_be_checked()
    page.click("#next")
    wait_for_ranks(page, PAGE_K + 1, 30 - PAGE_K)
    assert page.locator("#results .match").count() == 0  # the hits after the re-ranked ones


def test_an_uploaded_image_reranks_passages(page, library, base_url):
    photo = library / "photos" / "photo03.png"
    expected = api_upload(base_url, "image", photo, kind="text", k=PAGE_K, rerank=PAGE_K)
    page.goto(search_url(kind="text"))
    page.locator("input[name=rerank]").check()
    page.set_input_files("#file", photo)
    expect(page.locator("#summary")).to_contain_text(f"Results for photo03.png: 1-{len(expected['hits'])}, the "
                                                     f"first {expected['reranked']} re-ranked")
    assert ids(page) == [hit["id"] for hit in expected["hits"]]
    built = page.eval_on_selector_all("#results > li.hit", "items => items.map(li => li.querySelector('.match')"
                                                           " && li.querySelector('.match').title)")
    assert built == [f"re-ranked: match {hit['match']:.4f} + cosine {hit['score']:.4f} = {hit['rerank_score']:.4f}"
                     for hit in expected["hits"]]


def test_video_hits_play_from_their_moment_in_server_and_script_markup(browser, tmp_path, tiny_clip, tiny_clap):
    """A store of its own with a video (a blue stretch from 6 s) and a sound: an uploaded blue picture finds
    the video's frame, the script's hit is the server's markup, and the page's player stands at the frame's
    moment once loaded."""
    root = tmp_path / "media"
    root.mkdir()
    write_test_video(root / "walk.mp4", seconds=12, colours=((0.0, (255, 0, 0)), (6.0, (0, 0, 255))))
    write_tone(root / "hum.wav", 4.0, 220.0)
    store = tmp_path / "store"
    with Engine.open(Settings.resolve(store=store, model=TINY, audio_model=TINY), create=True,
                     clip=tiny_clip, clap=tiny_clap) as engine:
        assert engine.index([root]).failed == ()
    blue = tmp_path / "blue.png"
    Image.new("RGB", (64, 48), (0, 0, 255)).save(blue)
    engine = open_engine(store, tiny_clip, tiny_clap)
    try:
        with running_server(create_app(engine), seconds=120) as url:
            expected = api_upload(url, "image", blue, kind="video", k=PAGE_K)["hits"]
            assert [hit["track"] for hit in expected] == ["image"] and expected[0]["start"] >= 6.0
            context, watch = _new_context(browser, url)
            page = context.new_page()
            page.goto(search_url(kind="video"))
            page.set_input_files("#file", blue)
            expect(page.locator("#summary")).to_contain_text("Results for blue.png")
            wait_for_ranks(page, 1, 1)
            player = page.locator("#results video")
            expect(player).to_have_attribute("data-start", f"{expected[0]['start']:g}")
            page.wait_for_function("() => { const v = document.querySelector('#results video'); return v.readyState"
                                   " >= 1 && Math.abs(v.currentTime - parseFloat(v.dataset.start)) < 0.05; }",
                                   timeout=WAIT_MS)
            start = expected[0]["start"]
            assert page.locator("#results .window").inner_text() == f"frame at {int(start // 60)}:{start % 60:04.1f}"
            page.goto(search_url(q="a walk", kind="video"))
            served = page.eval_on_selector_all("#results > li.hit", "items => items.map(li => li.outerHTML)")
            built = page.evaluate(
                """async () => {
                     const response = await fetch(`/api/search?${new URLSearchParams({q: "a walk", kind: "video", k: 24})}`);
                     const body = await response.json();
                     return body.hits.map((hit, n) => hitNode(hit, n + 1, "video").outerHTML);
                   }""")
            assert served and built == served and "<video" in served[0]
            context.close()
            assert watch.errors == [] and watch.foreign(url) == []
    finally:
        engine.close()
