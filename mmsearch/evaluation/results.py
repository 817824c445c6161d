"""The records a recall benchmark produces: fresh embeddings of a pair set, one row per (method,
direction), and the report that gathers them. ``runner`` and ``store_recall`` both build them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmsearch.evaluation.pairs import PairSet
from mmsearch.evaluation.recall import DirectionRecall
from mmsearch.records import FailedFile, Modality


@dataclass(frozen=True)
class RecallRow:
    """One direction measured one way (``runner``'s docstring defines each ``method``)."""

    method: str
    result: DirectionRecall
    media: int
    """Candidate media in this measurement."""
    captions: int
    """Captions in this measurement (the queries for text→media)."""
    excluded: tuple[FailedFile, ...] = ()
    """Pair media left out of this row, with the reason."""
    excluded_captions: int = 0
    """Captions left out because their media was excluded."""


@dataclass(frozen=True)
class PairEmbeddings:
    """Fresh vectors of the media that could be embedded and of their captions."""

    pairs: PairSet
    modality: Modality
    model: str
    fingerprint: str
    semantic: bool
    media_vectors: np.ndarray
    """(K, dim): one per kept media."""
    kept_media: np.ndarray
    """(K,) int64: index into ``pairs.media``."""
    caption_vectors: np.ndarray
    """(C', dim): one per kept caption."""
    kept_captions: np.ndarray
    """(C',) int64: index into ``pairs.captions``."""
    caption_owner: np.ndarray
    """(C',) int64: row of ``media_vectors`` each kept caption describes."""
    failed: tuple[FailedFile, ...]
    truncated_captions: int

    @property
    def excluded_captions(self) -> int:
        return self.pairs.num_captions - len(self.kept_captions)


@dataclass(frozen=True)
class RerankSummary:
    """What the ``no-rerank`` and ``rerank`` rows measured (``rerank_recall``'s docstring defines them)."""

    depth: int
    """Hits re-ranked per query (``--rerank N``)."""
    model: str
    semantic: bool
    """False for random weights: the re-ranked rows are chance level."""
    captions: int
    """Captions re-ranked (text→media queries), of ``of_captions``."""
    of_captions: int
    images: int
    """Images re-ranked (media→text queries), of ``of_images``."""
    of_images: int
    seconds: float
    """Wall-clock seconds of the re-ranked queries (model, decoding and search), both directions."""

    @property
    def seconds_per_query(self) -> float:
        return self.seconds / max(1, self.captions + self.images)


@dataclass(frozen=True)
class RecallReport:
    source: str
    format: str
    modality: Modality
    model: str
    semantic: bool
    """False for random weights: the numbers are chance level."""
    media: int
    """Media in the pair set (before exclusions)."""
    captions: int
    failed: tuple[FailedFile, ...]
    """Media that could not be decoded; they and their captions are left out of every row."""
    excluded_captions: int
    truncated_captions: int
    rows: tuple[RecallRow, ...]
    seconds: float
    store: str | None = None
    index: str | None = None
    """The store index's description, when store rows were measured."""
    depth: int | None = None
    notes: tuple[str, ...] = ()
    rerank: RerankSummary | None = None
    """What the re-ranked rows measured, when they were (``--rerank``)."""
