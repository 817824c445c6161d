"""What a search may return, applied inside the search (the index is asked only for allowed segments,
not filtered after a fixed top-k): a path glob, a modification time range, an audio duration range."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from ..errors import UsageError


@dataclass(frozen=True)
class Filters:
    """``path_glob``: absolute paths matching it (``*``, ``?``, ``[...]``; a relative pattern matches below
    any folder). ``modified_after``/``modified_before``: the file's modification time, Unix seconds (from,
    before). ``min_duration``/``max_duration``: an audio file's or a video's length in seconds (its last
    soundtrack window's end); images and text files have none, so a duration filter leaves them out."""

    path_glob: str | None = None
    modified_after: float | None = None
    modified_before: float | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    file_kind: str | None = None
    """Only files of this kind (the searcher sets it where videos share the image and audio indexes)."""

    def __post_init__(self):
        for name in ("modified_after", "modified_before", "min_duration", "max_duration"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UsageError(f"{{opt:{name}}} must be a finite number, not {value}")
        if None not in (self.modified_after, self.modified_before) and self.modified_after >= self.modified_before:
            raise UsageError("{opt:modified_after} must be earlier than {opt:modified_before}")
        if None not in (self.min_duration, self.max_duration) and self.min_duration > self.max_duration:
            raise UsageError("{opt:min_duration} must not be more than {opt:max_duration}")
        if self.path_glob is not None:
            object.__setattr__(self, "path_glob", check_glob(self.path_glob))

    @property
    def active(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__dataclass_fields__)

    @property
    def has_duration(self) -> bool:
        return self.min_duration is not None or self.max_duration is not None

    def catalog_args(self) -> dict:
        """The filters as ``Catalog.segment_ids`` takes them (times in ns)."""
        ns = [None if t is None else min(max(int(t * 1e9), -2 ** 63), 2 ** 63 - 1)  # SQLite's integers
              for t in (self.modified_after, self.modified_before)]
        return {"modified": tuple(ns) if any(t is not None for t in ns) else None,
                "duration": (self.min_duration, self.max_duration) if self.has_duration else None,
                "file_kind": self.file_kind}


def parse_time(text: str, option: str) -> float:
    """Unix seconds from ``2024-05-01``, ``2024-05-01T13:30`` (local time unless it names a zone) or a number
    of Unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(f"{{opt:{option}}} {text!r}: not a date (YYYY-MM-DD, YYYY-MM-DDTHH:MM) or Unix "
                         f"seconds") from None


def check_glob(pattern: str) -> str:
    """Validate a path glob and anchor relative patterns so they match anywhere below a folder."""
    if not pattern.strip():
        raise UsageError("{opt:path_glob}: empty glob")
    depth = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            close = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("]", "!", "^") else i + 1)
            if close < 0:
                raise UsageError(f"{{opt:path_glob}} {pattern!r}: unclosed '[' in glob")
            i = close
        elif ch == "]" and depth == 0 and "[" not in pattern[:i]:
            raise UsageError(f"{{opt:path_glob}} {pattern!r}: ']' without '[' in glob")
        i += 1
    if not pattern.startswith(("/", "*")):
        pattern = "*/" + pattern
    return pattern
