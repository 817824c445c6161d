"""JPEG thumbnails of indexed images, made once with Pillow and cached in the store's ``thumbnails/``.

A thumbnail's file name holds the item id, its size and the image file's size and modification time,
so a changed file gets a new one (the stale one is deleted then). A JPEG is decoded at a reduced scale
(draft mode: a 12 MP photo costs about an eighth of a full decode). The cache is the only thing a
server writes in a store; where the store is read-only, thumbnails are made each time, uncached.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from pathlib import Path

from ..decoding.images import load_image
from ..errors import DecodeError, ItemNotFoundError, UsageError
from ..records import Modality
from .files import ItemFile

log = logging.getLogger(__name__)

THUMBNAILS = "thumbnails"
SIZES = (128, 256, 512)
"""The longest side a thumbnail may be asked for, in pixels (a few fixed sizes: a client cannot fill the
cache with one file per size)."""
DEFAULT_SIZE = 256
QUALITY = 85


class Thumbnails:
    """``get(file, size)`` -> JPEG bytes, from the cache folder ``store/thumbnails`` when current."""

    def __init__(self, store_folder: Path):
        self.folder = Path(store_folder) / THUMBNAILS

    def path_for(self, file: ItemFile, size: int) -> Path:
        return self.folder / f"{file.id}-{size}-{file.size}-{file.mtime_ns}.jpg"

    def get(self, file: ItemFile, size: int = DEFAULT_SIZE) -> bytes:
        if size not in SIZES:
            raise UsageError(f"{{opt:size}} must be one of {', '.join(map(str, SIZES))}, not {size}")
        if file.modality != Modality.IMAGE:
            raise ItemNotFoundError(file.id, f"is a {file.modality.value} file: thumbnails are made of images only")
        cached = self.path_for(file, size)
        with contextlib.suppress(OSError):
            return cached.read_bytes()
        data = make_thumbnail(file, size)
        self._keep(cached, data)
        return data

    def _keep(self, target: Path, data: bytes) -> None:
        """Write ``target`` (temporary file, then rename: a reader never sees half of one) and delete the
        item's older thumbnails of that size. A cache: no fsync, and a store that cannot be written to
        only costs the next request a new thumbnail."""
        item, size = target.name.split("-")[:2]
        try:
            self.folder.mkdir(exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
            temporary.write_bytes(data)
            os.replace(temporary, target)
            for old in self.folder.glob(f"{item}-{size}-*.jpg"):
                if old != target:
                    old.unlink(missing_ok=True)
        except OSError as exc:
            log.info("thumbnail not cached (%s)", exc)


def make_thumbnail(file: ItemFile, size: int) -> bytes:
    """The image decoded as indexing decodes it (upright RGB, bomb limit, JPEG draft), shrunk to fit
    ``size`` x ``size``, as JPEG bytes."""
    try:
        image = load_image(file.path, target_size=size)
    except DecodeError as exc:
        raise ItemNotFoundError(file.id, f"its image cannot be decoded now ({exc.reason})") from exc
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()
