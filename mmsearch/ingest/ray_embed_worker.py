"""What runs inside each Ray worker (an actor of a Ray Data actor pool, ``ray_embed``): the models of the
store, loaded once per actor through the normal loaders, and the same decode -> prepare -> encode steps
as an index run on one machine (``DecodeWorkers`` for decoding, ``Batch`` for the model calls), so the
vectors are the ones an index run in one process would make. Nothing here writes to the store.

The worker reads each file itself, by the path the indexing process found: the files must be at the same
paths on every node (a shared filesystem). Ray is not imported here: the actor is a plain class that
Ray Data calls with a batch of files (a dict of numpy columns) and that returns one row per file.
"""
from __future__ import annotations

import os
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DecodeError, MMSearchError
from ..records import MediaFile, Modality
from .batches import Batch, FileWork, Unreadable, decode_into
from .pipelines import ModelPipeline, Pipeline, index_pipelines
from .workers import DecodeWorkers


@dataclass(frozen=True)
class WorkerModel:
    role: str
    """'clip' or 'clap'."""
    spec: str
    fingerprint: str
    """What the store is bound to: the worker refuses a model that makes other vectors."""


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs to embed files as the indexing process would (a few hundred bytes)."""

    models: tuple[WorkerModel, ...]
    modalities: tuple[str, ...]
    """The kinds of file it is sent (``Modality`` values)."""
    video_sound: bool
    """Whether a video's soundtrack is indexed (the audio model could be loaded)."""
    device: str
    precision: str
    batch_size: int
    store: str
    """The store folder (the exported image tower a ``precision`` may run from lives there)."""
    file_timeout: float | None
    decode_memory: int | None
    decoders: int
    """Decoding processes per worker."""


COLUMNS = ("number", "reason", "transient", "result", "worker")
"""A worker's answer, one row per file: its number in the run, why it failed ('' when it did not),
whether that failure is retried on every run (``Unreadable``), the pickled (segments, vectors) and which
worker (host:pid) embedded it."""


def load_models(job: WorkerJob) -> dict[str, Any]:
    """The job's models, loaded as the indexing process loads them, each checked against the store's."""
    loaded: dict[str, Any] = {}
    for model in job.models:
        if model.role == "clip":
            from ..encoders.clip import load_clip
            from ..encoders.precision import prepare_image_runtime

            encoder = load_clip(model.spec, device=job.device, precision=job.precision)
            prepare_image_runtime(encoder, Path(job.store), job.precision, job.batch_size)
        else:
            from ..encoders.clap import load_audio_encoder

            encoder = load_audio_encoder(model.spec, device=job.device)
        if encoder.identity.fingerprint != model.fingerprint:
            raise RuntimeError(f"{model.spec} loads as {encoder.identity.fingerprint} on this node, but the store's "
                               f"vectors were made by {model.fingerprint}: every node needs the same model files")
        loaded[model.role] = encoder
    return loaded


def build_pipelines(job: WorkerJob, models: dict[str, Any]) -> dict[Modality, Pipeline]:
    """The pipelines of ``Engine.index``, over this worker's models."""
    wanted = {Modality(m) for m in job.modalities}
    return {pipeline.modality: pipeline
            for pipeline in index_pipelines(models.get("clip"), models.get("clap"), video_sound=job.video_sound)
            if pipeline.modality in wanted}


def needed_models(pipelines: dict[Modality, Pipeline]) -> list[ModelPipeline]:
    """The single-model pipelines behind ``pipelines``, one per model space."""
    parts: dict[str, ModelPipeline] = {}
    for pipeline in pipelines.values():
        for _, part in pipeline.spaces():
            parts.setdefault(part.role, part)
    return list(parts.values())


class EmbedWorker:
    """One Ray Data actor: built once with its ``WorkerJob`` (loading the models), then called with batches
    of files; returns ``COLUMNS`` for each file, failures included (a file never goes missing)."""

    def __init__(self, job: WorkerJob):
        self.job = job
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        try:
            self.pipelines = build_pipelines(job, load_models(job))
        except (MMSearchError, RuntimeError) as exc:  # a plain error crosses back to the indexing process whole
            raise RuntimeError(f"Ray worker on {socket.gethostname()} cannot load the models: {exc}") from None
        self.decoding = DecodeWorkers(job.decoders, limit=job.file_timeout, memory=job.decode_memory)

    def __call__(self, files: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        work = [FileWork(MediaFile(Path(str(path)), Modality(str(modality)), int(size), int(mtime)), "")
                for path, modality, size, mtime in zip(files["path"], files["modality"], files["size"],
                                                        files["mtime_ns"])]
        batches = {m: Batch(p, self.job.batch_size) for m, p in self.pipelines.items()}
        failures = {at: error for at, (_, error) in enumerate(decode_into(batches, self.pipelines, self.decoding, work))
                    if error is not None}
        for batch in batches.values():
            batch.encode_pending()
        rows = [_row(item, failures.get(at)) for at, item in enumerate(work)]
        return {"number": np.asarray(files["number"], dtype=np.int64),
                "reason": np.array([reason for reason, _, _ in rows], dtype=object),
                "transient": np.array([transient for _, transient, _ in rows], dtype=bool),
                "result": np.array([result for _, _, result in rows], dtype=object),
                "worker": np.array([self.name] * len(work), dtype=object)}

    def __del__(self) -> None:
        decoding = getattr(self, "decoding", None)
        if decoding is not None:
            decoding.close()


def _row(item: FileWork, failure: DecodeError | None) -> tuple[str, bool, bytes]:
    """(why it failed or '', whether that is retried on every run, the pickled segments and vectors)."""
    if failure is not None:
        return failure.reason, isinstance(failure, Unreadable), b""
    if not item.complete:  # cannot happen: every pending input was encoded
        return "not embedded (internal error in the Ray worker)", True, b""
    vectors = np.vstack([np.asarray(v, dtype=np.float32) for v in item.vectors])
    return "", False, pickle.dumps((item.segments, vectors), protocol=pickle.HIGHEST_PROTOCOL)


def read_row(result: bytes) -> tuple[list, list[np.ndarray]]:
    """A worker's (segments, vectors) for one file, as the indexer's ``FileWork`` holds them."""
    segments, vectors = pickle.loads(result)
    return segments, list(vectors)
