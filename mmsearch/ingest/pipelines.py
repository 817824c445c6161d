"""Per-modality steps of an index run: what a decoding process runs on a file (``decoder``: a ``Decoder``
from ``decoders``), what this process makes of each part it sends back (``prepare``: the model's input),
and the model step (``encode``). ``decode(path)`` runs both steps here, for callers without worker
processes (evaluation, benchmarks)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

from ..records import Modality, Segment
from .decoders import Decoder


class Pipeline(Protocol):
    modality: Modality
    """The kind of file it indexes."""

    def decoder(self) -> Decoder:
        """What a decoding process runs on one file: (segment, payload) pairs."""

    def prepare(self, segment: Segment, payload: Any) -> Any:
        """A payload from a decoding process -> the model's input."""

    def decode(self, path: Path) -> Iterable[tuple[Segment, Any]]:
        """(segment, model input) pairs for a file, decoded in this process; may be lazy. Raises DecodeError."""

    def encode(self, inputs: Sequence[Any]) -> np.ndarray | list[np.ndarray]:
        """Model inputs -> one unit vector each (float32)."""

    def spaces(self) -> list[tuple[Modality, "ModelPipeline"]]:
        """(index, the single-model pipeline whose vectors go there) for every index the file's segments reach."""


class _DecodedHere:
    """``decode``: a pipeline's own decoder and ``prepare``, run in this process."""

    def decode(self, path: Path) -> Iterator[tuple[Segment, Any]]:
        for segment, payload in self.decoder()(path):
            yield segment, self.prepare(segment, payload)


@dataclass
class ModelPipeline(_DecodedHere):
    """A pipeline of one model: its segments all go to the index of ``modality``."""

    encoder: Any
    modality: Modality = Modality.IMAGE
    role: str = "clip"
    """The model space the vectors live in: 'clip' or 'clap'."""

    @property
    def dim(self) -> int:
        return self.encoder.identity.dim

    def spaces(self) -> list[tuple[Modality, "ModelPipeline"]]:
        return [(self.modality, self)]

    def prepare(self, segment: Segment, payload: Any) -> Any:
        return payload


@dataclass
class ImagePipeline(ModelPipeline):
    modality: Modality = Modality.IMAGE

    def decoder(self) -> Decoder:
        return Decoder.of("mmsearch.ingest.decoders:image_pixels", **self.pixel_options())

    def pixel_options(self) -> dict[str, Any]:
        """How a decoding process makes this model's input pixels (``decoders.image_pixels``)."""
        return {"draft_size": self.encoder.image_size, "recipe": getattr(self.encoder, "pixel_recipe", None)}

    def prepare(self, segment: Segment, payload: np.ndarray) -> Any:
        import torch

        if getattr(self.encoder, "pixel_recipe", None) is not None:
            return torch.from_numpy(payload)  # already the model's (3, S, S) uint8 input, made by the recipe
        from PIL import Image

        return self.encoder.preprocess(Image.fromarray(payload))  # the model's own preprocessing

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        import torch

        return self.encoder.encode_images(torch.stack(list(inputs)))


@dataclass
class TextPipeline(ModelPipeline):
    modality: Modality = Modality.TEXT

    def decoder(self) -> Decoder:
        return Decoder.of("mmsearch.ingest.decoders:passages")

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        return self.encoder.encode_texts(list(inputs)).vectors


@dataclass
class AudioPipeline(ModelPipeline):
    modality: Modality = Modality.AUDIO
    role: str = "clap"

    def decoder(self) -> Decoder:
        return Decoder.of("mmsearch.ingest.decoders:audio_windows", **self.window_options())

    def window_options(self) -> dict[str, Any]:
        return {"sample_rate": int(self.encoder.sample_rate), "window_seconds": float(self.encoder.window_seconds)}

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        return self.encoder.encode_audio(list(inputs))


VIDEO_FRAMES = {"every_seconds": 5.0, "scene_threshold": 0.4}
"""How frames are sampled from a video (``decoding.video.iter_video_frames``; the rule is in its docstring)."""


@dataclass
class VideoPipeline(_DecodedHere):
    """A video's sampled frames through the image pipeline and its soundtrack through the audio one
    (None: not indexed, e.g. when no audio model can be loaded); each segment says which (``Segment.track``)."""

    image: ImagePipeline
    audio: AudioPipeline | None = None
    frames: dict[str, Any] = field(default_factory=lambda: dict(VIDEO_FRAMES))
    modality: Modality = Modality.VIDEO

    def spaces(self) -> list[tuple[Modality, ModelPipeline]]:
        return [(Modality.IMAGE, self.image)] + ([(Modality.AUDIO, self.audio)] if self.audio is not None else [])

    def decoder(self) -> Decoder:
        return Decoder.of("mmsearch.ingest.decoders:video_moments", frames={**self.image.pixel_options(), **self.frames},
                          sound=self.audio.window_options() if self.audio is not None else None)

    def prepare(self, segment: Segment, payload: Any) -> Any:
        part = self.image if segment.track == Modality.IMAGE else self.audio
        return segment.track, part.prepare(segment, payload)

    def encode(self, inputs: Sequence[tuple[Modality, Any]]) -> list[np.ndarray]:
        """Frames through the image model, windows through the audio model, each batched; vectors in order."""
        vectors: list[Any] = [None] * len(inputs)
        for track, part in self.spaces():
            at = [n for n, (kind, _) in enumerate(inputs) if kind == track]
            if at:
                for n, vector in zip(at, part.encode([inputs[n][1] for n in at])):
                    vectors[n] = vector
        return vectors


def index_pipelines(clip: Any | None, clap: Any | None = None, *, video_sound: bool = True) -> list[Pipeline]:
    """The pipelines of an index run: images, texts and videos through ``clip`` (None: none of them), audio
    files through ``clap`` (None: none), and a video's soundtrack too while there is ``clap`` and
    ``video_sound``. The same in the indexing process and on each Ray worker."""
    sound = AudioPipeline(clap) if clap is not None else None
    if clip is None:
        return [sound] if sound is not None else []
    images = ImagePipeline(clip)
    return [images, TextPipeline(clip), *([sound] if sound is not None else []),
            VideoPipeline(images, sound if video_sound else None)]
