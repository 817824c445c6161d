"""Frozen records that cross module boundaries."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Modality(str, enum.Enum):
    """What a file is. Images, text and audio each have a vector index of their own; a video has none:
    its frames live in the image index and its soundtrack in the audio index (``INDEX_MODALITIES``)."""

    IMAGE = "image"
    TEXT = "text"
    AUDIO = "audio"
    VIDEO = "video"

    def __str__(self) -> str:  # so f-strings and JSON show "image", not "Modality.IMAGE"
        return self.value


INDEX_MODALITIES = (Modality.IMAGE, Modality.TEXT, Modality.AUDIO)
"""The modalities with a vector index (a segment's modality is always one of these)."""
SPACE_OF = {Modality.IMAGE: "clip", Modality.TEXT: "clip", Modality.AUDIO: "clap"}
"""Which model space each index's vectors live in (the model role: 'clip' or 'clap')."""


@dataclass(frozen=True)
class MediaFile:
    """A file found on disk that mmsearch knows how to index."""

    path: Path
    modality: Modality
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Segment:
    """The part of a file that one vector stands for: a whole image, a text passage, an audio window."""

    ordinal: int
    text: str | None = None
    start: float | None = None
    end: float | None = None
    page: int | None = None
    """1-based page of a document passage (PDF, EPUB chapter), when the format has pages."""
    track: Modality | None = None
    """The index a video's segment goes to: IMAGE for a sampled frame (``start`` = ``end`` = its time),
    AUDIO for a soundtrack window; None for the segments of other files (their file's own modality)."""


@dataclass(frozen=True)
class FailedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class IndexReport:
    added: int
    updated: int
    removed: int
    unchanged: int
    failed: tuple[FailedFile, ...]
    seconds: float
    renamed: int = 0
    segments_embedded: int = 0
    segments_reused: int = 0
    notes: tuple[str, ...] = ()
    """What the user should know about the run (e.g. audio files skipped for want of a model)."""
    image_runtime: str | None = None
    """What ran the image tower (``--precision``: torch fp32/bf16, onnx or int8, and for auto the timings
    that chose it); None when the image model was not loaded."""
    ray_workers: int | None = None
    """Ray workers (actors, each with its own models) that embedded the run's files on a Ray cluster (``ray``);
    None when they were embedded in this process, 0 when Ray was asked for but there was nothing to embed."""


@dataclass(frozen=True)
class Hit:
    path: str
    modality: Modality
    score: float
    """Cosine similarity between the query and the best-matching segment of the file."""
    calibrated: float
    """Score made comparable across indexes and spaces (``search.searcher``: a z-score against a sample of the
    index); what ranks hits of several kinds (``kind="all"``)."""
    item_id: int
    segment_id: int
    passage: str | None = None
    start: float | None = None
    end: float | None = None
    parts: tuple[float | None, ...] | None = None
    """For a query of several parts: each part's cosine to this hit (its best segment), in the query's
    order; None where the part did not reach it (``search.fusion``)."""
    page: int | None = None
    """A document passage's page (PDF page, EPUB chapter)."""
    track: Modality | None = None
    """A video hit's track: IMAGE (a sampled frame, at ``start``) or AUDIO (a soundtrack window)."""
    match: float | None = None
    """Re-ranked hits (``search.rerank``): the matching model's probability that query and hit match."""
    rerank_score: float | None = None
    """Re-ranked hits: ``match + score``, what orders them."""

    @property
    def segment_modality(self) -> Modality:
        """The index the hit's segment is in (a video's: its track's)."""
        return self.track or self.modality

    def as_json(self) -> dict:
        """The hit as the CLI's ``--json`` and the HTTP API give it: ``id`` (the file's catalog id), ``path``,
        ``modality``, ``score``, ``calibrated``, and ``passage`` (text, with its ``page`` in a PDF or EPUB) or
        ``start``/``end`` seconds (audio; a video's frame or soundtrack window, with its ``track``); a re-ranked
        hit's ``match`` and ``rerank_score``."""
        data = {"id": self.item_id, "path": self.path, "modality": self.modality.value, "score": self.score,
                "calibrated": self.calibrated}
        if self.passage is not None:
            data["passage"] = self.passage
        if self.page is not None:
            data["page"] = self.page
        if self.start is not None:
            data["start"], data["end"] = self.start, self.end
        if self.track is not None:
            data["track"] = self.track.value
        if self.parts is not None:
            data["parts"] = list(self.parts)
        if self.rerank_score is not None:
            data["match"], data["rerank_score"] = self.match, self.rerank_score
        return data


@dataclass(frozen=True)
class SearchResult:
    hits: tuple[Hit, ...]
    notes: tuple[str, ...] = ()
    """Things the user should know about how the query was read (e.g. text truncated to the model's context)."""
    more: bool = False
    """Whether files follow the last hit (a next page: ``offset`` + ``k``)."""
    cut: int = 0
    """Hits dropped by a relevance cut-off (``cutoff``, ``min_score``), among those it looked at."""
    fusion: str | None = None
    """How a query of several parts was put together: early, rrf or score (None for one part)."""
    reranked: int = 0
    """How many of the search's first hits the matching model re-scored (``rerank``)."""


@dataclass(frozen=True)
class StoreStatus:
    store: str
    model: str
    semantic: bool
    dim: int
    counts: dict[str, int]
    segments: dict[str, int]
    failed: tuple[FailedFile, ...]
    index: dict[str, str]
    bytes: int
    schema_version: int
    extra: dict[str, object] = field(default_factory=dict)

    def as_json(self) -> dict:
        """The status as ``mmsearch status --json`` and ``GET /api/status`` give it (``extra`` merged in)."""
        data = {name: getattr(self, name) for name in ("store", "model", "semantic", "dim", "counts", "segments")}
        data["failed"] = [{"path": f.path, "reason": f.reason} for f in self.failed]
        data.update(index=dict(self.index), bytes=self.bytes, schema_version=self.schema_version)
        data.update(self.extra)
        return data
