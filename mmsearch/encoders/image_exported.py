"""The image tower of the store's open_clip model exported to ONNX: image queries without torch, and a
runtime the indexer may pick (``encoders.precision``) when it measures faster than torch on this CPU.

An export is the folder ``exports/clip-image/`` in the store, written by ``encoders.image_export``:

* ``export.json``: the model's spec and fingerprint, the preprocessing (short side to ``side`` pixels,
  ``mode`` resampling, centre crop to ``image_size``), the files below and how close each is to torch;
  written last, so it is the export's commit point;
* ``model-<id>.onnx``: the image tower in float32, graph optimised once at export. Input ``pixels``:
  (n, 3, image_size, image_size) uint8, as the decoding threads make them (ToTensor and Normalize are
  inside the graph); output: unit vectors;
* ``int8-<id>.onnx`` (only once ``--precision int8`` asked for it): the same graph with its matrix
  multiplications quantised to int8 (onnxruntime's dynamic quantisation), its cosine to float32 recorded.

Query time needs numpy, Pillow and onnxruntime. A PIL image is resized and cropped here exactly as
torchvision's Resize + CenterCrop do it on PIL images (the same Pillow call), so an image query gives
the torch path's pixels. Anything wrong raises ``ExportUnusable`` and the torch model answers instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import ModelIdentity, l2_normalise
from .exported import EXPORTS, ExportUnusable, damaged_files, open_session, read_record, summary

CLIP_IMAGE = "clip-image"
IMAGE_FORMAT = 1
VARIANTS = ("fp32", "int8")


@dataclass(frozen=True)
class ImageExportRecord:
    """The contents of ``export.json`` in ``exports/clip-image/``."""

    format: int
    spec: str
    fingerprint: str
    dim: int
    image_size: int
    side: int
    """The short side is resized to this many pixels before the centre crop."""
    mode: str
    """'bicubic' or 'bilinear' (Pillow's resampling, antialiased)."""
    model: str
    min_cosine: float
    """The lowest cosine of the float32 graph's vectors to the torch model's, on the export's check images."""
    int8: str = ""
    """The int8 graph's file, once made."""
    int8_min_cosine: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)
    """Bytes of each graph when committed: one of another size is damaged."""

    @classmethod
    def read(cls, folder: Path) -> "ImageExportRecord":
        return read_record(cls, folder, IMAGE_FORMAT)

    def file(self, variant: str) -> str:
        return self.int8 if variant == "int8" else self.model


def image_export_folder(store_folder: Path) -> Path:
    return Path(store_folder) / EXPORTS / CLIP_IMAGE


def check_image_export(store_folder: Path, identity: ModelIdentity, variant: str = "fp32") -> ImageExportRecord:
    """The record of the store's image-tower export when it was made for ``identity``'s model and holds
    ``variant`` (without loading it); else ``ExportUnusable`` says why."""
    folder = image_export_folder(store_folder)
    record = ImageExportRecord.read(folder)
    if record.fingerprint != identity.fingerprint:
        raise ExportUnusable(folder, f"was made for {record.spec!r}, not the store's model {identity.spec!r}")
    name = record.file(variant)
    if not name:
        raise ExportUnusable(folder, f"has no {variant} graph yet")
    problem = damaged_files(folder, [name], record.sizes)
    if problem:
        raise ExportUnusable(folder, problem)
    return record


class ExportedImageEncoder:
    """``preprocess`` (PIL image -> (3, S, S) uint8) and ``encode_images`` of an exported image tower."""

    def __init__(self, folder: Path, record: ImageExportRecord, identity: ModelIdentity, variant: str = "fp32"):
        self.folder, self.record, self.identity, self.variant = Path(folder), record, identity, variant
        self.image_size = record.image_size
        try:
            self._session = open_session(self.folder / record.file(variant))
        except Exception as exc:  # a missing or damaged file, whatever the library says about it
            raise ExportUnusable(self.folder, f"cannot be loaded ({summary(exc)})") from None

    @classmethod
    def open(cls, store_folder: Path, identity: ModelIdentity, variant: str = "fp32") -> "ExportedImageEncoder":
        record = check_image_export(store_folder, identity, variant)
        return cls(image_export_folder(store_folder), record, identity, variant)

    def preprocess(self, image) -> np.ndarray:
        """torchvision's Resize(side) + CenterCrop(image_size) + RGB on a PIL image, as (3, S, S) uint8."""
        return pil_pixels(image, self.record.side, self.record.mode, self.image_size)

    def encode_images(self, pixels: Any) -> np.ndarray:
        """(n, dim) unit vectors of (n, 3, S, S) uint8 pixels (a numpy array or a CPU torch tensor)."""
        batch = np.ascontiguousarray(pixels.numpy() if hasattr(pixels, "numpy") else pixels, dtype=np.uint8)
        try:
            vectors = self._session.run(None, {"pixels": batch})[0]
        except Exception as exc:  # a graph that loads but does not run
            raise ExportUnusable(self.folder, f"failed to run ({summary(exc)})") from None
        return l2_normalise(np.asarray(vectors, dtype=np.float32))


def pil_pixels(image, side: int, mode: str, size: int) -> np.ndarray:
    """What torchvision's Resize(side) (on a PIL image: Pillow's own resize, antialiased) and
    CenterCrop(size) give, then RGB, as (3, size, size) uint8: the same sizes and offsets it computes."""
    from PIL import Image

    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = side, int(side * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_width, new_height) != (width, height):
        resample = Image.Resampling.BICUBIC if mode == "bicubic" else Image.Resampling.BILINEAR
        image = image.resize((new_width, new_height), resample)
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    if top < 0 or left < 0:
        raise ValueError(f"image of {new_width}x{new_height} is smaller than the {size}-pixel crop")
    image = image.crop((left, top, left + size, top + size))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


class ExportedClip:
    """The exported text and image towers answering one query that holds text and an image."""

    def __init__(self, text, image: ExportedImageEncoder):
        self._text, self._image = text, image
        self.identity, self.context_length, self.image_size = image.identity, text.context_length, image.image_size

    def encode_texts(self, texts: Sequence[str]):
        return self._text.encode_texts(texts)

    def preprocess(self, image) -> np.ndarray:
        return self._image.preprocess(image)

    def encode_images(self, pixels: Any) -> np.ndarray:
        return self._image.encode_images(pixels)
