"""Files in flight during an index run: what each file has produced so far (``FileWork``), the
per-modality batches waiting for the model (``Batch``), and the checks run on a file (hashing it, in a
worker thread, and making sure it did not change while it was read).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import DecodeError
from ..records import MediaFile, Modality, Segment
from .hashing import content_hash
from .pipelines import Pipeline


class Unreadable(DecodeError):
    """The file could not be read as it was this time (not a fault of its bytes): retried on every run."""


@dataclass
class FileWork:
    media: MediaFile
    content_hash: str
    segments: list[Segment] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    decoded: bool = False

    @property
    def complete(self) -> bool:
        return self.decoded and len(self.vectors) == len(self.segments)

    def by_index(self) -> list[tuple[Modality, list[Segment], np.ndarray]]:
        """(index, segments, their vectors) for each index the file's segments go to: its own modality's,
        or for a video the image index (frames) and the audio index (soundtrack windows)."""
        groups: dict[Modality, tuple[list[Segment], list[np.ndarray]]] = {}
        for segment, vector in zip(self.segments, self.vectors):
            parts, vectors = groups.setdefault(segment.track or self.media.modality, ([], []))
            parts.append(segment)
            vectors.append(vector)
        return [(modality, parts, np.vstack(vectors)) for modality, (parts, vectors) in groups.items()]


class Batch:
    """Inputs waiting for the model and files waiting for their commit, for one modality."""

    def __init__(self, pipeline: Pipeline, batch_size: int):
        self.pipeline, self.batch_size = pipeline, batch_size
        self.inputs: list[Any] = []
        self.owners: list[FileWork] = []
        self.files: list[FileWork] = []
        self._ready = 0
        """Segments of the complete files in ``files``."""

    def add(self, work: FileWork, parts: Iterable[tuple[Segment, Any]],
            check: Callable[[MediaFile], None] | None = None) -> None:
        """Queue a file's inputs, running the model whenever a batch is full; ``check`` runs once they are
        all read. On a DecodeError midway (or from ``check``) the file is taken out again and the error
        propagates."""
        self.files.append(work)
        try:
            for segment, model_input in parts:
                work.segments.append(segment)
                self.inputs.append(model_input)
                self.owners.append(work)
                if len(self.inputs) >= self.batch_size:
                    self.encode_pending()
            if not work.segments:
                raise DecodeError(work.media.path, "nothing to index in this file")
            if check is not None:
                check(work.media)
            work.decoded = True
            if work.complete:
                self._ready += len(work.segments)
        except BaseException:
            self.files.remove(work)
            keep = [i for i, owner in enumerate(self.owners) if owner is not work]
            self.inputs = [self.inputs[i] for i in keep]
            self.owners = [self.owners[i] for i in keep]
            raise

    def encode_pending(self) -> None:
        if not self.inputs:
            return
        vectors = self.pipeline.encode(self.inputs)
        for owner, vector in zip(self.owners, vectors):
            owner.vectors.append(vector)
            if owner.complete:  # its last vector (a file still being read is not decoded yet)
                self._ready += len(owner.segments)
        self.inputs, self.owners = [], []

    def ready(self) -> int:
        return self._ready

    def take_complete(self) -> list[FileWork]:
        done = [w for w in self.files if w.complete]
        self.files = [w for w in self.files if not w.complete]
        self._ready = 0
        return done


def hash_or_error(media: MediaFile) -> str | DecodeError:
    try:
        return content_hash(media.path)
    except OSError as exc:
        if media.path.is_symlink() and not media.path.exists():
            # A broken or looping link is a failure (retried once the link changes), not a passing read error.
            return DecodeError(media.path, f"broken symbolic link to {os.readlink(media.path)} "
                                           f"({exc.strerror or exc})")
        if isinstance(exc, FileNotFoundError):
            return Unreadable(media.path, "file vanished while being indexed")
        return Unreadable(media.path, f"cannot read file ({exc.strerror or exc})")


def unchanged_since_found(media: MediaFile) -> None:
    """Refuse a file whose bytes may have changed between discovery, hashing and decoding."""
    try:
        info = os.stat(media.path)
    except FileNotFoundError:
        raise Unreadable(media.path, "file vanished while being indexed") from None
    except OSError as exc:
        raise Unreadable(media.path, f"cannot stat file ({exc.strerror or exc})") from None
    if (info.st_size, info.st_mtime_ns) != (media.size, media.mtime_ns):
        raise Unreadable(media.path, "file changed while being indexed (it is tried again on the next run)")


def decode_into(batches: Mapping[Modality, Batch], pipelines: Mapping[Modality, Pipeline], pool,
                work: Sequence[FileWork]) -> Iterator[tuple[FileWork, DecodeError | None]]:
    """Decode ``work`` in ``pool`` (a ``workers.DecodeWorkers``) and queue each file's model inputs in its
    modality's batch (whose model runs whenever it fills); yields each file, in order, once all its parts
    are queued, with the ``DecodeError`` that took it out again, if one did. What an index run does in one
    process (``Indexer``) and on each Ray worker (``ray_embed_worker``)."""
    decoders = {m: pipelines[m].decoder() for m in {w.media.modality for w in work}}
    jobs = [(decoders[w.media.modality], w.media.path) for w in work]
    for item, parts in zip(work, pool.decoded(jobs)):
        pipeline = pipelines[item.media.modality]
        try:
            batches[item.media.modality].add(
                item, ((segment, pipeline.prepare(segment, payload)) for segment, payload in parts),
                check=unchanged_since_found)
        except DecodeError as exc:
            yield item, exc
        else:
            yield item, None
