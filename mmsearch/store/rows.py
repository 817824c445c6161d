"""Catalog rows as frozen records: what the catalog hands out and takes in (never raw database rows)."""
from __future__ import annotations

from dataclasses import dataclass

from ..records import Modality

INDEXED = "indexed"
FAILED = "failed"
"""The file's bytes could not be indexed; tried again when the file changes (size, mtime)."""
RETRY = "retry"
"""The file could not be read this time (permission, changed or vanished while read): tried again every run."""
FAILED_STATES = (FAILED, RETRY)


@dataclass(frozen=True)
class ItemRow:
    """One file: where it is, what it was when indexed, and whether that worked (``state``)."""

    id: int
    path: str
    modality: Modality
    size: int
    mtime_ns: int
    content_hash: str | None
    state: str
    """``INDEXED``, ``FAILED`` or ``RETRY``."""
    error: str | None


@dataclass(frozen=True)
class SegmentRow:
    """What one vector stands for, with its file's path and kind."""

    id: int
    item_id: int
    path: str
    modality: Modality
    """The index the segment is in (a video's frames: IMAGE, its soundtrack: AUDIO)."""
    text: str | None
    start: float | None
    end: float | None
    page: int | None = None
    file_modality: Modality | None = None
    """The file's own modality (VIDEO for a video's frames and windows); None when not read."""
