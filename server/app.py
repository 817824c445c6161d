"""The FastAPI application around one open ``Engine``: ``create_app(engine, token=..., max_upload=...)``.

One engine serves every request. Searches (and ``status``, which loads indexes) take one lock: the
engine's caches are not for two threads at once, and on a few cores a query at a time is as fast.
Thumbnails and files are read outside it. The engine notices what another process indexed meanwhile
(``Store.catch_up``) at each search; the status is cached until the catalog changes.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmsearch.encoders.exported import WARM_AFTER
from mmsearch.engine import Engine
from mmsearch.errors import MMSearchError
from mmsearch.search.queries import Query

from . import api, page
from .errors import HTTPProblem, http_problem, library_error, problem, unexpected
from .guard import DEFAULT_MAX_UPLOAD, Guard
from .paging import MAX_DEPTH, MAX_K, MAX_RERANK, encode_cursor, requested_page

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                               "object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class Served:
    """What the endpoints share: the engine, its lock, the limits, the cached status."""

    def __init__(self, engine: Engine, *, token: str | None, max_upload: int):
        self.engine, self.token, self.max_upload = engine, token, max_upload
        self.lock = threading.Lock()
        self._status: tuple[int, dict] | None = None
        self._one_at_a_time = None

    async def call(self, function, *args, **kwargs):
        """``function`` (a search, the status) on a worker thread, one at a time: requests waiting their turn
        hold no thread of the pool that file and thumbnail requests are served from (with every pool thread
        waiting for the engine lock, a 1 KiB range request took 763 ms among 60 searching clients, 12 ms
        without)."""
        if self._one_at_a_time is None:  # made in the event loop
            self._one_at_a_time = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(partial(function, *args, **kwargs), limiter=self._one_at_a_time)

    def search(self, query: Query, *, kind: str = "all", k: int = 10, path: str | None = None,
               cursor: str | None = None, rerank: int | None = None, rerank_optional: bool | None = None,
               **options) -> dict:
        """One page of hits as the API answers it: ``{"hits": [...], "next": cursor or null, "notes": [...],
        "cut": n, "fusion": method or null, "reranked": n}``; ``options``: ``Engine.search``'s fusion, cut-off
        and filters. ``rerank``/``rerank_optional`` not given: the cursor's (``paging.requested_page``)."""
        page = requested_page(cursor, rerank, rerank_optional)
        if not 1 <= k <= MAX_K:
            raise HTTPProblem(422, f"k: must be between 1 and {MAX_K}, not {k}")
        if page.offset + k > MAX_DEPTH:
            raise HTTPProblem(422, f"cursor: pages end at the {MAX_DEPTH}th hit")
        with self.lock:
            result = self.engine.search(query, kind=kind, k=k, path_glob=path or None, offset=page.offset,
                                        rerank=page.rerank, rerank_optional=page.rerank_optional, **options)
        more = result.more and page.offset + 2 * k <= MAX_DEPTH
        following = replace(page, offset=page.offset + k)  # the same re-ranked list, further on
        return {"hits": [hit.as_json() for hit in result.hits], "next": encode_cursor(following) if more else None,
                "notes": list(result.notes), "cut": result.cut, "fusion": result.fusion, "reranked": result.reranked}

    def status(self) -> dict:
        """``Engine.status`` as JSON, made again only when the catalog has changed."""
        marker = self.engine.store.catalog.change_marker()
        if self._status is None or self._status[0] != marker:
            with self.lock:
                data = self.engine.status().as_json()
            data["server"] = {"token_required": self.token is not None, "max_upload_bytes": self.max_upload,
                              "max_k": MAX_K, "max_rerank": MAX_RERANK,
                              "rerank_model": self.engine.settings.rerank_model}
            self._status = (marker, data)
        return self._status[1]

    def warm(self) -> None:
        """Load what the first queries need (the query towers, the indexes, the calibration samples) now,
        so that the first user's search is as fast as the rest: a few searches, until the text tower has
        moved to the session a long-lived process gets (``encoders.exported.WarmingSession``)."""
        counts = self.engine.store.catalog.counts()[0]
        if not any(counts.values()):
            return
        try:
            for n in range(WARM_AFTER + 1):
                self.search(Query(text=f"a photo {n}"), k=1)
            if counts.get("image") or counts.get("text"):  # the image tower too, for uploaded images
                self.engine.towers.clip(Query(image=Path("warm-up")), [])
                text = self.engine.towers.clip(Query(text="warm-up"), [])
                warming = getattr(getattr(text, "_session", None), "warming", None)
                if warming is not None:
                    warming.join(timeout=60)
        except MMSearchError as exc:
            log.warning("warm-up failed: %s", exc)


def create_app(engine: Engine, *, token: str | None = None, max_upload: int = DEFAULT_MAX_UPLOAD):
    """The ASGI application serving ``engine``'s store (wrapped in the token and upload-size guard)."""
    app = FastAPI(title="mmsearch", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Cross-modal search over a local mmsearch store: text, image and audio queries, "
                              "thumbnails and files of the hits. Errors are `{\"error\": message}`.")
    app.state.served = Served(engine, token=token, max_upload=max_upload)
    app.add_exception_handler(MMSearchError, library_error)
    app.add_exception_handler(HTTPProblem, http_problem)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, unexpected)
    app.include_router(api.router)
    app.include_router(page.router)
    _mount_docs(app)  # before /static, which would otherwise answer for /static/swagger
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    return Guard(app, token=token, max_upload=max_upload, headers=SECURITY_HEADERS)


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the files of ``swagger-ui-bundle`` (shipped, not fetched from a CDN)."""
    try:
        import swagger_ui_bundle
    except ImportError:  # pragma: no cover - a dependency; /openapi.json still answers
        return
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="mmsearch API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")


async def _invalid(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    return problem(422, f"{where}: {first.get('msg', 'invalid')}")


async def _http_exception(request: Request, exc: StarletteHTTPException):
    message = "not found" if exc.status_code == 404 else str(exc.detail)
    return problem(exc.status_code, message)
