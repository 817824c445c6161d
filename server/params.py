"""A search's parameters, read alike from a query string (GET) and from form fields (POST): the parts
(``q``, repeatable ``text`` and ``like`` as ``VALUE[:WEIGHT]``), the fusion, the cut-off, the filters."""
from __future__ import annotations

from typing import Callable

from mmsearch.search.filters import Filters, parse_time
from mmsearch.search.fusion import RRF_K
from mmsearch.search.queries import Part, Query, parse_part

from .errors import HTTPProblem

FIELDS = ("q", "text", "like", "kind", "k", "path", "cursor", "fusion", "rrf_k", "cutoff", "min_score",
          "modified_after", "modified_before", "min_duration", "max_duration")


def _number(name: str, value: str | None, kind=float, default=None):
    if value in (None, ""):
        return default
    try:
        return kind(value)
    except ValueError:
        raise HTTPProblem(422, f"{name}: not a {'whole ' if kind is int else ''}number: {value[:40]!r}") from None


def read_search(values: Callable[[str], list[str]], uploaded: tuple[Part, ...] = ()) -> tuple[Query, dict]:
    """(the query, ``Served.search``'s options) from ``values(name)`` -> the strings given for ``name``."""
    def first(name: str) -> str | None:
        found = values(name)
        return found[0] if found else None

    parts = tuple(parse_part(kind, spec) for kind in ("text", "like") for spec in values(kind)) + tuple(uploaded)
    when = {name: parse_time(first(name), name) if first(name) else None for name in ("modified_after", "modified_before")}
    filters = Filters(path_glob=first("path") or None, min_duration=_number("min_duration", first("min_duration")),
                      max_duration=_number("max_duration", first("max_duration")), **when)
    options = dict(kind=first("kind") or "all", k=_number("k", first("k"), int, 10), cursor=first("cursor"),
                   fusion=first("fusion") or "auto", rrf_k=_number("rrf_k", first("rrf_k"), float, RRF_K),
                   cutoff=first("cutoff") or None, min_score=_number("min_score", first("min_score")), filters=filters)
    return Query(text=first("q") or None, parts=parts), options
