"""Pages of hits: a ``next`` cursor is the offset of the next page, opaque to clients (base64 of JSON)."""
from __future__ import annotations

import base64
import binascii
import json

from .errors import HTTPProblem

MAX_K = 100
"""Hits per page at most."""
MAX_DEPTH = 1000
"""How deep paging may go (offset + k): a deeper page costs a search as deep."""


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The offset a ``next`` cursor stands for; 422 for anything that is not one."""
    if not cursor:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = data["offset"]
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < MAX_DEPTH:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise HTTPProblem(422, "cursor: not a cursor this server gave (use the 'next' value of a search)") from None
