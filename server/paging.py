"""Pages of hits: a ``next`` cursor is where the next page starts, opaque to clients (base64 of JSON): the
offset, and for a re-ranked search its ``rerank`` depth (and ``rerank_optional``), so that the next page
continues the same re-ranked list even when the client sends only the query and the cursor."""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from .errors import HTTPProblem

MAX_K = 100
"""Hits per page at most."""
MAX_DEPTH = 1000
"""How deep paging may go (offset + k): a deeper page costs a search as deep."""
MAX_RERANK = 100
"""Hits one search may re-rank at most: each is a run of the matching model (the vision tower too, for an
image not seen before), and a search holds the engine while it runs."""
_NOT_OURS = "cursor: not a cursor this server gave (use the 'next' value of a search)"


@dataclass(frozen=True)
class Cursor:
    """Where a page starts, and the re-ranking of the list it is a page of."""

    offset: int = 0
    rerank: int = 0
    rerank_optional: bool = False


def encode_cursor(cursor: Cursor) -> str:
    data: dict = {"offset": cursor.offset}
    if cursor.rerank:
        data["rerank"] = cursor.rerank
        if cursor.rerank_optional:
            data["rerank_optional"] = True
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Cursor:
    """What a ``next`` cursor stands for; 422 for anything that is not one."""
    if not cursor:
        return Cursor()
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset, rerank, optional = data["offset"], data.get("rerank", 0), data.get("rerank_optional", False)
        if not _whole(offset, MAX_DEPTH) or not _whole(rerank, MAX_RERANK + 1) or not isinstance(optional, bool):
            raise ValueError
        return Cursor(offset, rerank, optional)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError):
        raise HTTPProblem(422, _NOT_OURS) from None


def _whole(value, below: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < below


def requested_page(cursor: str | None, rerank: int | None, rerank_optional: bool | None) -> Cursor:
    """The page a request asks for: where its ``cursor`` starts, re-ranked as the request says or, where it
    does not say, as its cursor's search was. A cursor of a search re-ranked to another depth is refused:
    its offset counts hits of another list."""
    page = decode_cursor(cursor)
    if rerank is None:
        rerank = page.rerank
    elif cursor and rerank != page.rerank:
        raise HTTPProblem(422, f"cursor: it continues a search with rerank={page.rerank}, not rerank={rerank}; send "
                               "the same rerank with it, or leave the cursor out to start again")
    if not 0 <= rerank <= MAX_RERANK:
        raise HTTPProblem(422, f"rerank: must be between 0 and {MAX_RERANK}, not {rerank}")
    optional = page.rerank_optional if rerank_optional is None else rerank_optional
    return Cursor(page.offset, rerank, optional and rerank > 0)
