"""What the decoding processes run: a ``Decoder`` names a function by its import path, with its options, so
it crosses to a worker process as a few bytes; the functions here turn one file into (segment, payload)
pairs whose payloads are plain data (numpy arrays, strings) that cross back the same way.

Images leave here as the model's input pixels, (3, S, S) uint8, resized and cropped as the model's own
preprocessing would (``pil_pixels``): an eighth of the bytes of the float tensor, and the normalisation
left to one batched step beside the model. Audio leaves as windows at the model's rate, text as passages,
and a video as its sampled frames followed by its soundtrack's windows, each segment saying which index
it goes to (``Segment.track``).

Everything a worker process imports on start (``workers``: its fork server preloads this module) is
light: Pillow and numpy. PyAV, soundfile and the document libraries load on the first file that needs them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..decoding.images import load_image
from ..decoding.text import load_passages
from ..encoders.image_exported import pil_pixels
from ..errors import DecodeError
from ..records import Modality, Segment

PixelRecipe = tuple[int, str, int]
"""(short side, resampling mode, crop size): open_clip's Resize + CenterCrop, done with Pillow."""


@dataclass(frozen=True)
class Decoder:
    """``function`` ("package.module:name") called as ``function(path, **options)``; it returns or yields
    (segment, payload) pairs and raises ``DecodeError`` for a file it cannot read."""

    function: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, function: str, **options: Any) -> "Decoder":
        return cls(function, tuple(sorted(options.items())))

    def __call__(self, path: Path | str) -> Iterable[tuple[Segment, Any]]:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)(Path(path), **dict(self.options))


def model_pixels(image, recipe: PixelRecipe | None) -> np.ndarray:
    """The model's input pixels of an upright RGB image: (3, S, S) uint8 by ``recipe``; without one (a model
    whose preprocessing is not Resize + CenterCrop) the whole image as (H, W, 3) uint8, for the model's own
    preprocessing in the indexing process."""
    if recipe is None:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    return pil_pixels(image, *recipe)


def image_pixels(path: Path, *, draft_size: int | None = None,
                 recipe: PixelRecipe | None = None) -> list[tuple[Segment, np.ndarray]]:
    """One image file: its model input pixels."""
    return [(Segment(0), model_pixels(load_image(path, target_size=draft_size), recipe))]


def passages(path: Path) -> list[tuple[Segment, str]]:
    """A text file or a document (PDF, HTML, DOCX, EPUB): its passages, with their pages where it has them."""
    from ..decoding.documents import DOCUMENT_EXTENSIONS, load_document

    parts = load_document(path) if path.suffix.lower() in DOCUMENT_EXTENSIONS else load_passages(path)
    return [(part, part.text) for part in parts]


def audio_windows(path: Path, *, sample_rate: int, window_seconds: float) -> Iterator[tuple[Segment, np.ndarray]]:
    """An audio file's windows at the model's rate, streamed (a long file never sits whole in memory)."""
    from ..decoding.audio import iter_audio_windows

    for ordinal, window in enumerate(iter_audio_windows(path, sample_rate=sample_rate, window_seconds=window_seconds)):
        yield Segment(ordinal, start=round(window.start, 3), end=round(window.end, 3)), window.samples


def video_moments(path: Path, *, frames: dict[str, Any] | None,
                  sound: dict[str, Any] | None) -> Iterator[tuple[Segment, np.ndarray]]:
    """A video: its sampled frames (``decoding.video``'s rule) as image segments at their time, then its
    soundtrack as audio windows. ``frames``: the options of ``image_pixels`` plus those of
    ``iter_video_frames``; ``sound``: those of ``audio_windows`` (None: the soundtrack is not indexed).
    A video without a picture stream is indexed by its soundtrack alone, and the other way round."""
    from ..decoding.video import iter_video_frames, probe_video

    info = probe_video(path)
    ordinal = 0
    if frames is not None and info.has_video:
        options = dict(frames)
        recipe, draft_size = options.pop("recipe", None), options.pop("draft_size", None)
        for frame in iter_video_frames(path, target_size=draft_size, **options):
            moment = round(frame.time, 3)
            yield Segment(ordinal, start=moment, end=moment, track=Modality.IMAGE), model_pixels(frame.image, recipe)
            ordinal += 1
    if sound is not None and info.has_audio:
        for segment, samples in audio_windows(path, **sound):
            yield Segment(ordinal, start=segment.start, end=segment.end, track=Modality.AUDIO), samples
            ordinal += 1
    if ordinal == 0:
        streams = [name for name, present in (("picture", info.has_video), ("sound", info.has_audio)) if present]
        raise DecodeError(path, "no picture or sound stream" if not streams else
                          f"nothing to index in its {' and '.join(streams)} stream")
