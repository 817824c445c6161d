"""Images with Pillow: EXIF orientation applied, every mode made RGB, a pixel limit against bombs, and
draft mode so a 12 MP photo is decoded at (about) the size the model needs. HEIC/HEIF goes through
pillow-heif's Pillow plugin (registered on the first image loaded), AVIF through Pillow's own plugin, and
camera RAW files through their embedded preview (``raw_images``).

Orientation is applied exactly once per format: EXIF orientation for JPEG, PNG, WebP, TIFF and the rest
(``ImageOps.exif_transpose``); for AVIF, Pillow turns the container's rotation and mirror boxes into that
same EXIF orientation; for HEIF, libheif applies the rotation and mirror boxes while decoding and pillow-heif
resets the EXIF orientation (informational in HEIF) to 1, so nothing more is done; for a RAW preview,
the RAW's own orientation is applied and the preview's EXIF ignored."""
from __future__ import annotations

import functools
import io
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DecodeError
from .raw_images import RAW_EXTENSIONS, read_raw_preview

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".heics", ".heifs", ".hif"})

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".ico",
    ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".qoi", ".jp2", ".j2k", ".jpf", ".jpx", ".avif", ".avifs",
    ".psd", ".sgi", ".rgb", ".pcx", ".dds", ".mpo", ".apng", ".im", ".xbm", ".xpm",
    ".ras", ".pcd", ".fits", ".fli", ".flc", ".blp", ".msp", ".cur", ".icns", ".eps", ".wmf",
}) | HEIF_EXTENSIONS | RAW_EXTENSIONS

MAX_PIXELS = 100_000_000
"""Images larger than this many pixels (e.g. 20,000 x 20,000 PNG bombs) are refused before decoding."""

HEIF_NEEDS_PLUGIN = "HEIC support needs pillow-heif (pip install pillow-heif)"

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_IMAGE_BRANDS = _HEIF_BRANDS | {b"avif", b"avis"}
"""Major brands of the ISO media file ``ftyp`` box that mean a still image (or image sequence); the brands
of MP4/MOV video and M4A audio (isom, mp41, mp42, M4A, qt, 3gp...) are not among them."""


def looks_like_image(head: bytes) -> bool:
    """Content sniffing for files whose extension says nothing (``head``: the first 12 bytes or more)."""
    return (head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or (head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS))


@functools.cache
def heif_support() -> bool:
    """Registers pillow-heif's HEIF opener with Pillow, once, when the first image is loaded (never at
    import): True when pillow-heif is installed."""
    try:
        import pillow_heif
    except (ImportError, OSError):
        return False
    pillow_heif.register_heif_opener()
    return True


def load_image(path: Path, *, target_size: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an upright RGB image; with ``target_size`` large JPEGs (and HEIFs with an embedded
    thumbnail) are decoded at a reduced scale that still covers it (the model's preprocessing does the final
    resize). Camera RAW files give their embedded preview."""
    if Path(path).suffix.lower() in RAW_EXTENSIONS:
        return _load_raw_preview(path, target_size, max_pixels)
    heif = heif_support()
    with _decode_errors(path, heif=heif):
        with Image.open(path) as image:
            return _decode(image, path, target_size, max_pixels)


def _load_raw_preview(path: Path, target_size: int | None, max_pixels: int) -> Image.Image:
    preview = read_raw_preview(path)
    with _decode_errors(path, what="camera RAW preview"):
        if preview.jpeg is not None:
            with Image.open(io.BytesIO(preview.jpeg)) as image:
                return _decode(image, path, target_size, max_pixels, orientation=preview.orientation)
        height, width = preview.pixels.shape[:2]
        _check_size(path, width, height, max_pixels)
        return to_rgb(_transpose(_bitmap(preview.pixels), preview.orientation))


def _decode(image: Image.Image, path: Path, target_size: int | None, max_pixels: int, *,
            orientation: int | None = None) -> Image.Image:
    """An opened image -> upright RGB; ``orientation`` (a RAW's) replaces the image's own EXIF orientation."""
    width, height = image.size
    _check_size(path, width, height, max_pixels)
    if target_size and image.format in ("JPEG", "HEIF"):  # HEIF: its smallest embedded thumbnail that covers it
        image.draft("RGB", _draft_request(width, height, target_size))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image.load()
    if orientation is not None:
        return to_rgb(_transpose(image, orientation))
    if image.format == "HEIF":  # already upright (libheif applied irot/imir; pillow-heif reset EXIF to 1)
        return to_rgb(image.copy())
    return to_rgb(ImageOps.exif_transpose(image))


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise DecodeError(path, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecodeError(path, f"image too large ({width}x{height} pixels, limit {max_pixels:,}): refused as a possible decompression bomb")


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
"""EXIF orientation -> the transposition that makes the image upright (as ``ImageOps.exif_transpose``)."""


def _transpose(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image.copy()


def _bitmap(pixels: np.ndarray) -> Image.Image:
    """A RAW's bitmap preview, (H, W), (H, W, 1) or (H, W, 3), 8 or 16 bits -> a Pillow image."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels))


@contextmanager
def _decode_errors(path: Path, *, heif: bool = True, what: str = "image") -> Iterator[None]:
    """Every failure of Pillow (or of a plugin) while decoding -> a one-line ``DecodeError``."""
    try:
        yield
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(path, f"refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        if what == "image" and _is_heif(path):
            reason = _heif_failure(path) if heif else HEIF_NEEDS_PLUGIN
        else:
            reason = f"not a readable {what} (format not recognised)"
        raise DecodeError(path, reason) from exc
    except (OSError, SyntaxError, ValueError, EOFError, NotImplementedError, TypeError, IndexError,
            KeyError, AttributeError, MemoryError, RuntimeError, ZeroDivisionError, Warning) as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DecodeError(path, f"{what} could not be decoded ({reason[:200]})") from exc


def _is_heif(path: Path) -> bool:
    """By its extension, or by the brand of its ``ftyp`` box."""
    if Path(path).suffix.lower() in HEIF_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _heif_failure(path: Path) -> str:
    """libheif's own words for a HEIF file that Pillow could not identify (the plugin hides them from Pillow)."""
    import pillow_heif

    try:
        pillow_heif.open_heif(path)
    except (OSError, ValueError, SyntaxError, RuntimeError, EOFError) as exc:
        message = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"HEIC/HEIF file could not be decoded ({message[:200]})"
    return "HEIC/HEIF file could not be decoded (damaged or truncated)"


def _draft_request(width: int, height: int, target: int) -> tuple[int, int]:
    """Draft picks the smallest scale >= the request; ask for the size whose short side is ``target``."""
    scale = target / min(width, height)
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha composited on white, palette expanded, 16-bit/float rescaled, CMYK/Lab converted."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_to_l(image).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "LAB":
        from PIL import ImageCms

        transform = ImageCms.buildTransformFromOpenProfiles(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(image, transform)
    return image.convert("RGB")


def _scale_to_l(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    finite = pixels[np.isfinite(pixels)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = high - low if high > low else 1.0
    scaled = np.nan_to_num((pixels - low) / span * 255.0, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(scaled.clip(0, 255).astype(np.uint8), mode="L")

