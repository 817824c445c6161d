"""The library's typed errors as HTTP responses: a status code and one JSON line, never a traceback."""
from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from mmsearch.errors import (DecodeError, ItemNotFoundError, MMSearchError, ModelLoadError, PathNotFoundError,
                             QueryError, StoreNotFoundError, UsageError)

log = logging.getLogger(__name__)

PARAMETER = {"text": "q", "path_glob": "path", "offset": "cursor", "rerank_optional": "rerank_optional=1",
             "rerank_model": "mmsearch serve --rerank-model"}
"""The library's setting names as the API's parameters (``{opt:text}`` in a message reads ``q``), or as the
server's option where a setting is the server's, not a request's."""
STATUS = ((ItemNotFoundError, 404), (PathNotFoundError, 404), (UsageError, 422), (QueryError, 422),
          (DecodeError, 422), (ModelLoadError, 503), (StoreNotFoundError, 503))


class HTTPProblem(Exception):
    """A request refused by the HTTP layer itself (bad cursor, upload too large...)."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def worded(exc: MMSearchError) -> str:
    return exc.worded(lambda name: PARAMETER.get(name, name))


def status_of(exc: MMSearchError) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def library_error(request: Request, exc: MMSearchError) -> JSONResponse:
    return problem(status_of(exc), worded(exc))


async def http_problem(request: Request, exc: HTTPProblem) -> JSONResponse:
    return problem(exc.status, exc.message)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s", request.url.path)
    return problem(500, f"internal error ({type(exc).__name__}); the server log has the details")
