"""The web page at ``/``, rendered on the server: the search its URL names (``/?q=TEXT&kind=image``,
``&like=ID`` for "more like this", ``&cursor=`` for a next page) comes back as HTML with its hits in it,
so a link or a reload reproduces a search and the first results need no script (``&rerank=24`` re-ranks
its first page; the page asks with ``rerank_optional``, so a model that cannot be loaded is a note, not an
error). ``static/app.js`` adds what needs one: a dropped or picked image or audio file as the query (POST
/api/search), its pages, and the re-rank box enabled only where re-ranking applies."""
from __future__ import annotations

import os
from html import escape
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mmsearch.errors import MMSearchError
from mmsearch.search.queries import Query
from mmsearch.search.searcher import KINDS

from .errors import HTTPProblem, status_of, worded
from .paging import decode_cursor
from .params import number

router = APIRouter()
PAGE_K = 24
"""Hits per page on the web page."""
RERANK_HINT = ("Re-rank the first hits with an image-text matching model: the images of a text query (kind image), "
               "or the passages of an image file (kind text)")


def _seconds(value: float) -> str:
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)}:{seconds:04.1f}"


def hit_html(hit: dict, rank: int, kind: str) -> str:
    """One hit as the page shows it (``static/app.js`` builds the same markup for uploaded queries)."""
    item, name = hit["id"], os.path.basename(hit["path"])
    file_url = f"/api/items/{item}/file"
    if hit["modality"] == "image":
        body = (f'<a class="media" href="{file_url}"><img src="/api/items/{item}/thumbnail" alt="{escape(name)}" '
                f'loading="lazy"></a>')
    elif hit["modality"] in ("audio", "video"):
        start, end = hit.get("start") or 0.0, hit.get("end") or 0.0
        player, window = hit["modality"], f"{_seconds(start)} - {_seconds(end)}"
        if player == "video":  # starts at the matched frame, or the matched stretch of its soundtrack
            window = f"frame at {_seconds(start)}" if hit.get("track") == "image" else f"sound {window}"
        body = (f'<{player} controls preload="metadata" src="{file_url}#t={start:g}" data-start="{start:g}" '
                f'data-end="{end:g}"></{player}><span class="window">{window}</span>')
    else:
        body = f'<blockquote class="passage">{escape(hit.get("passage") or "")}</blockquote>'
        if hit.get("page") is not None:
            body += f'<span class="window">page {hit["page"]}</span>'
    like = "/?" + urlencode({"like": item, "kind": kind})
    match = ""
    if hit.get("rerank_score") is not None:  # re-ranked: the matching model's probability, then the cosine
        match = (f'<span class="match" title="re-ranked: match {hit["match"]:.4f} + cosine {hit["score"]:.4f} = '
                 f'{hit["rerank_score"]:.4f}">match {hit["match"]:.2f} · cos {hit["score"]:.2f} '
                 f'<small>sum {hit["rerank_score"]:.2f}</small></span>')
    return (f'<li class="hit hit-{hit["modality"]}" data-id="{item}" data-rank="{rank}">{body}'
            f'<div class="meta"><a class="name" href="{file_url}" title="{escape(hit["path"])}">{escape(name)}</a>'
            f'<span class="score" title="cosine {hit["score"]:.4f}, calibrated {hit["calibrated"]:.2f}">'
            f'{hit["score"]:.3f} <small>z {hit["calibrated"]:.2f}</small></span>{match}'
            f'<a class="like" href="{escape(like)}">More like this</a></div></li>')


def status_html(status: dict) -> str:
    counts = status.get("counts", {})
    summary = ", ".join(f"{counts.get(m, 0):,} {m if m == 'audio' else m + 's'}" for m in ("image", "text", "audio", "video"))
    rows = [("store", status.get("store", "")), ("model", status.get("model") or "(none yet)")]
    if status.get("audio_model"):
        rows.append(("audio model", status["audio_model"]))
    rows += [(f"{modality} index", described) for modality, described in status.get("index", {}).items()]
    rows += [("text queries", status.get("query_encoder", "-")), ("on disk", f"{status.get('bytes', 0) / 1e6:.1f} MB")]
    if status.get("server", {}).get("rerank_model"):
        rows.append(("re-ranking model", status["server"]["rerank_model"]))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    failed = status.get("failed", [])
    failures = ""
    if failed:
        items = "".join(f'<li><code>{escape(f["path"])}</code>: {escape(f["reason"])}</li>' for f in failed[:200])
        more = f"<li>and {len(failed) - 200} more</li>" if len(failed) > 200 else ""
        failures = f'<h3>{len(failed)} files failed</h3><ul class="failed">{items}{more}</ul>'
    return (f'<details id="status"><summary>Store: {summary}{f", {len(failed)} failed" if failed else ""}</summary>'
            f'<table>{table}</table>{failures}</details>')


def _form(q: str, kind: str, rerank: int) -> str:
    """The search form. Its re-rank box sends ``rerank`` (the first page's hits); the script enables it only
    where re-ranking applies: a text query with kind image, or an image file alone with kind text."""
    options = "".join(f'<option value="{k}"{" selected" if k == kind else ""}>{k}</option>' for k in KINDS)
    depth = rerank if rerank > 0 else PAGE_K
    return (f'<form id="search" method="get" action="/"><input type="search" name="q" value="{escape(q)}" '
            f'placeholder="Search images, text and sounds" aria-label="query" autofocus>'
            f'<select name="kind" aria-label="kind">{options}</select>'
            f'<label class="rerank" title="{RERANK_HINT}"><input type="checkbox" name="rerank" value="{depth}"'
            f'{" checked" if rerank > 0 else ""}>Re-rank top {depth}</label>'
            f'<label class="pick">Image or sound<input type="file" id="file" accept="image/*,audio/*"></label>'
            f'<button type="submit">Search</button></form>')


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def home(request: Request) -> HTMLResponse:
    served = request.app.state.served
    params = request.query_params
    q, kind, cursor, like = params.get("q", ""), params.get("kind", "all"), params.get("cursor"), params.get("like")
    kind = kind if kind in KINDS else "all"
    notice, hits, next_url, code, rerank = "", "", "", 200, 0
    try:
        rerank = number("rerank", params.get("rerank"), int, 0)
    except HTTPProblem as exc:
        notice, code = exc.message, exc.status
    if (q.strip() or like) and code == 200:
        try:
            liked = int(like) if like else None
            body = await served.call(served.search, Query(text=q or None, like=liked), kind=kind, k=PAGE_K,
                                     cursor=cursor, path=params.get("path") or None, rerank=rerank or None,
                                     rerank_optional=True)
        except ValueError:
            notice, code = "like: not an item id", 422
        except (MMSearchError, HTTPProblem) as exc:
            notice = worded(exc) if isinstance(exc, MMSearchError) else exc.message
            code = status_of(exc) if isinstance(exc, MMSearchError) else exc.status
        else:
            offset = decode_cursor(cursor).offset
            hits = "".join(hit_html(hit, offset + n + 1, kind) for n, hit in enumerate(body["hits"]))
            what = f"More like item {like}" if like else "Results"
            notice = f"{what}: {offset + 1}-{offset + len(body['hits'])}" if body["hits"] else "No hits"
            if body["hits"] and body["reranked"]:
                notice += f", the first {body['reranked']} re-ranked"
            if body["notes"]:
                notice += " (" + "; ".join(body["notes"]) + ")"
            if body["next"]:
                keep = {k: v for k, v in (("q", q), ("kind", kind), ("like", like), ("path", params.get("path")),
                                          ("rerank", rerank)) if v}
                next_url = "/?" + urlencode({**keep, "cursor": body["next"]})
    try:
        status = status_html(await served.call(served.status))
    except MMSearchError as exc:
        status = f'<p class="error">status unavailable: {escape(worded(exc))}</p>'
    pager = f'<nav id="pager"><a id="next" href="{escape(next_url)}">Next page</a></nav>' if next_url else \
        '<nav id="pager"></nav>'
    title = escape(q or (f"like {like}" if like else "mmsearch"))
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} - mmsearch</title>'
            f'<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css"><script src="/static/app.js" defer></script></head>'
            f'<body><header><a class="brand" href="/">mmsearch</a>{_form(q, kind, rerank)}</header>'
            f'<div id="drop" hidden>Drop an image or a sound to search with it</div><main>'
            f'<p id="summary" class="{"error" if code != 200 else ""}">{escape(notice)}</p>'
            f'<ol id="results" class="results">{hits}</ol>{pager}{status}</main></body></html>')
    return HTMLResponse(html, status_code=code)
