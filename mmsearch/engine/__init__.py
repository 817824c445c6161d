"""The composition root: settings -> a store and the models that serve it -> indexing, search and upkeep.

``open_store(path, ...)`` is the public entry point (the CLI and the HTTP server use it too): it resolves
settings (argument > ``MMSEARCH_*`` environment variable > default), opens the store folder and returns an
``Engine``, which loads each model on first use. Everything a job needs is put together here, and only
here: pipelines for the indexer, query vectors and the bridge for the searcher.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..bridge.alignment import BRIDGE_NAME, default_sentences, fit_bridge
from ..bridge.linear import SpaceMap, check_map
from ..config import DEFAULT_AUDIO_MODEL, DEFAULT_MODEL, Settings
from ..encoders.clap_exported import CLAP_TEXT
from ..encoders.exported import ExportUnusable
from ..encoders.runtime import default_batch_size, default_workers
from ..encoders.specs import fingerprint, parse_spec
from ..errors import MMSearchError, ModelLoadError, ModelMismatchError, UsageError
from ..media.files import ItemFile, item_file
from ..media.thumbnails import DEFAULT_SIZE, Thumbnails
from ..progress import Progress
from ..records import IndexReport, Modality, SearchResult, StoreStatus
from ..search.filters import Filters
from ..search.fusion import RRF_K, run_query
from ..search.liked import resolve_likes, segment_vectors, stored_vectors
from ..search.queries import NATIVE, Query, as_query, embed_parts
from ..search.rerank import Reranker, check_rerank
from ..search.searcher import Searcher, indexes_holding
from ..search.towers import QueryTowers
from ..store.backends import apply_backend
from ..store.folder import SPACE_OF, Store, within

log = logging.getLogger(__name__)

NO_AUDIO = "none"
"""``audio_model="none"`` (CLI: ``--audio-model none``): leave audio files out."""

__all__ = ["Engine", "Query", "open_store"]


def open_store(path: Path | str | None = None, *, create: bool = False, model: str | None = None,
               audio_model: str | None = None, device: str | None = None, precision: str | None = None,
               batch_size: int | None = None, workers: int | None = None,
               file_timeout: float | None = None, query_encoder: str | None = None,
               rerank_model: str | None = None, backend: str | None = None,
               milvus_uri: str | None = None) -> "Engine":
    """Open the store at ``path`` (default: ``$MMSEARCH_STORE``, else the default store folder) and return
    its ``Engine``. ``create``: make the store when there is none yet (else ``StoreNotFoundError``).

    ``model`` (``ARCH:WEIGHTS``: an open_clip pretrained tag, a checkpoint path, or ``random``) and
    ``audio_model`` (``OWNER/NAME:hub``, ``ARCH:/saved/dir``, ``ARCH:random`` or ``none``) default to the
    store's own models, else to mmsearch's defaults; a store refuses models other than those that made
    its vectors. ``device`` (auto, cpu, cuda), ``precision`` (auto, fp32, bf16, fp16), ``batch_size``,
    ``workers`` and ``file_timeout`` tune indexing; ``query_encoder`` (auto, onnx, torch) says what embeds
    text queries (auto: the store's exported text tower when usable, else torch). Each setting not given
    is read from its ``MMSEARCH_*`` environment variable (``MMSEARCH_MODEL``...) before falling back to
    its default. ``rerank_model``: what re-ranks a ``search(..., rerank=N)`` (``encoders.matching``; default
    Salesforce/blip-itm-base-coco). ``backend`` (faiss, or milvus at ``milvus_uri``) is recorded in the store
    by an opening with ``create`` (``store.backends``). Use the engine as a context manager, or call ``close()``."""
    settings = Settings.resolve(store=path, model=model, audio_model=audio_model, device=device,
                                precision=precision, batch_size=batch_size, workers=workers, file_timeout=file_timeout,
                                query_encoder=query_encoder, rerank_model=rerank_model, backend=backend,
                                milvus_uri=milvus_uri)
    return Engine.open(settings, create=create)


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
    """One store and the models that serve it, loaded on first use: ``index``, ``search``, ``remove``,
    ``status``, ``align``. Made by ``open_store``; ``clip``/``clap`` inject loaded encoders (tests)."""

    def __init__(self, settings: Settings, store: Store, *, clip=None, clap=None):
        self.settings = settings
        self.store = store
        self._clip = clip
        self._clap = clap
        self._searcher: Searcher | None = None
        self._towers: QueryTowers | None = None
        self._reranker: Reranker | None = None

    @classmethod
    def open(cls, settings: Settings, *, create: bool = False, clip=None, clap=None) -> "Engine":
        """``create``: a writer's opening, which also records ``settings.backend`` / ``milvus_uri`` in the store."""
        store = Store.open(settings.store, create=create)
        if create:
            apply_backend(store, settings.backend, settings.milvus_uri)
        return cls(settings, store, clip=clip, clap=clap)

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
        return self._spec("clap", self.settings.audio_model, DEFAULT_AUDIO_MODEL, "audio_model")

    @property
    def clip(self):
        if self._clip is None:
            from ..encoders.clip import load_clip

            self._clip = load_clip(self.clip_spec(), device=self.settings.device, precision=self.settings.precision)
        return self._clip

    @property
    def clap(self):
        if self._clap is None:
            spec = self.clap_spec()
            if spec is None:
                raise UsageError("audio is switched off ({opt:audio_model} none)")
            from ..encoders.clap import load_audio_encoder

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
    def index(self, paths: Sequence[Path | str], *, progress: Progress | None = None,
              export: bool = True, ray=None) -> IndexReport:
        """Index the files at or below ``paths`` (a re-run embeds only what changed); then fit the audio bridge
        and, with ``export``, export the towers that answer queries without torch, where either is missing.
        ``ray``: decode and embed on a Ray cluster (``auto``: a local one for this run; an address; or an
        ``ingest.ray_embed.RayOptions``), this process still the only writer (``ingest.ray_embed``)."""
        from ..ingest.discovery import normalise_root
        from ..ingest.indexer import Indexer
        from ..ingest.pipelines import index_pipelines

        for path in paths:
            normalise_root(path)  # missing paths are refused before any model is loaded
        embedder = None
        if ray:  # Ray missing, or an address nobody answers at, fails here: before any model is loaded
            from ..ingest.ray_embed import RayEmbedder

            embedder = RayEmbedder.for_settings(ray, self.settings, self.store.path)
        self.clip_spec()
        image_runtime: list[str] = []
        clip = LazyEncoder(lambda: self._indexing_clip(image_runtime))
        clap = LazyEncoder(lambda: self.clap) if self.clap_spec() is not None else None
        optional = []
        if clap is not None and self.settings.audio_model is None and self.store.model_for("clap") is None:
            optional.append(Modality.AUDIO)  # the default audio model: skip audio if it cannot be had
        indexer = Indexer(self.store, index_pipelines(clip, clap),
                          batch_size=self.settings.batch_size or default_batch_size(self.settings.device),
                          workers=self.settings.workers or default_workers(self.settings.device),
                          progress=progress, file_timeout=self.settings.file_timeout,
                          optional=optional, embedder=embedder)
        try:
            report = replace(indexer.run(paths), image_runtime=image_runtime[0] if image_runtime else None)
            report = embedder.reported(report) if embedder is not None else report
            self._ensure_bridge()
            note = self._ensure_export() if export else None
            return replace(report, notes=report.notes + (note,)) if note else report
        finally:
            if embedder is not None:
                embedder.close()
            self.store.release_writer()

    def _indexing_clip(self, chosen: list[str]):
        """The image model for an index run, its image tower set to run as ``--precision`` says (timed
        once per machine and model for ``auto``); what was chosen is appended to ``chosen``."""
        from ..encoders.precision import prepare_image_runtime

        encoder = self.clip
        chosen.append(prepare_image_runtime(encoder, self.store.path, self.settings.precision,
                                            self.settings.batch_size or default_batch_size(self.settings.device)))
        return encoder

    def _ensure_export(self) -> str | None:
        """Export the towers that answer this store's queries without torch, where missing (``ensure_exports``)."""
        from ..encoders.exports import ensure_exports

        segments = self.store.catalog.counts()[1]
        return ensure_exports(self.store.path, self._exportable(segments), self._clap_exportable(segments),
                              load_clip=lambda: self.clip, load_clap=lambda: self.clap, sentences=default_sentences)

    def _ensure_bridge(self) -> None:
        """Audio and images/text in one store need the bridge: fit it on the shipped sentences if missing."""
        if self.store.model_for("clip") is None or self.store.model_for("clap") is None:
            return
        try:
            if self.bridge() is not None:
                return
        except MMSearchError as exc:
            log.info("refitting the bridge: %s", exc)
        self.align(map="auto")  # the MLP only where it measurably beats the linear map: a few seconds more

    def align(self, sentences: Sequence[str] | None = None, *, map: str = "auto") -> SpaceMap:
        """Fit (or refit) the CLAP <-> CLIP bridge and save it in the store. ``map``: ``linear`` (ridge or
        Procrustes), ``mlp`` (the best linear map plus a small ReLU network) or ``auto`` (the MLP only where it
        retrieves held-out sentences measurably better; the choice and both candidates' figures are saved)."""
        check_map(map)
        if self.store.model_for("clip") is None:
            self.store.bind_model("clip", self.clip.identity)
        if self.store.model_for("clap") is None:
            self.store.bind_model("clap", self.clap.identity)
        bridge = fit_bridge(self.clap, self.clip, sentences, map=map)
        bridge.save(self.store.path / BRIDGE_NAME)
        return bridge

    def search(self, query: Query | str | None = None, *, image: Path | str | None = None,
               audio: Path | str | None = None, kind: str = "all", k: int = 10, path_glob: str | None = None,
               strict_k: bool = False, offset: int = 0, fusion: str = "auto", rrf_k: float = RRF_K,
               cutoff: str | None = None, min_score: float | None = None, filters: Filters | None = None,
               rerank: int = 0, rerank_optional: bool = False) -> SearchResult:
        """The ``k`` files nearest a query: text (``query`` as a string), an ``image`` file, an ``audio`` file
        (its first 47.5 s), or text and files together; or a ``Query`` holding them and any number of
        weighted ``Part``s (a ``like`` part: an indexed file's id or path, "more like this", left out of
        its own hits). ``kind``: image, text, audio, video or all (ranked by calibrated score). ``path_glob``:
        only files whose absolute path matches (``*``, ``?``, ``[...]``; a relative pattern matches below
        any folder); ``filters``: also a modification time or audio duration range (``Filters``), all applied
        inside the search. ``strict_k``: refuse a ``k`` larger than the files there are (else fewer hits come
        back, with a note). ``offset``: skip the best ``offset`` files (``SearchResult.more`` says whether
        a next page follows). Several parts are fused by ``fusion`` (auto, early, rrf with ``rrf_k``, or
        score); ``cutoff="auto"`` and ``min_score`` drop the irrelevant tail (``search.fusion``). A
        long-lived engine sees what other processes indexed meanwhile (``Store.catch_up``). ``rerank``: re-rank
        the first ``rerank`` hits of a text's image search or an image's passage search by cross-attention
        (``search.rerank``); a model that cannot be loaded raises ModelLoadError, or with ``rerank_optional``
        leaves the search un-re-ranked, with a note."""
        query = as_query(query, image, audio)
        if rerank:
            check_rerank(query, kind, rerank)
        if self.store.model_for("clip") is None and self.store.model_for("clap") is None:
            raise UsageError(f"{self.store.path}: store is empty; index something first")
        notes: list[str] = []
        depth = rerank if rerank and self.reranker.available(rerank_optional, notes) else 0
        if self.store.catch_up() or self._searcher is None:
            self._searcher = Searcher(self.store)
        files = self._searcher.file_counts()  # counting scans the catalog: kept while the indexes keep their size
        parts = resolve_likes(self.store, query.all_parts())
        liked = {p.value: stored_vectors(self.store, p.value) for p in parts if p.kind == "like"}
        spaces = {space for space, _ in liked.values()}
        needs = Query(text=query.first("text"), image=query.first("image"), audio=query.first("audio"))
        holding = {SPACE_OF[m] for m in indexes_holding(kind, files)}  # the model spaces the search reaches
        reaches_clip, reaches_clap = "clip" in holding, "clap" in holding
        if reaches_clip or needs.image is not None or "clip" in spaces:
            self.clip_spec()  # a model asked for must be the store's, whichever runtime answers
        wants_clip = (needs.text is not None and reaches_clip) or needs.image is not None  # an encoder to embed with
        clip = self.towers.clip(needs, notes) if wants_clip else None
        clap = None
        if (needs.text is not None and reaches_clap) or needs.audio is not None:
            try:
                clap = self.towers.clap(needs, notes) if self.clap_spec() is not None else self.clap
            except (ModelLoadError, UsageError) as exc:
                if kind == "audio" or needs.audio is not None:
                    raise
                notes.append(f"audio files and soundtracks not searched: {exc}")
        natives = [NATIVE[p.kind] if p.kind in NATIVE else frozenset({liked[p.value][0]}) for p in parts]
        crossing = (reaches_clip and any("clip" not in n for n in natives)) or \
            (reaches_clap and any("clap" not in n for n in natives))  # a part must be mapped across
        bridge = self.bridge() if crossing and self.clap_spec() is not None else None
        vectors = None
        while vectors is None:  # each export that loaded but fails to run is given up: at most both
            try:
                vectors, read = embed_parts(parts, clip=clip, clap=clap, bridge=bridge, liked=liked)
            except ExportUnusable as exc:  # the torch model answers for it instead
                self.towers.give_up(exc, notes)
                clip, clap = (clip, self.clap) if exc.folder.name == CLAP_TEXT else (self.clip, clap)
        filters = replace(filters or Filters(), path_glob=path_glob) if path_glob is not None else filters or Filters()
        page = (max(depth, offset + k), 0) if depth else (k, offset)  # re-ranking: its first hits, then paged
        result = run_query(self._searcher, vectors, notes + read, kind=kind, k=page[0], offset=page[1],
                           filters=filters, strict_k=strict_k and (not depth or depth <= k and not offset),
                           fusion=fusion, rrf_k=rrf_k, cutoff=cutoff, min_score=min_score, exclude=liked.keys(),
                           fetch=lambda space, ids: segment_vectors(self.store, space, ids))
        return self.reranker.page(query, result, depth, k, offset) if depth else result

    @property
    def reranker(self) -> Reranker:
        """What re-ranks hits (``search.rerank``): the matching model loaded on first use, and its cache."""
        if self._reranker is None:
            from ..encoders.matching import load_matcher

            self._reranker = Reranker(lambda: load_matcher(self.settings.rerank_model, device=self.settings.device))
        return self._reranker

    @property
    def towers(self) -> QueryTowers:
        """What embeds queries: the store's exported towers where usable, else the torch models."""
        if self._towers is None:
            self._towers = QueryTowers(self.store.path, self.store.model_identity, self.settings.query_encoder,
                                       lambda: self.clip, lambda: self.clap)
        return self._towers

    def _exportable(self, segments: dict[str, int]):
        """The store's image model when its text tower serves queries (there are image or text vectors)."""
        identity = self.store.model_identity("clip")
        return identity if identity is not None and (segments.get("image") or segments.get("text")) else None

    def _clap_exportable(self, segments: dict[str, int]):
        """The store's audio model when its text tower serves queries (there are audio vectors)."""
        return self.store.model_identity("clap") if segments.get("audio") else None

    # -- what a front end shows of a file ----------------------------------------------------------------
    def item_file(self, item_id: int) -> ItemFile:
        """The indexed file ``item_id`` (a hit's ``item_id``), checked to be servable (``media.files``)."""
        return item_file(self.store, item_id)

    def thumbnail(self, item_id: int, size: int = DEFAULT_SIZE) -> bytes:
        """A JPEG thumbnail of the indexed image ``item_id``, cached in the store (``media.thumbnails``)."""
        return Thumbnails(self.store.path).get(self.item_file(item_id), size)

    def remove(self, paths: Sequence[Path | str]) -> int:
        """Forget the files at or below ``paths`` (which need not exist any more); returns how many."""
        self.store.acquire_writer()
        try:
            known = self.store.catalog.all_items()
            doomed = []
            for path in paths:
                target = os.path.abspath(Path(path).expanduser())
                matched = [row.id for p, row in known.items() if within(p, target)]
                if not matched:
                    raise UsageError(f"{path}: not in this store")
                doomed.extend(matched)
            with self.store.catalog.transaction() as write:
                removed = write.delete_items(sorted(set(doomed)))
            for modality, ids in removed.items():
                index = self.store.index(modality)
                if index is not None:
                    index.remove(np.asarray(ids, dtype=np.int64))
            self.store.save_indexes()
            self.store.drop_roots(paths)
            return len(set(doomed))
        finally:
            self.store.release_writer()

    def status(self) -> StoreStatus:
        """What the store holds, its models, indexes, query encoders and bridge (``engine.status``)."""
        from .status import store_status

        return store_status(self)
