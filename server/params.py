"""A search's parameters, read alike from a query string (GET) and from form fields (POST): the parts
(``q``, repeatable ``text`` and ``like`` as ``VALUE[:WEIGHT]``), the fusion, the cut-off, the filters, the
re-ranking (``rerank``, ``rerank_optional``)."""
from __future__ import annotations

from typing import Callable

from mmsearch.search.filters import Filters, parse_time
from mmsearch.search.fusion import RRF_K
from mmsearch.search.queries import Part, Query, parse_part

from .errors import HTTPProblem

FIELDS = ("q", "text", "like", "kind", "k", "path", "cursor", "fusion", "rrf_k", "cutoff", "min_score",
          "modified_after", "modified_before", "min_duration", "max_duration", "rerank", "rerank_optional")
TRUE, FALSE = ("1", "true", "t", "yes", "y", "on"), ("0", "false", "f", "no", "n", "off")
"""The spellings of a yes/no parameter: those FastAPI (pydantic) reads as a bool, so GET and POST agree."""


def number(name: str, value: str | None, kind=float, default=None):
    """``value`` as a ``kind`` (float or int), ``default`` when not given; else a 422 naming ``name``."""
    if value in (None, ""):
        return default
    try:
        return kind(value)
    except ValueError:
        raise HTTPProblem(422, f"{name}: not a {'whole ' if kind is int else ''}number: {value[:40]!r}") from None


def _flag(name: str, value: str | None) -> bool | None:
    if value in (None, ""):
        return None
    if value.lower() in TRUE + FALSE:
        return value.lower() in TRUE
    raise HTTPProblem(422, f"{name}: 1 or 0 (true or false), not {value[:40]!r}")


def read_search(values: Callable[[str], list[str]], uploaded: tuple[Part, ...] = ()) -> tuple[Query, dict]:
    """(the query, ``Served.search``'s options) from ``values(name)`` -> the strings given for ``name``.
    ``rerank`` and ``rerank_optional`` are None where not given (a cursor may then carry them)."""
    def first(name: str) -> str | None:
        found = values(name)
        return found[0] if found else None

    parts = tuple(parse_part(kind, spec) for kind in ("text", "like") for spec in values(kind)) + tuple(uploaded)
    when = {name: parse_time(first(name), name) if first(name) else None for name in ("modified_after", "modified_before")}
    filters = Filters(path_glob=first("path") or None, min_duration=number("min_duration", first("min_duration")),
                      max_duration=number("max_duration", first("max_duration")), **when)
    options = dict(kind=first("kind") or "all", k=number("k", first("k"), int, 10), cursor=first("cursor"),
                   fusion=first("fusion") or "auto", rrf_k=number("rrf_k", first("rrf_k"), float, RRF_K),
                   cutoff=first("cutoff") or None, min_score=number("min_score", first("min_score")), filters=filters,
                   rerank=number("rerank", first("rerank"), int),
                   rerank_optional=_flag("rerank_optional", first("rerank_optional")))
    return Query(text=first("q") or None, parts=parts), options
