"""Camera RAW files by their embedded preview: LibRaw (through rawpy) hands over the JPEG or bitmap the
camera stored beside the sensor data, and the orientation the camera recorded. The sensor data itself is
never developed (seconds per file); the preview is the picture the camera showed.

The RAW's orientation (LibRaw's ``flip``) is the one that counts: cameras store their preview unrotated,
most without EXIF of their own (LibRaw then writes an EXIF block whose orientation is that same ``flip``),
and the few previews that carry EXIF repeat what the RAW says. Applying ``flip`` alone turns every preview
upright exactly once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DecodeError

RAW_EXTENSIONS = frozenset({
    ".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef", ".srw",
    ".x3f", ".erf", ".kdc", ".mrw", ".3fr", ".iiq", ".rwl",
})

NO_PREVIEW = "camera RAW file without an embedded preview (full RAW development is not done)"

_ORIENTATION_OF_FLIP = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
"""LibRaw's ``flip`` (bits: 1 mirror left-right, 2 mirror top-bottom, 4 swap axes) -> EXIF orientation, as
dcraw writes it."""


@dataclass(frozen=True)
class RawPreview:
    """The preview of one RAW file: JPEG bytes, or (H, W, C) pixels of a bitmap preview; ``orientation`` is
    the EXIF orientation (1-8) that makes it upright."""
    jpeg: bytes | None
    pixels: np.ndarray | None
    orientation: int


def read_raw_preview(path: Path) -> RawPreview:
    """The embedded preview of the camera RAW file at ``path``; ``DecodeError`` with a one-line reason when
    there is none or LibRaw cannot read the file."""
    try:
        import rawpy
    except ImportError as exc:
        raise DecodeError(path, "camera RAW support needs rawpy (pip install rawpy)") from exc
    try:
        with rawpy.imread(str(path)) as raw:
            flip = raw.sizes.flip
            thumb = raw.extract_thumb()
    except rawpy.LibRawNoThumbnailError as exc:
        raise DecodeError(path, NO_PREVIEW) from exc
    except rawpy.LibRawError as exc:
        raise DecodeError(path, _reason(path, exc, rawpy)) from exc
    orientation = _ORIENTATION_OF_FLIP.get(flip, 1)
    if thumb.format == rawpy.ThumbFormat.JPEG:
        return RawPreview(jpeg=bytes(thumb.data), pixels=None, orientation=orientation)
    return RawPreview(jpeg=None, pixels=np.asarray(thumb.data), orientation=orientation)


def _reason(path: Path, exc: Exception, rawpy) -> str:
    if isinstance(exc, rawpy.LibRawUnsupportedThumbnailError):
        return "camera RAW file whose embedded preview is in a format LibRaw cannot extract (full RAW development is not done)"
    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        return "not a camera RAW file LibRaw can read (unsupported camera or not a RAW file)"
    if isinstance(exc, rawpy.LibRawIOError):
        try:
            with open(path, "rb"):
                pass
        except OSError as os_error:
            return f"camera RAW file could not be read ({os_error.strerror or type(os_error).__name__})"
        return "camera RAW file is truncated or damaged (LibRaw could not read it)"
    if isinstance(exc, (rawpy.LibRawTooBigError, rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError)):
        return "camera RAW file too large for LibRaw's memory limits"
    message = exc.args[0] if exc.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    message = str(message).splitlines()[0] if str(message).strip() else type(exc).__name__
    return f"camera RAW file could not be read (LibRaw: {message[:200]})"
