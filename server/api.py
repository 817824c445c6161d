"""The JSON API under ``/api``: search (GET, or POST with uploaded files), items' thumbnails and files,
and the store's status. Items are named by catalog id only; a client never names a path."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import List, Optional

from fastapi import APIRouter, Query as Param, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from mmsearch.errors import ItemNotFoundError, MMSearchError
from mmsearch.media.thumbnails import DEFAULT_SIZE
from mmsearch.records import Modality
from mmsearch.search.queries import Part

from .errors import HTTPProblem, status_of, worded
from .paging import MAX_RERANK
from .params import FIELDS, read_search

router = APIRouter(prefix="/api")

K = Param(10, description="Hits per page (1-100).")
KIND = Param("all", description="image, text, audio, video or all (ranked by calibrated score).")
PATH = Param(None, description="Only files whose absolute path matches this glob (a relative one matches below "
                               "any folder).")
CURSOR = Param(None, description="The `next` value of the previous page.")
TEXTS = Param([], description="Text parts, `VALUE[:WEIGHT]` (repeat the parameter for more; a negative weight "
                               "means less of it).")
LIKES = Param([], description="More like this: indexed files as parts, `ID[:WEIGHT]` (repeatable); their stored "
                              "vectors are the query, and they are left out of the hits.")
FUSION = Param("auto", description="auto, early, rrf or score: how several parts are put together (README).")
RERANK = Param(None, description=f"Re-rank the first N hits (0-{MAX_RERANK}; 0: none) with an image-text matching "
                                 "model (cross-attention, BLIP): a text query's image hits (`kind=image`), or an "
                                 "uploaded image's passages (`kind=text`). Each re-ranked hit gets `match` (the "
                                 "model's probability that query and hit match, 0-1) and `rerank_score` (`match` + "
                                 "`score`), which orders them; the hits after them follow in their search order. A "
                                 "`next` cursor keeps it. The model (the server's `--rerank-model`) loads on the "
                                 "first re-ranked search, in seconds; one that cannot be loaded answers 503.")
RERANK_OPTIONAL = Param(None, description="1 or true: if the re-ranking model cannot be loaded, answer without "
                                          "re-ranking, with a note saying why, instead of 503.")
UPLOAD_PARTS = ("image", "audio")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}$")
MAX_FILES = 8
_FIELD_SCHEMA = {**{name: {"type": "string"} for name in FIELDS}, "rerank": {"type": "integer"},
                 "rerank_optional": {"type": "boolean"}}
MULTIPART = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {**_FIELD_SCHEMA, "image": {"type": "string", "format": "binary"},
                   "audio": {"type": "string", "format": "binary"},
                   "image_weight": {"type": "number"}, "audio_weight": {"type": "number"}}}}},
    "required": True}}


def served(request: Request):
    return request.app.state.served


@router.get("/search", summary="Search with text, indexed files' ids, or both")
async def search(request: Request, q: Optional[str] = Param(None, description="Text to search for (weight 1)."),
           text: List[str] = TEXTS, like: List[str] = LIKES, kind: str = KIND, k: int = K, path: Optional[str] = PATH,
           cursor: Optional[str] = CURSOR, fusion: str = FUSION, rrf_k: Optional[float] = None,
           cutoff: Optional[str] = Param(None, description="auto: drop the hits after the largest drop in score."),
           min_score: Optional[float] = Param(None, description="Drop hits whose calibrated (or fused) score is "
                                                                 "below this."),
           modified_after: Optional[str] = None, modified_before: Optional[str] = None,
           min_duration: Optional[float] = None, max_duration: Optional[float] = None,
           rerank: Optional[int] = RERANK, rerank_optional: Optional[bool] = RERANK_OPTIONAL) -> dict:
    """`{"hits": [...], "next": cursor or null, "notes": [...], "cut": n, "fusion": method or null,
    "reranked": n}`; each hit: `id`, `path`, `modality`, `score`, `calibrated`, `passage` (text) or
    `start`/`end` seconds (audio), for a query of several parts `parts` (each part's cosine to it, null where
    it did not reach it), and for a re-ranked hit `match` and `rerank_score`. `reranked`: how many of the
    search's first hits were re-ranked (`rerank`; 0 when none were, e.g. the model could not be loaded and
    `rerank_optional` was given: then a note says why)."""
    query, options = read_search(request.query_params.getlist)
    return await served(request).call(served(request).search, query, **options)


@router.post("/search", summary="Search with uploaded image/audio files (and text, indexed files)",
             openapi_extra=MULTIPART)
async def search_upload(request: Request) -> JSONResponse:
    """Multipart form: `image` and/or `audio` files (repeatable; `image_weight`/`audio_weight` fields give
    their weights in the same order), and the fields of GET /api/search. Uploads are decoded as indexing
    decodes files; the size limit is the server's `--max-upload-mb` (default 25 MiB, all parts together).
    One uploaded image with `kind=text` and `rerank=N` re-ranks the first N passages (hits get `match` and
    `rerank_score`, as with GET)."""
    form = await request.form(max_files=MAX_FILES, max_fields=40)
    for key, value in form.multi_items():
        if key not in UPLOAD_PARTS and not isinstance(value, str):
            raise HTTPProblem(422, f"{key}: a text field, not a file")
    with tempfile.TemporaryDirectory(prefix="mmsearch-upload-") as folder:
        uploaded, names = [], {}
        for part in UPLOAD_PARTS:
            weights = form.getlist(f"{part}_weight")
            for n, upload in enumerate(form.getlist(part)):
                if isinstance(upload, str):
                    raise HTTPProblem(422, f"{part}: send a file, not a text field")
                name = os.path.basename(upload.filename or part)
                suffix = _SUFFIX.search(name)
                target = Path(folder) / f"{part}{n}{suffix.group(0).lower() if suffix else ''}"
                with open(target, "wb") as out:
                    while chunk := await upload.read(1 << 20):
                        out.write(chunk)
                if not target.stat().st_size:
                    raise HTTPProblem(422, f"{part} upload {name!r} is empty")
                weight = _weight(f"{part}_weight", weights[n]) if n < len(weights) else 1.0
                uploaded.append(Part(part, target, weight))
                names[str(target)] = f"upload {name!r}"
        try:
            query, options = read_search(lambda key: [str(v) for v in form.getlist(key)], tuple(uploaded))
            body = await served(request).call(served(request).search, query, **options)
        except MMSearchError as exc:
            message = worded(exc)
            for temporary, name in names.items():
                message = message.replace(temporary, name)
            raise HTTPProblem(status_of(exc), message) from None
    return JSONResponse(body)


def _weight(name: str, value: str) -> float:
    try:
        weight = float(value)
    except ValueError:
        raise HTTPProblem(422, f"{name}: not a number: {value[:40]!r}") from None
    if weight != weight or weight in (float("inf"), float("-inf")):
        raise HTTPProblem(422, f"{name}: must be a finite number")
    return weight


def _item_id(text: str) -> int:
    """A path's item id; anything but a plain decimal number names no item (404, like an unknown id)."""
    if not text.isdigit() or not text.isascii() or len(text) > 18:
        raise ItemNotFoundError(text)  # type: ignore[arg-type]
    return int(text)


@router.get("/items/{item_id}", summary="An indexed file's record")
def item(request: Request, item_id: str) -> dict:
    found = served(request).engine.item_file(_item_id(item_id))
    return {"id": found.id, "path": found.catalog_path, "modality": found.modality.value, "size": found.size,
            "media_type": found.media_type, "file": f"/api/items/{found.id}/file",
            "thumbnail": f"/api/items/{found.id}/thumbnail" if found.modality == Modality.IMAGE else None}


@router.get("/items/{item_id}/thumbnail", summary="A JPEG thumbnail of an indexed image (cached)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def thumbnail(request: Request, item_id: str,
              size: int = Param(DEFAULT_SIZE, description="Longest side: 128, 256 or 512.")) -> Response:
    engine = served(request).engine
    data = engine.thumbnail(_item_id(item_id), size)
    return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=300"})


@router.get("/items/{item_id}/file", summary="The indexed file itself (HTTP Range supported)",
            response_class=FileResponse)
def item_file(request: Request, item_id: str) -> FileResponse:
    """Only files the catalog holds as indexed and still under an indexed folder (symlinks resolved)."""
    found = served(request).engine.item_file(_item_id(item_id))
    media_type = found.media_type
    if not media_type.startswith(("image/", "audio/", "video/")) or "svg" in media_type:
        media_type = "text/plain; charset=utf-8"  # never HTML or script from an indexed file, on this origin
    return FileResponse(found.path, media_type=media_type, filename=found.path.name, content_disposition_type="inline",
                        headers={"content-security-policy": "sandbox; default-src 'none'; img-src 'self'; "
                                                            "media-src 'self'", "cache-control": "private, max-age=0"})


@router.get("/status", summary="What the store holds: counts, models, index types, failed files")
async def status(request: Request) -> dict:
    return await served(request).call(served(request).status)
