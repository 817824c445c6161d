"""A search's filters in the index tier's own words, for backends that apply them themselves (push-down).

The search tier (``search.filters.Filters``) builds one; a backend that ``pushes_down`` a predicate answers
``search(..., where=predicate)`` over only the vectors whose file matches, without a list of allowed ids.
Each vector of such a backend carries its file's attributes (``SegmentAttributes``), which the store keeps
in step with the catalog (renames and touched files included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

NO_DURATION = -1.0
"""The duration recorded for a segment whose file has none (images, text)."""


@dataclass(frozen=True)
class Predicate:
    path_glob: str | None = None
    """Absolute paths matching this glob (SQLite GLOB: ``*``, ``?``, ``[...]``, case-sensitive)."""
    modified_ns: tuple[int | None, int | None] | None = None
    """The file's modification time in ns: (from, before), either None for open."""
    duration: tuple[float | None, float | None] | None = None
    """The file's duration in seconds: (at least, at most), either None for open."""
    file_kind: str | None = None
    """Only segments of files of this modality."""


@dataclass(frozen=True)
class SegmentAttributes:
    """What a pushing-down backend stores beside each vector: its file's path, modification time (ns),
    duration (seconds, ``NO_DURATION`` for none) and modality, row for row with ``ids``."""

    ids: np.ndarray
    paths: list[str]
    mtime_ns: list[int]
    durations: list[float]
    kinds: list[str]

    @classmethod
    def blank(cls, ids: np.ndarray) -> "SegmentAttributes":
        """Attributes for vectors with no file behind them (a backend used on its own, as in tests)."""
        n = len(ids)
        return cls(np.asarray(ids, np.int64), [""] * n, [0] * n, [NO_DURATION] * n, [""] * n)


AttributeSource = Callable[[np.ndarray], SegmentAttributes]
"""ids -> their files' attributes (ids the catalog no longer holds get blank ones)."""
