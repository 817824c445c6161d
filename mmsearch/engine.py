"""Composition root: settings -> store + encoders -> indexer and searcher. The CLI talks only to this."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import DEFAULT_MODEL, Settings
from .decoding.images import load_image
from .discovery import normalise_root
from .encoders.specs import fingerprint, parse_spec
from .errors import DecodeError, ModelMismatchError, PathNotFoundError, QueryError, UsageError
from .indexer import Indexer
from .pipelines import ImagePipeline, TextPipeline
from .progress import Progress
from .records import IndexReport, Modality, SearchResult, StoreStatus
from .searcher import QueryVectors, Searcher
from .store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Query:
    text: str | None = None
    image: Path | None = None
    audio: Path | None = None


class Engine:
    """One store and the models that serve it, loaded on first use."""

    def __init__(self, settings: Settings, store: Store, *, clip=None):
        self.settings = settings
        self.store = store
        self._clip = clip
        self._searcher: Searcher | None = None

    @classmethod
    def open(cls, settings: Settings, *, create: bool = False, clip=None) -> "Engine":
        return cls(settings, Store.open(settings.store, create=create), clip=clip)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- models ----------------------------------------------------------------------------------------
    def clip_spec(self) -> str:
        recorded = self.store.model_for("clip")
        requested = self.settings.model
        if requested is None:
            return recorded["spec"] if recorded else DEFAULT_MODEL
        if recorded is not None:
            spec = parse_spec(requested, default_weights="random" if requested.startswith("test-tiny") else None)
            if fingerprint(spec) != recorded["fingerprint"]:
                raise ModelMismatchError(self.store.path, recorded["spec"], requested)
        return requested

    @property
    def clip(self):
        if self._clip is None:
            from .encoders.clip import load_clip

            self._clip = load_clip(self.clip_spec(), device=self.settings.device, precision=self.settings.precision)
        return self._clip

    # -- jobs ------------------------------------------------------------------------------------------
    def index(self, paths: Sequence[Path | str], *, progress: Progress | None = None) -> IndexReport:
        for path in paths:
            normalise_root(path)  # missing paths are refused before any model is loaded
        self.clip_spec()
        pipelines = [ImagePipeline(self.clip), TextPipeline(self.clip)]
        indexer = Indexer(self.store, pipelines, batch_size=self.settings.batch_size,
                          workers=self.settings.workers, progress=progress)
        try:
            return indexer.run(paths)
        finally:
            self.store.release_writer()

    def embed_query(self, query: Query) -> QueryVectors:
        if query.text is None and query.image is None and query.audio is None:
            raise UsageError("nothing to search for: give a text, --image FILE or --audio FILE")
        if query.text is not None and not query.text.strip():
            raise UsageError("empty text query")
        notes: list[str] = []
        clip_parts: list[np.ndarray] = []
        if query.text is not None:
            encoded = self.clip.encode_texts([query.text])
            if encoded.truncated[0]:
                notes.append(f"query text truncated to the model's {self.clip.context_length}-token context")
            clip_parts.append(encoded.vectors[0])
        if query.image is not None:
            clip_parts.append(self._image_query_vector(Path(query.image)))
        if query.audio is not None:
            raise UsageError("audio queries need an audio model (see `mmsearch search --help`)")
        combined = np.mean(clip_parts, axis=0)
        combined /= max(float(np.linalg.norm(combined)), 1e-12)
        return QueryVectors({"clip": combined.astype(np.float32)}, tuple(notes))

    def _image_query_vector(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise PathNotFoundError(path)
        try:
            image = load_image(path, target_size=self.clip.image_size)
        except DecodeError as exc:
            raise QueryError(f"{path}: --image is {exc.reason}") from exc
        import torch

        return self.clip.encode_images(torch.stack([self.clip.preprocess(image)]))[0]

    def search(self, query: Query, *, kind: str = "all", k: int = 10, path_glob: str | None = None,
               strict_k: bool = False) -> SearchResult:
        if self.store.model_for("clip") is None:
            raise UsageError(f"{self.store.path}: store is empty; index something first")
        vectors = self.embed_query(query)
        if self._searcher is None:
            self._searcher = Searcher(self.store)
        return self._searcher.search(vectors, kind=kind, k=k, path_glob=path_glob, strict_k=strict_k)

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
                index_types[modality.value] = index.describe()
        extra = {}
        if "clap.spec" in info:
            extra["audio_model"] = info["clap.spec"]
            extra["audio_semantic"] = info.get("clap.semantic") == "1"
        return StoreStatus(
            store=str(self.store.path), model=info.get("clip.spec", ""), semantic=info.get("clip.semantic") == "1",
            dim=int(info.get("clip.dim", 0)), counts={m.value: files.get(m.value, 0) for m in Modality},
            segments={m.value: segments.get(m.value, 0) for m in Modality}, failed=self.store.catalog.failures(),
            index=index_types, bytes=self.store.disk_bytes(), schema_version=int(info.get("schema_version", 0)),
            extra=extra)
