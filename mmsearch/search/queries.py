"""Embedding a query (text, image file, audio file, or a mix) into every model space it can reach.

Routing: text is embedded by CLIP's text tower (for images and passages) and by CLAP's (for audio);
an image by CLIP's image tower, and mapped into CLAP's space through the bridge for audio; an audio
file by CLAP's audio tower, and mapped into CLIP's space through the bridge for images and passages.
An indexed file (``Query.like``: "more like this") is its stored vectors, no re-embedding: an image's or
passages' in CLIP's space, an audio file's windows in CLAP's, each mapped across by the bridge like a query
file of its kind. A query with several parts is the normalised mean of its parts in each space.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DecodeError, PathNotFoundError, QueryError, UsageError
from .searcher import QueryVectors

MAX_QUERY_AUDIO_WINDOWS = 6
"""An audio query is its first six windows: with CLAP's 10 s windows every 7.5 s, its first 47.5 s."""


@dataclass(frozen=True)
class Query:
    text: str | None = None
    image: Path | None = None
    audio: Path | None = None
    like: int | None = None
    """An indexed file's catalog id (``Hit.item_id``): search with its stored vectors ("more like this")."""


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


def _mean(parts: list[np.ndarray]) -> np.ndarray:
    return _unit(np.mean(parts, axis=0))


def embed_query(query: Query, *, clip=None, clap=None, bridge=None,
                liked: tuple[str, np.ndarray] | None = None) -> QueryVectors:
    """``clip``/``clap``: encoders or None when unavailable; ``bridge``: SpaceMap (CLAP -> CLIP) or None;
    ``liked``: (space, stored vectors) of the ``query.like`` file."""
    if query.text is None and query.image is None and query.audio is None and query.like is None:
        raise UsageError("nothing to search for: give a {opt:text}, an {opt:image} file, an {opt:audio} file "
                         "or an indexed file's id ({opt:like})")
    if query.text is not None and not query.text.strip():
        raise UsageError("empty text query")
    notes: list[str] = []
    in_clip: list[np.ndarray] = []
    in_clap: list[np.ndarray] = []
    if query.text is not None:
        if clip is not None:
            encoded = clip.encode_texts([query.text])
            if encoded.truncated[0]:
                notes.append(f"query text truncated to the image model's {clip.context_length}-token context")
            in_clip.append(encoded.vectors[0])
        if clap is not None:
            encoded = clap.encode_texts([query.text])
            if encoded.truncated[0] and not notes:
                notes.append("query text truncated to the audio model's 77-token context")
            in_clap.append(encoded.vectors[0])
    if query.image is not None:
        if clip is None:
            raise UsageError("{opt:image} queries need the store's image model")
        vector = image_vector(clip, Path(query.image))
        in_clip.append(vector)
        if clap is not None and bridge is not None:
            in_clap.append(bridge.apply_reverse(vector[None, :])[0])
    if liked is not None and liked[0] == "clip":
        vector = _mean(list(liked[1]))  # an image, or a text file's passages
        in_clip.append(vector)
        if bridge is not None:
            in_clap.append(bridge.apply_reverse(vector[None, :])[0])
    audio_windows = None
    if query.audio is not None:
        if clap is None:
            raise UsageError("{opt:audio} queries need an audio model ({opt:audio_model})")
        audio_windows = audio_vectors(clap, Path(query.audio))
    if liked is not None and liked[0] == "clap":
        stored = np.asarray(liked[1], np.float32)[:MAX_QUERY_AUDIO_WINDOWS]
        audio_windows = stored if audio_windows is None else np.vstack([audio_windows, stored])
    if audio_windows is not None and bridge is not None:
        in_clip.append(bridge.apply(_mean(list(audio_windows))[None, :])[0])
    by_space = {}
    if in_clip:
        by_space["clip"] = _mean(in_clip)[None, :]
    if audio_windows is not None and not in_clap:
        by_space["clap"] = audio_windows  # audio alone: each window searches, a file scores its best match
    elif in_clap:
        if audio_windows is not None:
            in_clap.append(_mean(list(audio_windows)))
        by_space["clap"] = _mean(in_clap)[None, :]
    return QueryVectors(by_space, tuple(notes))


def image_vector(clip, path: Path) -> np.ndarray:
    from ..decoding.images import load_image

    if not path.is_file():
        raise PathNotFoundError(path)
    try:
        image = load_image(path, target_size=clip.image_size)
    except DecodeError as exc:
        raise QueryError(f"{path}: {{opt:image}} is {exc.reason}") from exc
    return clip.encode_images(clip.preprocess(image)[None])[0]  # a torch tensor, or numpy from an export


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
