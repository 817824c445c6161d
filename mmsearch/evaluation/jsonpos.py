"""Find the line of a value inside a JSON document, for error messages about single-record problems.

``json.loads`` forgets where things were. When a COCO or Karpathy file holds a bad record we walk the
text again, only then, with the decoder's ``raw_decode`` to skip whole values, and report the line on
which the offending object starts.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence

_WHITESPACE = re.compile(r"[ \t\n\r]*")


def json_line(text: str, where: Sequence[str | int]) -> int:
    """1-based line where the value at ``where`` (object keys and array indexes) starts in ``text``.

    Walks as deep as it can: if a step cannot be followed (wrong type, missing key, index past the
    end, malformed text) the line of the deepest value reached is returned, so the answer is always
    a line number and never an exception.
    """
    decoder = json.JSONDecoder()
    pos = _skip(text, 0)
    found = pos
    try:
        for step in where:
            target = _object_member(decoder, text, pos, step) if isinstance(step, str) else _array_element(decoder, text, pos, step)
            if target is None:
                break
            pos = found = target
    except (ValueError, IndexError):  # malformed text past the point already found
        pass
    return text.count("\n", 0, found) + 1


def _skip(text: str, pos: int) -> int:
    return _WHITESPACE.match(text, pos).end()


def _object_member(decoder: json.JSONDecoder, text: str, pos: int, key: str) -> int | None:
    """Offset of the value of ``key`` in the object starting at ``pos`` (the last one, as json does)."""
    if text[pos] != "{":
        return None
    target = None
    pos = _skip(text, pos + 1)
    while text[pos] != "}":
        name, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] != ":":
            raise ValueError("expected ':'")
        pos = _skip(text, pos + 1)
        if name == key:
            target = pos
        _, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return target


def _array_element(decoder: json.JSONDecoder, text: str, pos: int, index: int) -> int | None:
    """Offset of element ``index`` of the array starting at ``pos``."""
    if text[pos] != "[" or index < 0:
        return None
    pos = _skip(text, pos + 1)
    for _ in range(index):
        if text[pos] == "]":
            return None
        _, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return None if text[pos] == "]" else pos
