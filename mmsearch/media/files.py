"""An indexed file by its catalog id, checked before a byte of it is served.

A front end never names a path: it names a catalog id (``Hit.item_id``), and the file is served only if
the catalog holds that id as indexed, the file is still on disk, and its real path (every symlink
resolved) lies under the real path of a folder (or file) that was given to ``index`` and not removed
since (``Store.roots``). A symlink inside an indexed folder that points out of it is refused, as are
ids of removed files. Stores made before roots were recorded fall back to the file's own folder.
"""
from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ItemNotFoundError
from ..records import Modality
from ..store.folder import Store, within
from ..store.rows import INDEXED

_EXTRA_TYPES = {".flac": "audio/flac", ".opus": "audio/ogg", ".ogg": "audio/ogg", ".m4a": "audio/mp4",
                ".webp": "image/webp", ".avif": "image/avif", ".heic": "image/heic", ".wav": "audio/wav",
                ".mp3": "audio/mpeg", ".md": "text/markdown", ".jsonl": "application/x-ndjson",
                ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
                ".mkv": "video/x-matroska", ".pdf": "application/pdf", ".epub": "application/epub+zip"}


@dataclass(frozen=True)
class ItemFile:
    """An indexed file that may be served: its catalog id, its real path now, and what it is."""

    id: int
    path: Path
    """The real path (symlinks resolved), checked to be under an indexed root."""
    catalog_path: str
    """The path as indexed (what search hits show)."""
    modality: Modality
    size: int
    mtime_ns: int
    media_type: str


def item_file(store: Store, item_id: int) -> ItemFile:
    """The file of catalog id ``item_id``, or ``ItemNotFoundError`` (never indexed, removed, failed to
    index, gone from disk, or no longer under an indexed root)."""
    row = store.catalog.item(item_id)
    if row is None or row.state != INDEXED:
        raise ItemNotFoundError(item_id)
    recorded = store.roots()
    roots = [root for root in recorded if within(row.path, root)] if recorded else [os.path.dirname(row.path)]
    if not roots:
        raise ItemNotFoundError(item_id, "its folder is no longer indexed")
    real = os.path.realpath(row.path)
    if not any(within(real, os.path.realpath(root)) for root in roots):
        raise ItemNotFoundError(item_id, "its file resolves to a place outside the indexed folders")
    try:
        stat = os.stat(real)
    except OSError:
        raise ItemNotFoundError(item_id, "its file is gone from disk") from None
    if not os.path.isfile(real):
        raise ItemNotFoundError(item_id, "its file is gone from disk")
    suffix = Path(real).suffix.lower()
    media_type = _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(real)[0] or "application/octet-stream"
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8" if row.modality == Modality.TEXT else ""
    return ItemFile(item_id, Path(real), row.path, row.modality, stat.st_size, stat.st_mtime_ns, media_type)
