"""Indexing throughput end to end, next to the image model alone on the same images.

``measure_index_throughput(paths, encoder)`` does, in order:

1. warm-up: one batch through the encoder (lazy initialisation and GPU kernel selection stay out of
   both timings);
2. END TO END: ``Engine.index`` (what ``mmsearch index`` runs, audio left out) indexes ``paths`` into a
   fresh temporary store (discovery, stat, content hashing, decoding and preprocessing in worker
   threads, model, SQLite commits, FAISS adds and the final index save) - its wall-clock time;
3. MODEL ONLY: the indexed images (up to ``encode_limit``) are decoded and preprocessed with
   ``ImagePipeline.decode`` first, untimed, then only ``ImagePipeline.encode`` is timed over them in
   batches of ``batch_size`` (stack + host-to-device copy + forward + normalisation + copy back).

The ratio end-to-end images/s / model-only images/s says how much of the model's speed indexing
keeps; well below 1 means decoding, hashing or storage is the bottleneck, not the model.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import Settings
from ..encoders.precision import prepare_image_runtime
from ..encoders.runtime import default_workers
from ..engine import NO_AUDIO, Engine
from ..errors import DecodeError, UsageError
from ..ingest.discovery import discover, normalise_root
from ..ingest.pipelines import ImagePipeline
from ..progress import NoProgress, Progress
from ..records import Modality
from ..store.rows import INDEXED

log = logging.getLogger(__name__)

DEFAULT_ENCODE_LIMIT = 1024
"""Images held decoded in memory for the model-only timing (about 0.6 MB each at 224 px)."""


@dataclass(frozen=True)
class ThroughputReport:
    paths: tuple[str, ...]
    model: str
    device: str
    precision: str
    """What ran the image tower: torch's fp32/bf16/fp16, or onnxruntime's 'onnx' (float32) or 'int8'."""
    batch_size: int
    workers: int
    # end to end
    files: int
    """Files indexed (images + texts; failures not counted)."""
    images: int
    texts: int
    failed: int
    vectors: int
    """Vectors embedded (one per image, one per text passage)."""
    index_seconds: float
    files_per_second: float
    images_per_second: float
    # model only
    encoded_images: int
    encode_seconds: float
    encode_images_per_second: float
    ratio: float
    """End-to-end images/s divided by model-only images/s (0 when either is 0)."""
    runtime_choice: str = ""
    """How ``precision`` was chosen, in words (for auto: the timings on this machine)."""


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 3) if seconds > 0 else 0.0


def measure_index_throughput(
    paths: Sequence[Path | str],
    encoder: Any,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    encode_limit: int = DEFAULT_ENCODE_LIMIT,
    progress: Progress | None = None,
    store_dir: Path | str | None = None,
    precision: str = "auto",
) -> ThroughputReport:
    """Index ``paths`` into a fresh store (in ``store_dir``, or a temporary folder removed afterwards)
    and time it, then time the image encoder alone on the same images. ``encoder`` is loaded already;
    its image tower is set up for ``precision`` (exported, or timed for auto) before either timing."""
    if batch_size < 1 or encode_limit < 1:
        raise UsageError("batch size and encode limit must be at least 1")
    roots = [normalise_root(p) for p in paths]
    progress = progress or NoProgress()
    image_files = [m.path for m in discover(roots) if m.modality == Modality.IMAGE]
    device = str(getattr(getattr(encoder, "runtime", None), "device", "auto"))
    used_workers = workers or default_workers(device)
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-", dir=store_dir) as tmp:
        settings = Settings.resolve(store=Path(tmp) / "store", model=encoder.identity.spec, audio_model=NO_AUDIO,
                                    batch_size=batch_size, workers=used_workers, precision=precision)
        with Engine.open(settings, create=True, clip=encoder) as engine:
            prepare_image_runtime(encoder, engine.store.path, precision, batch_size)
            pipeline = ImagePipeline(encoder)
            _warm_up(pipeline, image_files, batch_size)
            started = time.perf_counter()
            report = engine.index(roots, progress=progress, export=False)  # the one-time export is not indexing
            index_seconds = time.perf_counter() - started
            files, _segments = engine.store.catalog.counts()
            indexed_images = [Path(p) for p, row in engine.store.catalog.all_items().items()
                              if row.modality == Modality.IMAGE and row.state == INDEXED]

    images, texts = files.get("image", 0), files.get("text", 0)
    inputs = _decode_all(pipeline, sorted(indexed_images)[:encode_limit], progress)
    encode_seconds = _time_encoder(pipeline, inputs, batch_size, progress)
    end_to_end = _rate(images, index_seconds)
    model_only = _rate(len(inputs), encode_seconds)
    runtime = getattr(encoder, "runtime", None)
    return ThroughputReport(
        paths=tuple(str(r) for r in roots), model=encoder.identity.spec,
        device=str(getattr(runtime, "device", "?")),
        precision=str(getattr(encoder, "image_runtime", getattr(runtime, "precision", "?"))),
        runtime_choice=(getattr(encoder, "runtime_choice", None) or ("", ""))[1],
        batch_size=batch_size, workers=used_workers,
        files=images + texts, images=images, texts=texts, failed=len(report.failed),
        vectors=report.segments_embedded, index_seconds=round(index_seconds, 3),
        files_per_second=_rate(images + texts, index_seconds), images_per_second=end_to_end,
        encoded_images=len(inputs), encode_seconds=round(encode_seconds, 3), encode_images_per_second=model_only,
        ratio=round(end_to_end / model_only, 4) if end_to_end and model_only else 0.0)


def _warm_up(pipeline: ImagePipeline, image_files: list[Path], batch_size: int) -> None:
    for path in image_files[:8]:
        try:
            inputs = [model_input for _, model_input in pipeline.decode(path)]
        except DecodeError:
            continue
        pipeline.encode(inputs * min(batch_size, 8))
        return


def _decode_all(pipeline: ImagePipeline, files: list[Path], progress: Progress) -> list[Any]:
    inputs: list[Any] = []
    progress.start(len(files), "decoding for the model-only timing", "image")
    try:
        for path in files:
            try:
                inputs.extend(model_input for _, model_input in pipeline.decode(path))
            except DecodeError as exc:  # changed since it was indexed
                log.warning("%s", exc)
            progress.advance(1)
    finally:
        progress.finish()
    return inputs


def _time_encoder(pipeline: ImagePipeline, inputs: list[Any], batch_size: int, progress: Progress) -> float:
    progress.start(len(inputs), "model only", "image")
    elapsed = 0.0
    try:
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start:start + batch_size]
            began = time.perf_counter()
            pipeline.encode(batch)  # returns host numpy arrays, so GPU work is finished here
            elapsed += time.perf_counter() - began
            progress.advance(len(batch))
    finally:
        progress.finish()
    return elapsed
