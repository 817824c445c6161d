"""Embedding a query's parts (texts, image files, audio files, indexed files) into every model space each
one can reach.

Routing: text is embedded by CLIP's text tower (for images and passages) and by CLAP's (for audio);
an image by CLIP's image tower, and mapped into CLAP's space through the bridge for audio; an audio
file by CLAP's audio tower, and mapped into CLIP's space through the bridge for images and passages.
An indexed file (a ``like`` part: "more like this") is its stored vectors, no re-embedding: an image's or
passages' in CLIP's space, an audio file's windows in CLAP's, each mapped across by the bridge like a
query file of its kind. Each part keeps its own unit vectors (``PartVectors``); ``search.fusion`` puts
them together (a weighted sum in each space, or a fusion of each part's ranked list).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DecodeError, PathNotFoundError, QueryError, UsageError

MAX_QUERY_AUDIO_WINDOWS = 6
"""An audio query is its first six windows: with CLAP's 10 s windows every 7.5 s, its first 47.5 s."""
PART_KINDS = ("text", "image", "audio", "like")
NATIVE = {"text": frozenset({"clip", "clap"}), "image": frozenset({"clip"}), "audio": frozenset({"clap"})}
"""The spaces a part's own model embeds it in (a ``like`` part: its file's space); others need the bridge."""


@dataclass(frozen=True)
class Part:
    """One part of a query: ``kind`` text, image, audio or like; ``value`` the text, the file's path, or the
    indexed file's catalog id; ``weight`` how much of it (negative: less of it)."""

    kind: str
    value: str | Path | int
    weight: float = 1.0


def parse_part(kind: str, spec: str) -> Part:
    """A part from ``VALUE[:WEIGHT]`` (the CLI's and the HTTP API's form): the text after the last ``:`` is
    the weight when it reads as a number (``beach:2``, ``night:-0.5``), else part of the value. So a value
    that itself ends in ``:NUMBER`` (``clock at 10:30``, ``take:2.wav``) is written with an explicit weight:
    ``clock at 10:30:1``. A ``like`` value is a catalog id (digits) or an indexed file's path."""
    if kind not in PART_KINDS:
        raise UsageError(f"a query part is one of {', '.join(PART_KINDS)}, not {kind!r}")
    value, weight = spec, 1.0
    head, colon, tail = spec.rpartition(":")
    if colon and head:
        try:
            weight = float(tail)
            value = head
        except ValueError:
            pass
    if not math.isfinite(weight):
        raise UsageError(f"{{opt:{kind}}} {spec!r}: the weight must be a finite number")
    if not value.strip():
        raise UsageError(f"{{opt:{kind}}} {spec!r}: nothing before the weight")
    if kind == "like":
        return Part(kind, int(value) if value.strip().isdigit() else Path(value), weight)
    return Part(kind, Path(value) if kind in ("image", "audio") else value, weight)


@dataclass(frozen=True)
class Query:
    """What to search for: ``text``, an ``image`` file, an ``audio`` file and ``like`` (an indexed file's catalog
    id, ``Hit.item_id``: "more like this"), each of weight 1, and any number of weighted ``parts``."""

    text: str | None = None
    image: Path | None = None
    audio: Path | None = None
    like: int | None = None
    parts: tuple[Part, ...] = ()

    def all_parts(self) -> tuple[Part, ...]:
        """The query's parts in order: ``text``, ``image``, ``audio``, ``like``, then ``parts``."""
        fixed = [Part(kind, value) for kind, value in (("text", self.text), ("image", self.image),
                                                        ("audio", self.audio), ("like", self.like)) if value is not None]
        return tuple(fixed) + tuple(self.parts)

    def first(self, kind: str):
        """The value of the first part of ``kind``, or None (what decides which towers must be opened)."""
        return next((part.value for part in self.all_parts() if part.kind == kind), None)


@dataclass(frozen=True)
class PartVectors:
    """One part embedded: unit rows in each space it reaches (an audio file: a row per window)."""

    part: Part
    by_space: dict[str, np.ndarray]
    native: frozenset[str]
    """The spaces its own model embeds it in (the others were reached through the bridge)."""

    def vector(self, space: str) -> np.ndarray:
        """The part as one unit vector in ``space`` (several rows: their normalised mean)."""
        return _one(self.by_space[space])


def _one(rows: np.ndarray) -> np.ndarray:
    """Unit rows as one unit vector: the row itself, or the rows' normalised mean."""
    if len(rows) == 1:
        return rows[0]
    mean = rows.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def embed_parts(parts: tuple[Part, ...], *, clip=None, clap=None, bridge=None,
                liked: dict[int, tuple[str, np.ndarray]] | None = None) -> tuple[list[PartVectors], list[str]]:
    """Each part's unit vectors in every space it reaches, and notes on how they were read. ``clip``/``clap``:
    encoders or None when unavailable; ``bridge``: SpaceMap (CLAP -> CLIP) or None; ``liked``: catalog id ->
    (space, stored vectors) of the ``like`` parts' files."""
    if not parts:
        raise UsageError("nothing to search for: give a {opt:text}, an {opt:image} file, an {opt:audio} file "
                         "or an indexed file's id ({opt:like})")
    notes: list[str] = []
    embedded = []
    for part in parts:
        by_space: dict[str, np.ndarray] = {}
        if part.kind == "text":
            if not str(part.value).strip():
                raise UsageError("empty text query")
            if clip is not None:
                encoded = clip.encode_texts([part.value])
                if encoded.truncated[0]:
                    notes.append(f"query text truncated to the image model's {clip.context_length}-token context")
                by_space["clip"] = np.asarray(encoded.vectors[:1], np.float32)
            if clap is not None:
                encoded = clap.encode_texts([part.value])
                if encoded.truncated[0] and not notes:
                    notes.append("query text truncated to the audio model's 77-token context")
                by_space["clap"] = np.asarray(encoded.vectors[:1], np.float32)
            native = NATIVE["text"]
        elif part.kind == "image":
            if clip is None:
                raise UsageError("{opt:image} queries need the store's image model")
            by_space["clip"] = image_vector(clip, Path(part.value))[None, :].astype(np.float32)
            native = NATIVE["image"]
        elif part.kind == "audio":
            if clap is None:
                raise UsageError("{opt:audio} queries need an audio model ({opt:audio_model})")
            by_space["clap"] = np.asarray(audio_vectors(clap, Path(part.value)), np.float32)
            native = NATIVE["audio"]
        else:
            space, stored = (liked or {})[part.value]
            by_space[space] = np.asarray(stored, np.float32)[:MAX_QUERY_AUDIO_WINDOWS] if space == "clap" \
                else _one(np.asarray(stored, np.float32))[None, :]
            native = frozenset({space})
        if bridge is not None and "clip" in by_space and "clap" not in by_space:
            by_space["clap"] = bridge.apply_reverse(_one(by_space["clip"])[None, :])
        elif bridge is not None and "clap" in by_space and "clip" not in by_space:
            by_space["clip"] = bridge.apply(_one(by_space["clap"])[None, :])
        embedded.append(PartVectors(part, by_space, native))
    return embedded, notes


def image_vector(clip, path: Path) -> np.ndarray:
    from ..decoding.images import load_image

    if not path.is_file():
        raise PathNotFoundError(path)
    try:
        image = load_image(path, target_size=clip.image_size)
    except DecodeError as exc:
        raise QueryError(f"{path}: {{opt:image}} is {exc.reason}") from exc
    return np.asarray(clip.encode_images(clip.preprocess(image)[None])[0], np.float32)


def audio_vectors(clap, path: Path) -> np.ndarray:
    """(windows, dim) unit vectors of the query file's first ``MAX_QUERY_AUDIO_WINDOWS`` windows."""
    from ..decoding.audio import iter_audio_windows

    if not path.is_file():
        raise PathNotFoundError(path)
    windows = []
    try:
        for window in iter_audio_windows(path, sample_rate=clap.sample_rate, window_seconds=clap.window_seconds):
            windows.append(window.samples)
            if len(windows) >= MAX_QUERY_AUDIO_WINDOWS:
                break
    except DecodeError as exc:
        raise QueryError(f"{path}: {{opt:audio}} is {exc.reason}") from exc
    if not windows:
        raise QueryError(f"{path}: {{opt:audio}} has no audio frames")
    return clap.encode_audio(windows)


def as_query(query: "Query | str | None", image: Path | str | None = None, audio: Path | str | None = None) -> "Query":
    """``Engine.search``'s query: a ``Query`` as it is, or one made of a text, an image file and an audio file."""
    if isinstance(query, Query):
        if image is not None or audio is not None:
            raise UsageError("give the image and audio files inside the Query, or pass text, image and audio "
                             "separately, not both")
        return query
    return Query(text=query, image=Path(image) if image is not None else None,
                 audio=Path(audio) if audio is not None else None)
