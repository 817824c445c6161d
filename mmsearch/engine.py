"""Composition root: settings -> store + encoders -> indexer and searcher. The CLI talks only to this."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .alignment import BRIDGE_NAME, fit_bridge
from .bridge import SpaceMap
from .config import DEFAULT_AUDIO_MODEL, DEFAULT_MODEL, Settings
from .discovery import normalise_root
from .encoders.runtime import default_batch_size, default_workers
from .encoders.specs import fingerprint, parse_spec
from .errors import MMSearchError, ModelLoadError, ModelMismatchError, UsageError
from .indexer import Indexer
from .pipelines import AudioPipeline, ImagePipeline, TextPipeline
from .progress import Progress
from .queries import Query, embed_query
from .records import IndexReport, Modality, SearchResult, StoreStatus
from .searcher import Searcher
from .store import Store

log = logging.getLogger(__name__)

NO_AUDIO = "none"
"""``--audio-model none``: leave audio files out."""

__all__ = ["Engine", "Query"]


class LazyEncoder:
    """Loads the model on first attribute access, so a run that meets no audio never loads CLAP."""

    def __init__(self, load: Callable[[], Any]):
        self._load = load
        self._encoder = None

    def __getattr__(self, name: str) -> Any:
        if self._encoder is None:
            self._encoder = self._load()
        return getattr(self._encoder, name)


class Engine:
    """One store and the models that serve it, loaded on first use."""

    def __init__(self, settings: Settings, store: Store, *, clip=None, clap=None):
        self.settings = settings
        self.store = store
        self._clip = clip
        self._clap = clap
        self._searcher: Searcher | None = None

    @classmethod
    def open(cls, settings: Settings, *, create: bool = False, clip=None, clap=None) -> "Engine":
        return cls(settings, Store.open(settings.store, create=create), clip=clip, clap=clap)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------------------
    def _spec(self, role: str, requested: str | None, default: str, option: str) -> str:
        """The model spec for ``role``: as requested, else the store's, else the default; refuses a mismatch."""
        recorded = self.store.model_for(role)
        if requested is None:
            return recorded["spec"] if recorded else default
        if recorded is not None:
            spec = parse_spec(requested, default_weights="random" if requested.startswith("test-tiny") else None)
            if fingerprint(spec) != recorded["fingerprint"]:
                raise ModelMismatchError(self.store.path, recorded["spec"], requested,
                                         role="model" if option == "model" else "audio model")
        return requested

    def clip_spec(self) -> str:
        return self._spec("clip", self.settings.model, DEFAULT_MODEL, "model")

    def clap_spec(self) -> str | None:
        if self.settings.audio_model == NO_AUDIO:
            return None
        return self._spec("clap", self.settings.audio_model, DEFAULT_AUDIO_MODEL, "audio-model")

    @property
    def clip(self):
        if self._clip is None:
            from .encoders.clip import load_clip

            self._clip = load_clip(self.clip_spec(), device=self.settings.device, precision=self.settings.precision)
        return self._clip

    @property
    def clap(self):
        if self._clap is None:
            spec = self.clap_spec()
            if spec is None:
                raise UsageError("audio is switched off (--audio-model none)")
            from .encoders.clap import load_audio_encoder

            self._clap = load_audio_encoder(spec, device=self.settings.device)
        return self._clap

    def bridge(self) -> SpaceMap | None:
        """The store's CLAP -> CLIP map, if fitted for the store's two models."""
        path = self.store.path / BRIDGE_NAME
        clip, clap = self.store.model_for("clip"), self.store.model_for("clap")
        if not path.is_file() or clip is None or clap is None:
            return None
        return SpaceMap.load(path, source_fingerprint=clap["fingerprint"], target_fingerprint=clip["fingerprint"])

    # -- jobs ------------------------------------------------------------------------------------------
    def index(self, paths: Sequence[Path | str], *, progress: Progress | None = None) -> IndexReport:
        for path in paths:
            normalise_root(path)  # missing paths are refused before any model is loaded
        self.clip_spec()
        clip = LazyEncoder(lambda: self.clip)
        pipelines = [ImagePipeline(clip), TextPipeline(clip)]
        optional = []
        if self.clap_spec() is not None:
            pipelines.append(AudioPipeline(LazyEncoder(lambda: self.clap), window_timeout=self.settings.file_timeout))
            if self.settings.audio_model is None and self.store.model_for("clap") is None:
                optional.append(Modality.AUDIO)  # the default audio model: skip audio if it cannot be had
        indexer = Indexer(self.store, pipelines,
                          batch_size=self.settings.batch_size or default_batch_size(self.settings.device),
                          workers=self.settings.workers or default_workers(self.settings.device),
                          progress=progress, file_timeout=self.settings.file_timeout,
                          optional=optional)
        try:
            report = indexer.run(paths)
            self._ensure_bridge()
            return report
        finally:
            self.store.release_writer()

    def _ensure_bridge(self) -> None:
        """Audio and images/text in one store need the bridge: fit it on the shipped sentences if missing."""
        if self.store.model_for("clip") is None or self.store.model_for("clap") is None:
            return
        try:
            if self.bridge() is not None:
                return
        except MMSearchError as exc:
            log.info("refitting the bridge: %s", exc)
        self.align()

    def align(self, sentences: Sequence[str] | None = None) -> SpaceMap:
        """Fit (or refit) the CLAP <-> CLIP bridge and save it in the store."""
        if self.store.model_for("clip") is None:
            self.store.bind_model("clip", self.clip.identity)
        if self.store.model_for("clap") is None:
            self.store.bind_model("clap", self.clap.identity)
        bridge = fit_bridge(self.clap, self.clip, sentences)
        bridge.save(self.store.path / BRIDGE_NAME)
        return bridge

    def search(self, query: Query, *, kind: str = "all", k: int = 10, path_glob: str | None = None,
               strict_k: bool = False) -> SearchResult:
        if self.store.model_for("clip") is None and self.store.model_for("clap") is None:
            raise UsageError(f"{self.store.path}: store is empty; index something first")
        files, _ = self.store.catalog.counts()
        wants_clip = (kind in ("all", "image", "text") and (files.get("image") or files.get("text"))) or query.image
        wants_clap = (kind in ("all", "audio") and files.get("audio")) or query.audio
        notes: list[str] = []
        clip = self.clip if wants_clip else None
        clap = None
        if wants_clap:
            try:
                clap = self.clap
            except (ModelLoadError, UsageError) as exc:
                if kind == "audio" or query.audio is not None:
                    raise
                notes.append(f"audio files not searched: {exc}")
        bridge = self.bridge() if clip is not None and clap is not None else None
        vectors = embed_query(query, clip=clip, clap=clap, bridge=bridge)
        if self._searcher is None:
            self._searcher = Searcher(self.store)
        result = self._searcher.search(vectors, kind=kind, k=k, path_glob=path_glob, strict_k=strict_k)
        return SearchResult(result.hits, tuple(notes) + result.notes)

    def remove(self, paths: Sequence[Path | str]) -> int:
        """Forget the files at or below ``paths`` (which need not exist any more); returns how many."""
        self.store.acquire_writer()
        try:
            known = self.store.catalog.all_items()
            doomed = []
            for path in paths:
                target = os.path.abspath(Path(path).expanduser())
                matched = [row.id for p, row in known.items() if p == target or p.startswith(target.rstrip(os.sep) + os.sep)]
                if not matched:
                    raise UsageError(f"{path}: not in this store")
                doomed.extend(matched)
            with self.store.catalog.transaction() as conn:
                removed = self.store.catalog.delete_items(conn, sorted(set(doomed)))
            for modality, ids in removed.items():
                index = self.store.index(modality)
                if index is not None:
                    index.remove(np.asarray(ids, dtype=np.int64))
            self.store.save_indexes()
            return len(set(doomed))
        finally:
            self.store.release_writer()

    def status(self) -> StoreStatus:
        info = self.store.catalog.info()
        files, segments = self.store.catalog.counts()
        index_types = {}
        for modality in Modality:
            index = self.store.index(modality) if segments.get(modality.value) else None
            if index is not None:
                index_types[modality.value] = self.store.describe_index(modality, index)
        extra: dict[str, object] = {}
        if "clap.spec" in info:
            extra["audio_model"] = info["clap.spec"]
            extra["audio_semantic"] = info.get("clap.semantic") == "1"
            extra["audio_dim"] = int(info.get("clap.dim", 0))
            try:
                bridge = self.bridge()
            except MMSearchError as exc:
                extra["bridge"] = f"unusable: {exc}"
            else:
                if bridge is not None:
                    from .alignment import describe_fit

                    extra["bridge"] = {"audio_to_clip": describe_fit(bridge.forward.fit),
                                       "clip_to_audio": describe_fit(bridge.reverse.fit)}
        return StoreStatus(
            store=str(self.store.path), model=info.get("clip.spec", ""), semantic=info.get("clip.semantic") == "1",
            dim=int(info.get("clip.dim", 0)), counts={m.value: files.get(m.value, 0) for m in Modality},
            segments={m.value: segments.get(m.value, 0) for m in Modality}, failed=self.store.catalog.failures(),
            index=index_types, bytes=self.store.disk_bytes(), schema_version=int(info.get("schema_version", 0)),
            extra=extra)
