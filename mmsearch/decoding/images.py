"""Images with Pillow: EXIF orientation applied, every mode made RGB, a pixel limit against bombs,
and JPEG draft mode so a 12 MP photo is decoded at (about) the size the model needs."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DecodeError

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".ico",
    ".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".qoi", ".jp2", ".j2k", ".jpf", ".jpx", ".avif", ".avifs",
    ".heic", ".heif", ".psd", ".sgi", ".rgb", ".pcx", ".dds", ".mpo", ".apng", ".im", ".xbm", ".xpm",
    ".ras", ".pcd", ".fits", ".fli", ".flc", ".blp", ".msp", ".cur", ".icns", ".eps", ".wmf",
})

MAX_PIXELS = 100_000_000
"""Images larger than this many pixels (e.g. 20,000 x 20,000 PNG bombs) are refused before decoding."""

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(head: bytes) -> bool:
    """Content sniffing for files whose extension says nothing."""
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def load_image(path: Path, *, target_size: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an upright RGB image; with ``target_size`` large JPEGs are decoded at a
    reduced scale that still covers it (the model's preprocessing does the final resize)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise DecodeError(path, f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise DecodeError(path, f"image too large ({width}x{height} pixels, limit {max_pixels:,}): refused as a possible decompression bomb")
            if target_size and image.format == "JPEG":
                image.draft("RGB", _draft_request(width, height, target_size))
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(path, f"refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError(path, "not a readable image (format not recognised)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, NotImplementedError, TypeError, IndexError,
            KeyError, AttributeError, MemoryError, RuntimeError, ZeroDivisionError, Warning) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DecodeError(path, f"image could not be decoded ({reason[:200]})") from exc


def load_jpeg_pixels(path: Path, *, max_pixels: int):
    """A plain JPEG (8-bit, grey or colour, baseline or progressive, at most ``max_pixels``) decoded by
    libjpeg-turbo through torchvision, EXIF orientation applied: (3,H,W) uint8 pixels. No Python runs per
    pixel or per marker, and torchvision lets go of the GIL, so many threads decode at once. None for
    anything else (other files, CMYK, arithmetic coding, larger images, or data it cannot decode), which
    then goes through ``load_image``, whose error messages are the ones reported."""
    try:
        with open(path, "rb") as handle:
            data = bytearray(handle.read())
    except OSError:
        return None
    frame = jpeg_frame(data)
    if frame is None or frame[0] * frame[1] > max_pixels:
        return None
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB,
                           apply_exif_orientation=True)
    except (RuntimeError, ValueError):
        return None


_OTHER_FRAMES = frozenset(range(0xC3, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Frame markers of the JPEG coding processes that ``load_jpeg_pixels`` leaves to Pillow (lossless,
hierarchical, arithmetic); 0xC4, 0xC8 and 0xCC are other segments."""


def jpeg_frame(data: bytes | bytearray) -> tuple[int, int, int] | None:
    """(width, height, components) from the frame header of an 8-bit Huffman-coded JPEG with one or three
    components (baseline or progressive); None for anything else."""
    if not data.startswith(b"\xff\xd8"):
        return None
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            position += 2
            continue
        if marker in (0xC0, 0xC1, 0xC2):
            if position + 10 > end:
                return None
            precision, components = data[position + 4], data[position + 9]
            height = int.from_bytes(data[position + 5:position + 7], "big")
            width = int.from_bytes(data[position + 7:position + 9], "big")
            ok = precision == 8 and components in (1, 3) and width > 0 and height > 0
            return (width, height, components) if ok else None
        if marker in _OTHER_FRAMES or marker in (0xD9, 0xDA):  # another coding process, or no frame first
            return None
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return None


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

