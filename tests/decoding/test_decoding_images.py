"""Image decoding: orientation, modes, bombs, broken files, and the real awkward corpus."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from mmsearch.decoding.images import heif_support, load_image, to_rgb
from mmsearch.errors import DecodeError


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("mode", ["CMYK", "P", "RGBA", "LA", "L", "1", "I;16", "I", "F", "YCbCr", "HSV"])
def test_every_mode_becomes_rgb(mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    if mode in ("I;16", "I", "F"):
        image = Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype({"I;16": np.uint16, "I": np.int32,
                                                                              "F": np.float32}[mode]))
        image = image.convert(mode) if image.mode != mode else image
    else:
        image = base.convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (8, 8)


def test_sixteen_bit_is_rescaled_not_clipped():
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 255]


def test_transparent_palette_is_composited_on_white(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] * 256)
    path = tmp_path / "t.png"
    image.save(path, transparency=0)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(path)
    with pytest.raises(DecodeError, match="decompression bomb"):
        load_image(path)


def test_draft_mode_decodes_big_jpeg_small(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4032, 3024), "blue").save(path, quality=80)
    image = load_image(path, target_size=224)
    assert min(image.size) >= 224 and image.size[0] <= 4032 // 4


@pytest.mark.parametrize("content, reason", [
    (b"", "not a readable image"),
    (b"\xff\xd8\xff\xe0garbage", "could not be decoded"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00", "not a readable"),
])
def test_broken_files_raise_decode_error(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        load_image(path)


@pytest.mark.corpus
def test_every_corpus_image_is_indexed_or_failed_with_a_reason(corpus, make_engine):
    with open(corpus / "MANIFEST.tsv", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row["modality"] == "image"]
    folders = sorted({corpus / row["path"].split("/")[0] for row in rows})
    engine = make_engine(audio_model="none")
    report = engine.index(folders)
    failed = {f.path: f.reason for f in report.failed}
    indexed = set(engine.store.catalog.all_items())
    for row in rows:
        path = str(corpus / row["path"])
        assert path in indexed, f"{row['path']} neither indexed nor recorded"
        if path in failed:
            assert failed[path].strip(), row["path"]
        if row["decodes"] == "yes" and "animated" not in row["notes"]:
            assert path not in failed, f"{row['path']} decodes with Pillow but failed: {failed.get(path)}"
    expected_failures = {str(corpus / r["path"]) for r in rows if r["decodes"] == "no" and not _read_by_a_plugin(r)}
    assert expected_failures <= set(failed), sorted(expected_failures - set(failed))[:5]


def _read_by_a_plugin(row: dict[str, str]) -> bool:
    """A file the manifest marks undecodable (by Pillow alone) that a plugin mmsearch loads reads: HEIC/HEIF
    through pillow-heif, when it is installed."""
    return row["format"] in ("heic", "heif", "heics", "hif") and heif_support()


def _jpeg(path, image, **options):
    image.save(path, "JPEG", **options)
    return path


