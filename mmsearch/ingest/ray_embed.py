"""Embedding an index run's files on a Ray cluster, while this process stays the only writer of the store.

``RayEmbedder`` is the indexer's ``embedder`` (``Indexer(..., embedder=...)``): everything else of the run
(finding files, hashing them, moves, copies, removals, recording failures, saving the indexes) happens
here as usual; only the files to embed go to the cluster. They go as a Ray Data dataset of (path, kind,
size, mtime) rows, mapped in batches by a pool of actors (``ActorPoolStrategy``), each holding the
store's models once (``ray_embed_worker.EmbedWorker``): one GPU per actor where the cluster has GPUs,
else CPUs. Each actor decodes its files itself (in its own decoding processes: a hostile file fails
alone, with the reason it gets in one process) -- so every node must see the files at the same paths (a
shared filesystem) and have mmsearch and the models installed. Per file it returns the segments and
their vectors, or why it failed; the results stream back as they are made and the indexer commits them
batch by batch, in the same transactions as ever: killed at any moment, a re-run embeds only what was
not committed.

An actor that dies while embedding (a node lost, out of memory) is restarted and its batch retried (Ray
Data's fault tolerance for actor pools); actors that cannot even start (a node without mmsearch or the
model) end the run with a ``ClusterError`` after Ray Data's few attempts. If the dataset fails after some
files came back, those are committed and the others are recorded as failed for now, retried on the
next run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from ..config import Settings
from ..errors import ClusterError, DecodeError
from ..records import IndexReport, Modality
from .batches import FileWork, Unreadable
from .pipelines import Pipeline, VideoPipeline
from .ray_embed_cluster import AUTO, Cluster, check_reachable, connect, import_ray
from .ray_embed_worker import EmbedWorker, WorkerJob, WorkerModel, needed_models, read_row
from .workers import DEFAULT_MEMORY

log = logging.getLogger(__name__)

CPU_BATCH, GPU_BATCH = 32, 256
"""Model inputs per call (and files per batch sent to an actor) when ``batch_size`` is not given."""
MAX_DECODERS = 8


@dataclass(frozen=True)
class RayOptions:
    address: str = AUTO
    """``auto`` (a local cluster on 127.0.0.1 for this run) or what ``ray.init(address=...)`` takes."""
    workers: int | None = None
    """Actors, each with its own copy of the models (default: one per GPU, else one per two CPUs)."""
    gpus_per_worker: float | None = None
    """GPUs each actor holds (default: 1 where the cluster has GPUs, else none)."""


class RayEmbedder:
    """See the module docstring. ``device``, ``precision``, ``batch_size``, ``decoders`` (decoding processes
    per actor), ``file_timeout`` and ``decode_memory`` mean what they mean for an index run in one process."""

    def __init__(self, options: RayOptions | str, *, store: Path, device: str = "auto", precision: str = "auto",
                 batch_size: int | None = None, decoders: int | None = None, file_timeout: float | None = None,
                 decode_memory: int | None = DEFAULT_MEMORY):
        self.options = RayOptions(options) if isinstance(options, str) else options
        self.store, self.device, self.precision = store, device, precision
        self.batch_size, self.decoders = batch_size, decoders
        self.file_timeout, self.decode_memory = file_timeout, decode_memory
        self.cluster: Cluster | None = None
        self.workers = 0
        """Actors the run used (0: nothing was embedded, so no cluster was needed)."""
        self.embedded_by: set[str] = set()
        import_ray()  # a missing Ray, or a cluster that is not there, fails before the run starts
        if self.options.address != AUTO:
            check_reachable(self.options.address)

    @classmethod
    def for_settings(cls, options: RayOptions | str, settings: Settings, store: Path) -> "RayEmbedder":
        """As an index run with ``settings`` embeds: its device, precision, batch size, decoding processes
        (``workers``, here per actor) and per-file time limit."""
        return cls(options, store=store, device=settings.device, precision=settings.precision,
                   batch_size=settings.batch_size, decoders=settings.workers, file_timeout=settings.file_timeout)

    # -- the indexer's side ----------------------------------------------------------------------------
    def embed(self, work: Sequence[FileWork],
              pipelines: Mapping[Modality, Pipeline]) -> Iterator[tuple[FileWork, DecodeError | None]]:
        """Each file of ``work`` once, in the order the cluster finishes them: with its segments and vectors
        filled in (and ``decoded``), or with why it failed."""
        if not work:
            return
        if self.cluster is None:
            self.cluster = connect(self.options.address)
        ray = self.cluster.ray
        kinds = {w.media.modality for w in work}  # only their models: the others need not load
        job, actors, per_actor = self._plan({m: p for m, p in pipelines.items() if m in kinds})
        files = max(1, min(job.batch_size, -(-len(work) // actors)))  # a batch for each actor at least
        rows = [{"number": n, "path": str(w.media.path), "modality": w.media.modality.value, "size": w.media.size,
                 "mtime_ns": w.media.mtime_ns} for n, w in enumerate(work)]
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), -(-len(rows) // files))))
        dataset = dataset.map_batches(
            EmbedWorker, fn_constructor_args=(job,), batch_size=files, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1, num_gpus=per_actor)
        self.workers = actors
        returned: set[int] = set()
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for number, reason, transient, result, worker in zip(
                        batch["number"], batch["reason"], batch["transient"], batch["result"], batch["worker"]):
                    if int(number) in returned:  # a batch retried after its worker died sent part of it twice
                        continue
                    item = work[int(number)]
                    returned.add(int(number))
                    self.embedded_by.add(str(worker))
                    yield item, self._filled(item, str(reason), bool(transient), result)
        except Exception as exc:
            if not returned:
                raise ClusterError(f"{{opt:ray}}: the Ray workers failed before embedding anything: "
                                   f"{_last_line(exc)}") from exc
            log.warning("the Ray workers failed: %s", _last_line(exc))
            for number, item in enumerate(work):
                if number not in returned:
                    returned.add(number)
                    yield item, Unreadable(item.media.path, f"not embedded: the Ray workers failed ({_last_line(exc)}); "
                                                            f"tried again on the next run")
        for number, item in enumerate(work):  # cannot happen: a dataset returns every row or raises
            if number not in returned:
                yield item, Unreadable(item.media.path, "not embedded: no answer from the Ray workers")

    def _filled(self, item: FileWork, reason: str, transient: bool, result) -> DecodeError | None:
        if reason:
            return (Unreadable if transient else DecodeError)(item.media.path, reason)
        item.segments, item.vectors = read_row(result)
        item.decoded = True
        return None

    def _plan(self, pipelines: Mapping[Modality, Pipeline]) -> tuple[WorkerJob, int, float]:
        """The actors' job, how many actors, and the GPUs each holds."""
        resources = self.cluster.resources()
        gpus, cpus = float(resources.get("GPU", 0)), max(1.0, float(resources.get("CPU", 1)))
        per_actor = self.options.gpus_per_worker if self.options.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
        if per_actor and gpus < per_actor:
            raise ClusterError(f"{{opt:ray}}: {per_actor:g} GPUs per worker asked for; the cluster has {gpus:g}")
        fits = int(gpus // per_actor) if per_actor else int(cpus)
        wanted = self.options.workers or (int(gpus // per_actor) if per_actor else max(1, int(cpus) // 2))
        actors = max(1, min(wanted, fits))
        if actors < wanted:
            log.warning("%d Ray workers asked for; the cluster has room for %d", wanted, actors)
        decoders = self.decoders or (max(1, min(MAX_DECODERS, int(cpus // actors) - 1)) if per_actor else 1)
        video = pipelines.get(Modality.VIDEO)
        models = [WorkerModel(part.role, part.encoder.identity.spec, part.encoder.identity.fingerprint)
                  for part in needed_models(dict(pipelines))]
        job = WorkerJob(models=tuple(models), modalities=tuple(sorted(m.value for m in pipelines)),
                        video_sound=isinstance(video, VideoPipeline) and video.audio is not None,
                        device=self.device, precision=self.precision,
                        batch_size=self.batch_size or (GPU_BATCH if per_actor else CPU_BATCH), store=str(self.store),
                        file_timeout=self.file_timeout, decode_memory=self.decode_memory, decoders=decoders)
        return job, actors, per_actor

    # -- what the run reports --------------------------------------------------------------------------
    def reported(self, report: IndexReport) -> IndexReport:
        """``report`` saying where its files were embedded (``ray_workers`` and a note)."""
        return replace(report, ray_workers=self.workers, notes=report.notes + (self.note(),))

    def note(self) -> str:
        if self.cluster is None:
            return "Ray: nothing to embed, so no cluster was used"
        return f"embedded on {self.cluster.describe()} by {self.workers} Ray worker{'' if self.workers == 1 else 's'}"

    def close(self) -> None:
        """Leave the cluster (and shut it down when this run started it)."""
        if self.cluster is not None:
            self.cluster.close()


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:300]}" if lines else type(exc).__name__
