"""HEIC/HEIF (pillow-heif), AVIF (Pillow), camera RAW previews (LibRaw through rawpy, on DNG files written
here) and EXIF orientation: every photo comes out upright, turned exactly once, and every failure is one line.

Every picture is a seeded pattern of 4 x 3 coloured blocks, so each of the 8 orientations looks different and
a picture turned twice (or not at all) is told apart from an upright one by its pixels."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from mmsearch.decoding.images import IMAGE_EXTENSIONS, heif_support, load_image, looks_like_image
from mmsearch.decoding.raw_images import NO_PREVIEW, RAW_EXTENSIONS
from mmsearch.errors import DecodeError

ORIENTATIONS = range(1, 9)


def pattern(size=(128, 96), seed=0) -> Image.Image:
    blocks = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.NEAREST)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """What a viewer shows for ``image`` stored with EXIF ``orientation``."""
    tagged = image.copy()
    tagged.info["exif"] = exif_bytes(orientation)
    return ImageOps.exif_transpose(tagged)


def assert_shows(decoded: Image.Image, stored: Image.Image, orientation: int, tolerance: float = 6.0) -> None:
    """``decoded`` is ``stored`` turned by ``orientation`` (at any scale), and no other of the 8 is as close."""
    def distance(candidate: Image.Image) -> float:
        if (candidate.width > candidate.height) != (decoded.width > decoded.height):
            return float("inf")
        candidate = candidate.resize(decoded.size, Image.BOX)
        return float(np.abs(np.asarray(candidate, dtype=int) - np.asarray(decoded, dtype=int)).mean())
    distances = {o: distance(upright(stored, o)) for o in ORIENTATIONS}
    assert decoded.mode == "RGB"
    assert distances[orientation] < tolerance, distances
    assert min(distances, key=distances.get) == orientation, distances


@pytest.fixture
def heif_file(tmp_path):
    """Writes ``image`` as HEIC with pillow-heif the way an iPhone does: the rotation and mirror in the
    container's irot/imir boxes, and the same orientation in the EXIF block."""
    pytest.importorskip("pillow_heif")
    heif_support()

    def write(image: Image.Image, orientation: int = 1, name: str = "photo.heic", **options) -> Path:
        path = tmp_path / name
        options.setdefault("quality", -1)  # lossless, so pixels compare tightly
        options.setdefault("chroma", 444)
        image.save(path, format="HEIF", exif=exif_bytes(orientation), **options)
        return path
    return write


# -- EXIF orientation: JPEG, PNG, WebP ---------------------------------------------------------------------
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_every_exif_orientation_of_a_jpeg_comes_out_upright(tmp_path, orientation):
    stored = pattern((128, 96))
    path = tmp_path / "photo.jpg"
    stored.save(path, "JPEG", quality=95, exif=exif_bytes(orientation))
    decoded = load_image(path)
    assert_shows(decoded, stored, orientation)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_draft_decoding_keeps_the_orientation(tmp_path, orientation):
    stored = pattern((1024, 768))
    path = tmp_path / "big.jpg"
    stored.save(path, "JPEG", quality=90, exif=exif_bytes(orientation))
    decoded = load_image(path, target_size=224)
    assert 224 <= min(decoded.size) < 768  # decoded at a reduced scale
    assert_shows(decoded, stored, orientation)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("kind, options", [("PNG", {}), ("WEBP", {"lossless": True})])
def test_png_and_webp_exif_orientation_is_applied(tmp_path, kind, options, orientation):
    stored = pattern()
    path = tmp_path / f"picture.{kind.lower()}"
    stored.save(path, kind, exif=exif_bytes(orientation), **options)
    assert_shows(load_image(path), stored, orientation, tolerance=0.5)


# -- HEIC / HEIF -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_heic_orientation_is_applied_exactly_once(heif_file, orientation):
    """libheif applies irot/imir; the EXIF orientation that repeats them must not turn the picture again."""
    stored = pattern()
    assert_shows(load_image(heif_file(stored, orientation)), stored, orientation, tolerance=3)


def test_iphone_like_heic_with_orientation_6_is_turned_once(heif_file):
    stored = pattern((160, 120))
    path = heif_file(stored, 6)
    import pillow_heif

    assert pillow_heif.open_heif(path).size == (120, 160)  # the file's irot box, which libheif applies
    with Image.open(path) as opened:
        assert opened.info["original_orientation"] == 6  # and the EXIF orientation, which must not be
    decoded = load_image(path)
    assert decoded.size == (120, 160)
    assert_shows(decoded, stored, 6, tolerance=3)


def test_heic_draft_uses_an_embedded_thumbnail_that_covers_the_target(heif_file):
    stored = pattern((1024, 768))
    path = heif_file(stored, 6, quality=90, chroma=420, thumbnails=[320])
    decoded = load_image(path, target_size=224)
    assert decoded.size == (240, 320)  # the thumbnail, turned like the image
    assert_shows(decoded, stored, 6, tolerance=12)
    assert load_image(path).size == (768, 1024)


def test_a_real_heic_decodes(corpus):
    pytest.importorskip("pillow_heif")
    """Pillow's own HEIC test image (HEVC, written by another encoder), which Pillow alone cannot read: the
    same picture as its AVIF sibling."""
    folder = corpus / "pillow-test-images" / "avif"
    decoded, sibling = load_image(folder / "hopper.heif"), load_image(folder / "hopper.avif")
    assert decoded.mode == "RGB" and decoded.size == sibling.size == (128, 128)
    assert np.abs(np.asarray(decoded, dtype=int) - np.asarray(sibling, dtype=int)).mean() < 10


def test_mislabelled_heic_is_found_and_decoded(heif_file):
    stored = pattern()
    path = heif_file(stored, 1, name="download.bin")
    assert looks_like_image(path.read_bytes()[:16])
    assert_shows(load_image(path), stored, 1, tolerance=3)


@pytest.mark.parametrize("brand", [b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"])
def test_heif_and_avif_brands_look_like_images(brand):
    assert looks_like_image(b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00")


@pytest.mark.parametrize("brand", [b"isom", b"mp42", b"mp41", b"M4A ", b"M4V ", b"qt  ", b"3gp5", b"dash"])
def test_mp4_video_and_audio_brands_do_not(brand):
    assert not looks_like_image(b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00")


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.6, 0.95])
def test_truncated_heic_is_one_line_decode_error(heif_file, keep):
    whole = heif_file(pattern(), 6)
    broken = whole.with_name("broken.heic")
    broken.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * keep)])
    with pytest.raises(DecodeError) as failure:
        load_image(broken)
    assert "\n" not in str(failure.value)
    assert failure.value.reason.startswith(("HEIC/HEIF file could not be decoded (", "image could not be decoded ("))


def test_heic_bomb_is_refused(heif_file):
    path = heif_file(pattern((128, 96)), 1)
    with pytest.raises(DecodeError, match="decompression bomb"):
        load_image(path, max_pixels=128 * 96 - 1)
    assert load_image(path, max_pixels=128 * 96).size == (128, 96)


@pytest.fixture
def without_pillow_heif(monkeypatch):
    """As if pillow-heif were not installed: no module, and no HEIF opener in Pillow's registry."""
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])
    heif_support.cache_clear()
    yield
    heif_support.cache_clear()


def test_heic_without_pillow_heif_says_what_to_install(heif_file, tmp_path, without_pillow_heif):
    heic = heif_file(pattern(), 1)  # written before the fixture took the plugin away
    mislabelled = tmp_path / "mislabelled.dat"
    mislabelled.write_bytes(heic.read_bytes())
    for path in (heic, mislabelled):
        with pytest.raises(DecodeError) as failure:
            load_image(path)
        assert failure.value.reason == "HEIC support needs pillow-heif (pip install pillow-heif)"
    png = tmp_path / "still.png"
    pattern().save(png)
    assert load_image(png).size == (128, 96)  # everything else is unaffected


def test_importing_mmsearch_registers_nothing():
    """The HEIF opener is registered on the first image loaded, never as a side effect of an import."""
    pytest.importorskip("pillow_heif")
    code = ("import sys, mmsearch, mmsearch.decoding.images as images\n"
            "from PIL import Image\n"
            "assert 'pillow_heif' not in sys.modules and 'HEIF' not in Image.OPEN, 'registered at import'\n"
            "assert images.heif_support() and 'HEIF' in Image.OPEN\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_heif_suffixes_are_image_extensions():
    assert {".heic", ".heif", ".heics", ".heifs", ".hif", ".avif", ".avifs"} <= IMAGE_EXTENSIONS


# -- AVIF --------------------------------------------------------------------------------------------------
def test_pillow_reads_avif_itself():
    from PIL import features

    assert features.check("avif")


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_avif_round_trip_upright(tmp_path, orientation):
    """Pillow writes the orientation as irot/imir boxes and reads them back as EXIF orientation."""
    stored = pattern()
    path = tmp_path / "picture.avif"
    stored.save(path, "AVIF", quality=95, exif=exif_bytes(orientation))
    assert_shows(load_image(path), stored, orientation, tolerance=8)


def test_avif_sequence_gives_its_first_frame(tmp_path):
    frames = [pattern(seed=seed) for seed in (1, 2)]
    path = tmp_path / "clip.avifs"
    frames[0].save(path, "AVIF", save_all=True, append_images=frames[1:], quality=95)
    assert_shows(load_image(path), frames[0], 1, tolerance=8)


# -- camera RAW: DNG files written here, read by LibRaw -----------------------------------------------------
@pytest.fixture
def rawpy():
    return pytest.importorskip("rawpy")


_TIFF_TYPES = {1: "B", 2: "B", 3: "H", 4: "I", 10: "i"}  # BYTE, ASCII, SHORT, LONG, SRATIONAL


def _ifd(entries: list[tuple[int, int, object]], at: int) -> bytes:
    """A little-endian TIFF IFD to be written at offset ``at``; values over 4 bytes follow it."""
    head, data, data_at = struct.pack("<H", len(entries)), b"", at + 2 + 12 * len(entries) + 4
    for tag, kind, values in sorted(entries):
        values = list(values.encode() + b"\0") if kind == 2 else values
        packed = struct.pack(f"<{len(values)}{_TIFF_TYPES[kind]}", *values)
        count = len(values) // 2 if kind == 10 else len(values)
        if len(packed) <= 4:
            head += struct.pack("<HHI", tag, kind, count) + packed.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, kind, count, data_at + len(data))
            data += packed + b"\0" * (len(packed) % 2)
    return head + struct.pack("<I", 0) + data


def write_dng(path, *, orientation: int, preview_jpeg: bytes | None = None, preview_rgb: np.ndarray | None = None):
    """A minimal DNG 1.4: IFD0 is the preview (a JPEG, compression 7, or uncompressed RGB), or the raw data
    itself when there is no preview; the raw data is a 64 x 48 16-bit RGGB mosaic of seeded noise."""
    out = bytearray(b"II*\0\0\0\0\0")
    mosaic = np.random.default_rng(0).integers(0, 4096, (48, 64)).astype("<u2").tobytes()
    raw_at = len(out)
    out += mosaic
    raw_tags = [(256, 4, [64]), (257, 4, [48]), (258, 3, [16]), (259, 3, [1]), (262, 3, [32803]),
                (273, 4, [raw_at]), (277, 3, [1]), (278, 4, [48]), (279, 4, [len(mosaic)]),
                (33421, 3, [2, 2]), (33422, 1, [0, 1, 1, 2]), (50717, 4, [4095])]
    dng_tags = [(271, 2, "mmsearch"), (272, 2, "test DNG"), (274, 3, [orientation]), (50706, 1, [1, 4, 0, 0]),
                (50708, 2, "mmsearch test DNG"), (50721, 10, [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1])]
    if preview_jpeg is None and preview_rgb is None:
        ifd0_at = len(out)
        out += _ifd([(254, 4, [0]), *raw_tags, *dng_tags], ifd0_at)
    else:
        if preview_jpeg is not None:
            (width, height), data, compression, photometric = Image.open(io.BytesIO(preview_jpeg)).size, preview_jpeg, 7, 6
        else:
            (height, width), data, compression, photometric = preview_rgb.shape[:2], preview_rgb.tobytes(), 1, 2
        preview_at = len(out)
        out += data + b"\0" * (len(data) % 2)
        raw_ifd_at = len(out)
        out += _ifd([(254, 4, [0]), *raw_tags], raw_ifd_at)
        ifd0_at = len(out)
        out += _ifd([(254, 4, [1]), (256, 4, [width]), (257, 4, [height]), (258, 3, [8, 8, 8]),
                     (259, 3, [compression]), (262, 3, [photometric]), (273, 4, [preview_at]), (277, 3, [3]),
                     (278, 4, [height]), (279, 4, [len(data)]), (330, 4, [raw_ifd_at]), *dng_tags], ifd0_at)
    out[4:8] = struct.pack("<I", ifd0_at)
    path.write_bytes(bytes(out))
    return path


def jpeg_bytes(image: Image.Image, *, exif_orientation: int | None = None, quality: int = 95) -> bytes:
    """JPEG bytes; with ``exif_orientation`` the EXIF block comes first (APP1 right after SOI), as in camera
    previews, so LibRaw keeps it rather than adding its own."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **({"exif": exif_bytes(exif_orientation)} if exif_orientation else {}))
    data = buffer.getvalue()
    if exif_orientation and data[2:4] == b"\xff\xe0":  # drop the JFIF APP0 segment
        data = data[:2] + data[4 + int.from_bytes(data[4:6], "big"):]
    return data


def test_the_synthetic_dng_is_a_real_raw_to_libraw(rawpy, tmp_path):
    preview = jpeg_bytes(pattern())
    with rawpy.imread(str(write_dng(tmp_path / "a.dng", orientation=6, preview_jpeg=preview))) as raw:
        thumb = raw.extract_thumb()
        assert (raw.sizes.raw_width, raw.sizes.raw_height, raw.sizes.flip) == (64, 48, 6)
        assert raw.raw_image.shape == (48, 64)
    assert thumb.format == rawpy.ThumbFormat.JPEG and thumb.data.endswith(preview[2:])


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_raw_jpeg_preview_is_turned_by_the_raw_orientation_once(rawpy, tmp_path, orientation):
    """LibRaw puts the RAW's orientation into an EXIF block of the preview it hands over; it counts once."""
    stored = pattern()
    path = write_dng(tmp_path / "photo.dng", orientation=orientation, preview_jpeg=jpeg_bytes(stored))
    assert_shows(load_image(path), stored, orientation)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_raw_bitmap_preview_is_turned_by_the_raw_orientation(rawpy, tmp_path, orientation):
    stored = pattern()
    path = write_dng(tmp_path / "photo.dng", orientation=orientation, preview_rgb=np.asarray(stored))
    assert_shows(load_image(path), stored, orientation, tolerance=0.5)


@pytest.mark.parametrize("preview_orientation", [1, 6])
def test_the_raw_orientation_wins_over_the_preview_exif(rawpy, tmp_path, preview_orientation):
    """A preview with EXIF of its own (orientation 1: unturned, or 6: repeating the RAW) still ends up turned
    once by the RAW's orientation."""
    stored = pattern()
    preview = jpeg_bytes(stored, exif_orientation=preview_orientation)
    path = write_dng(tmp_path / "photo.dng", orientation=6, preview_jpeg=preview)
    assert_shows(load_image(path), stored, 6)


def test_raw_jpeg_preview_is_drafted_and_limited(rawpy, tmp_path):
    stored = pattern((1024, 768))
    path = write_dng(tmp_path / "big.dng", orientation=8, preview_jpeg=jpeg_bytes(stored, quality=90))
    decoded = load_image(path, target_size=224)
    assert 224 <= min(decoded.size) < 768
    assert_shows(decoded, stored, 8, tolerance=8)
    with pytest.raises(DecodeError, match="decompression bomb"):
        load_image(path, max_pixels=1024 * 768 - 1)
    bitmap = write_dng(tmp_path / "bitmap.dng", orientation=1, preview_rgb=np.asarray(pattern()))
    with pytest.raises(DecodeError, match="decompression bomb"):
        load_image(bitmap, max_pixels=100)


def test_raw_without_a_preview_is_not_developed(rawpy, tmp_path):
    path = write_dng(tmp_path / "bare.dng", orientation=1)
    with pytest.raises(DecodeError) as failure:
        load_image(path)
    assert failure.value.reason == NO_PREVIEW
    assert NO_PREVIEW == "camera RAW file without an embedded preview (full RAW development is not done)"


@pytest.mark.parametrize("name, content, reason", [
    ("short.nef", b"not a raw file at all", "camera RAW file is truncated or damaged"),
    ("noise.cr2", np.random.default_rng(3).integers(0, 256, 100_000, dtype=np.uint8).tobytes(),
     "not a camera RAW file LibRaw can read"),
    ("missing.arw", None, "camera RAW file could not be read (No such file or directory)"),
])
def test_unreadable_raw_files_fail_in_one_line(rawpy, tmp_path, name, content, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DecodeError) as failure:
        load_image(path)
    assert failure.value.reason.startswith(reason) and "\n" not in str(failure.value)


def test_raw_without_rawpy_says_what_to_install(tmp_path, monkeypatch):
    path = write_dng(tmp_path / "photo.dng", orientation=1, preview_jpeg=jpeg_bytes(pattern()))
    monkeypatch.setitem(sys.modules, "rawpy", None)
    with pytest.raises(DecodeError, match=r"camera RAW support needs rawpy \(pip install rawpy\)"):
        load_image(path)


def test_raw_suffixes_are_image_extensions():
    suffixes = {".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef",
                ".srw", ".x3f", ".erf", ".kdc", ".mrw", ".3fr", ".iiq", ".rwl"}
    assert suffixes == RAW_EXTENSIONS and suffixes <= IMAGE_EXTENSIONS
