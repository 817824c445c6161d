"""A bounded load test of the real server (uvicorn on 127.0.0.1): 16 clients at once, each with its own
keep-alive connection, mixing text searches, thumbnails (made for the first time while other clients ask
for the same ones) and byte ranges of files. The outcome is fixed: every client makes the same requests
every run, and every answer must be what one client alone gets (searches), the thumbnail Pillow makes
(thumbnails) and the exact slice of the file (ranges). Throughput and latency are printed, never asserted.
"""
from __future__ import annotations

import io
import statistics
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import WORDS
from serving import running_server

from mmsearch.media.thumbnails import THUMBNAILS, make_thumbnail
from mmsearch.records import Modality
from mmsearch.search.queries import Query

CLIENTS = 16
ROUNDS = 4
"""Each client asks ROUNDS x (a search, a thumbnail, a range): 16 x 12 = 192 requests in all."""
KINDS = ("all", "image", "text", "audio")
SIZES = (128, 256, 512)


def plan(client: int, images: list[int], files: list[tuple[int, int]]) -> list[tuple]:
    """The requests of client ``client``, in order: ("search", params), ("thumbnail", id, size) or
    ("range", id, header, first, last). The same every run (seeded)."""
    rng = np.random.default_rng(1000 + client)
    steps: list[tuple] = []
    for round_ in range(ROUNDS):
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        steps.append(("search", {"q": words, "kind": KINDS[(client + round_) % len(KINDS)],
                                 "k": int(rng.integers(1, 13))}))
        # few distinct thumbnails, so that several clients make the same one at the same time
        steps.append(("thumbnail", images[(client + round_) % 6], SIZES[round_ % len(SIZES)]))
        item_id, size = files[int(rng.integers(len(files)))]
        form = (client + round_) % 3
        if form == 0:  # bytes=a-b
            first = int(rng.integers(size))
            last = min(size - 1, first + int(rng.integers(1, 64 * 1024)))
            header = f"bytes={first}-{last}"
        elif form == 1:  # bytes=a- (to the end)
            first, last = int(rng.integers(size)), size - 1
            header = f"bytes={first}-"
        else:  # bytes=-n (the last n bytes)
            n = int(rng.integers(1, min(size, 4096) + 1))
            first, last = size - n, size - 1
            header = f"bytes=-{n}"
        steps.append(("range", item_id, header, first, last))
    order = rng.permutation(len(steps))
    return [steps[i] for i in order]


def settle(engine) -> None:
    """Ask enough queries that the exported text towers switch to their prepacked sessions, and wait for
    the switch: from then on every query runs the same session, so one client alone and sixteen at once
    must get the same scores."""
    from mmsearch.encoders.exported import WARM_AFTER

    for i in range(WARM_AFTER + 1):
        engine.search(Query(text=f"settle {i}"), kind="all", k=1)
    probe = Query(text="settle")
    for encoder in (engine.towers.clip(probe, []), engine.towers.clap(probe, [])):
        warming = getattr(getattr(encoder, "_session", None), "warming", None)
        if warming is not None:
            warming.join()


def same_page(got: dict, want: dict) -> str:
    """'' when ``got`` is the page ``want`` (the same hits in the same order, the same cursor and notes;
    scores equal to 1e-5), else what differs."""
    if got.keys() != want.keys() or got["next"] != want["next"] or got["notes"] != want["notes"]:
        return f"other page: {str(got)[:200]}"
    if [h["id"] for h in got["hits"]] != [h["id"] for h in want["hits"]]:
        return f"other hits: {[h['id'] for h in got['hits']]} != {[h['id'] for h in want['hits']]}"
    for a, b in zip(got["hits"], want["hits"]):
        for key in a.keys() | b.keys():
            x, y = a.get(key), b.get(key)
            if isinstance(x, float) and isinstance(y, float) and abs(x - y) <= 1e-5:
                continue
            if x != y:
                return f"hit {a.get('id')}: {key} {x!r} != {y!r}"
    return ""


def test_sixteen_clients_at_once_get_exactly_what_one_alone_gets(engine, served_store):
    from mmsearch_server.app import create_app

    items = sorted(engine.store.catalog.all_items().values(), key=lambda row: row.id)
    images = [row.id for row in items if row.modality == Modality.IMAGE]
    big = next(row.id for row in items if row.path.endswith("big.jpg"))
    images = [big] + [i for i in images if i != big]  # the 1600x1200 JPEG among the thumbnails asked for
    files = [(row.id, row.size) for row in items]
    contents = {row.id: Path(row.path).read_bytes() for row in items}
    plans = [plan(c, images, files) for c in range(CLIENTS)]
    asked = {(step[1], step[2]) for steps in plans for step in steps if step[0] == "thumbnail"}
    expected_thumbnails = {(item_id, size): make_thumbnail(engine.item_file(item_id), size) for item_id, size in asked}
    thumbnails = served_store / THUMBNAILS
    for old in thumbnails.glob("*") if thumbnails.is_dir() else ():
        old.unlink()  # cache empty: the first requests make them, several clients at once

    app = create_app(engine)
    app.app.state.served.warm()
    settle(engine)
    searches = {tuple(sorted(step[1].items())) for steps in plans for step in steps if step[0] == "search"}
    with running_server(app) as base:
        with httpx.Client(base_url=base, timeout=60) as alone:  # what one client alone gets
            expected_searches = {}
            for params in sorted(searches):
                response = alone.get("/api/search", params=dict(params))
                assert response.status_code == 200, response.text
                expected_searches[params] = response.json()
        for params, body in list(expected_searches.items())[:6]:  # and that is the library's ranking
            want = engine.search(Query(text=dict(params)["q"]), kind=dict(params)["kind"], k=dict(params)["k"]).hits
            assert [h["id"] for h in body["hits"]] == [h.item_id for h in want]

        start = threading.Barrier(CLIENTS)
        errors: list[str] = []
        made = [0] * CLIENTS
        latencies: list[float] = []
        lock = threading.Lock()

        def run(client: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                start.wait()
                for step in plans[client]:
                    tick = time.perf_counter()
                    try:
                        problem = ask(http, step)
                    except Exception as exc:  # noqa: BLE001 - a transport error is an error like any other
                        problem = f"{type(exc).__name__}: {exc}"
                    elapsed = time.perf_counter() - tick
                    with lock:
                        made[client] += 1
                        latencies.append(elapsed)
                        if problem:
                            errors.append(f"client {client} {step[:3]}: {problem}")

        def ask(http: httpx.Client, step: tuple) -> str:
            if step[0] == "search":
                response = http.get("/api/search", params=step[1])
                if response.status_code != 200:
                    return f"{response.status_code} {response.text[:200]}"
                return same_page(response.json(), expected_searches[tuple(sorted(step[1].items()))])
            if step[0] == "thumbnail":
                _, item_id, size = step
                response = http.get(f"/api/items/{item_id}/thumbnail", params={"size": size})
                if response.status_code != 200 or response.headers["content-type"] != "image/jpeg":
                    return f"{response.status_code} {response.headers.get('content-type')} {response.text[:200]}"
                return "" if response.content == expected_thumbnails[item_id, size] else "other thumbnail bytes"
            _, item_id, header, first, last = step
            response = http.get(f"/api/items/{item_id}/file", headers={"Range": header})
            if response.status_code != 206:
                return f"{response.status_code} (wanted 206) {response.text[:200]}"
            total = len(contents[item_id])
            if response.headers.get("content-range") != f"bytes {first}-{last}/{total}":
                return f"content-range {response.headers.get('content-range')!r}, wanted {first}-{last}/{total}"
            return "" if response.content == contents[item_id][first:last + 1] else "other bytes"

        threads = [threading.Thread(target=run, args=(c,), name=f"load-client-{c}") for c in range(CLIENTS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        wall = time.perf_counter() - started
        assert not any(thread.is_alive() for thread in threads), "a client never finished"

    assert errors == [], errors[:10]
    assert made == [3 * ROUNDS] * CLIENTS
    assert len(latencies) == CLIENTS * 3 * ROUNDS
    made_once = sorted(path.name for path in thumbnails.iterdir())
    assert len(made_once) == len(expected_thumbnails) and not [n for n in made_once if not n.endswith(".jpg")], made_once
    for (item_id, size), data in expected_thumbnails.items():
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and max(image.size) <= size
    ordered = sorted(latencies)
    print(f"\nload: {CLIENTS} clients, {len(latencies)} requests in {wall:.2f} s = {len(latencies) / wall:.0f} "
          f"requests/s; p50 {statistics.median(ordered) * 1e3:.1f} ms, "
          f"p99 {ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3:.1f} ms")


@pytest.mark.parametrize("header", ["bytes=0-0", "bytes=-1"])
def test_a_one_byte_range_is_one_byte(engine, header):
    """The smallest ranges, at both ends of a file (what a player's probing asks for)."""
    from mmsearch_server.app import create_app

    row = next(row for row in engine.store.catalog.all_items().values() if row.modality == Modality.AUDIO)
    data = Path(row.path).read_bytes()
    with running_server(create_app(engine)) as base, httpx.Client(base_url=base, timeout=30) as http:
        response = http.get(f"/api/items/{row.id}/file", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == (data[:1] if header == "bytes=0-0" else data[-1:])
