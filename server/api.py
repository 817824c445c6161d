"""The JSON API under ``/api``: search (GET, or POST with uploaded files), items' thumbnails and files,
and the store's status. Items are named by catalog id only; a client never names a path."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Query as Param, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mmsearch.errors import ItemNotFoundError, MMSearchError
from mmsearch.media.thumbnails import DEFAULT_SIZE
from mmsearch.records import Modality
from mmsearch.search.queries import Query

from .errors import HTTPProblem, status_of, worded

router = APIRouter(prefix="/api")

K = Param(10, description="Hits per page (1-100).")
KIND = Param("all", description="image, text, audio or all (ranked by calibrated score).")
PATH = Param(None, description="Only files whose absolute path matches this glob (a relative one matches below "
                               "any folder).")
CURSOR = Param(None, description="The `next` value of the previous page.")
LIKE = Param(None, description="More like this: an indexed file's `id`; its stored vectors are the query (with `q`, "
                               "their mean), and it is left out of its own hits.")
UPLOAD_PARTS = {"image": Modality.IMAGE, "audio": Modality.AUDIO}
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}$")
MULTIPART = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {"q": {"type": "string"}, "kind": {"type": "string"}, "k": {"type": "integer"},
                   "path": {"type": "string"}, "cursor": {"type": "string"}, "like": {"type": "integer"},
                   "image": {"type": "string", "format": "binary"}, "audio": {"type": "string", "format": "binary"}}}}},
    "required": True}}


def served(request: Request):
    return request.app.state.served


@router.get("/search", summary="Search with text and/or an indexed file's id")
def search(request: Request, q: Optional[str] = Param(None, description="Text to search for."), kind: str = KIND,
           k: int = K, path: Optional[str] = PATH, cursor: Optional[str] = CURSOR, like: Optional[int] = LIKE) -> dict:
    """`{"hits": [...], "next": cursor or null, "notes": [...]}`; each hit: `id`, `path`, `modality`, `score`,
    `calibrated`, and `passage` (text) or `start`/`end` seconds (audio)."""
    return served(request).search(Query(text=q, like=like), kind=kind, k=k, path=path, cursor=cursor)


@router.post("/search", summary="Search with uploaded image/audio files (and text)", openapi_extra=MULTIPART)
async def search_upload(request: Request) -> JSONResponse:
    """Multipart form: `image` and/or `audio` files, and the fields of GET /api/search (`q`, `kind`, `k`,
    `path`, `cursor`, `like`). Uploads are decoded as indexing decodes files; the size limit is the
    server's `--max-upload-mb` (default 25 MiB, all parts together)."""
    form = await request.form(max_files=2, max_fields=10)
    with tempfile.TemporaryDirectory(prefix="mmsearch-upload-") as folder:
        files, names = {}, {}
        for part in UPLOAD_PARTS:
            upload = form.get(part)
            if upload is None or isinstance(upload, str):
                if upload:
                    raise HTTPProblem(422, f"{part}: send a file, not a text field")
                continue
            name = os.path.basename(upload.filename or part)
            target = Path(folder) / (part + (_SUFFIX.search(name).group(0).lower() if _SUFFIX.search(name) else ""))
            with open(target, "wb") as out:
                while chunk := await upload.read(1 << 20):
                    out.write(chunk)
            if not target.stat().st_size:
                raise HTTPProblem(422, f"{part} upload {name!r} is empty")
            files[part], names[str(target)] = target, f"upload {name!r}"
        fields = {key: form.get(key) for key in ("q", "kind", "k", "path", "cursor", "like")}
        for key, value in fields.items():
            if value is not None and not isinstance(value, str):
                raise HTTPProblem(422, f"{key}: a text field, not a file")
        query = Query(text=fields["q"] or None, image=files.get("image"), audio=files.get("audio"),
                      like=_integer("like", fields["like"]))
        try:
            body = await run_in_threadpool(served(request).search, query, kind=fields["kind"] or "all",
                                           k=_integer("k", fields["k"]) or 10, path=fields["path"],
                                           cursor=fields["cursor"])
        except MMSearchError as exc:
            message = worded(exc)
            for temporary, name in names.items():
                message = message.replace(temporary, name)
            raise HTTPProblem(status_of(exc), message) from None
    return JSONResponse(body)


def _integer(name: str, value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise HTTPProblem(422, f"{name}: not a whole number: {value[:40]!r}") from None


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
def status(request: Request) -> dict:
    return served(request).status()
