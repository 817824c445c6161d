"""Queries of any modality -> ranked hits, one per file, with cosine scores.

Each target modality has its own index in its model's space (images and text passages: CLIP;
audio windows: CLAP). A query is embedded into every space it can reach, each index is searched, hits
are grouped per file (the best segment stands for its file), and when several indexes are searched
(``kind='all'``) their hits are merged by a calibrated score: the hit's cosine as a z-score against the
same query's cosines to a fixed random sample of that index's vectors. Raw cosines are not comparable
across indexes (text-to-text cosines run far higher than text-to-image ones); z-scores are.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..index.exact import inner_products
from ..records import Hit, Modality, SearchResult
from ..store.folder import SPACE_OF, Store

log = logging.getLogger(__name__)

KINDS = ("all", "image", "text", "audio")
CALIBRATION_SAMPLE = 1024


@dataclass(frozen=True)
class QueryVectors:
    """The query embedded in each model space it reaches (unit vectors), and notes on how it was read."""

    by_space: dict[str, np.ndarray]
    """Space name -> (n, dim) unit query rows (usually one row; an audio query has one per window)."""
    notes: tuple[str, ...] = ()


def check_glob(pattern: str) -> str:
    """Validate a path glob and anchor relative patterns so they match anywhere below a folder."""
    if not pattern.strip():
        raise UsageError("{opt:path_glob}: empty glob")
    depth = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            close = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("]", "!", "^") else i + 1)
            if close < 0:
                raise UsageError(f"{{opt:path_glob}} {pattern!r}: unclosed '[' in glob")
            i = close
        elif ch == "]" and depth == 0 and "[" not in pattern[:i]:
            raise UsageError(f"{{opt:path_glob}} {pattern!r}: ']' without '[' in glob")
        i += 1
    if not pattern.startswith(("/", "*")):
        pattern = "*/" + pattern
    return pattern


class Searcher:
    def __init__(self, store: Store):
        self.store = store
        self._stats: dict[Modality, tuple[np.ndarray, np.ndarray] | None] = {}
        self._counts: tuple[tuple, dict[str, int]] | None = None
        self._globs: dict[tuple[Modality, str], tuple[int, np.ndarray]] = {}

    def search(self, query: QueryVectors, *, kind: str = "all", k: int = 10, path_glob: str | None = None,
               strict_k: bool = False) -> SearchResult:
        if kind not in KINDS:
            raise UsageError(f"{{opt:kind}} must be one of {', '.join(KINDS)}, not {kind!r}")
        if k < 1:
            raise UsageError(f"{{opt:k}} must be at least 1, not {k}")
        glob = check_glob(path_glob) if path_glob is not None else None
        files = self.file_counts()
        targets = [m for m in Modality if kind in ("all", m.value)]
        notes = list(query.notes)
        reachable = [m for m in targets if SPACE_OF[m] in query.by_space and files.get(m.value)]
        if kind != "all" and not files.get(kind):
            raise UsageError(f"this store holds no {kind} files")
        if not reachable:
            raise UsageError(f"this query cannot reach {'any indexed kind' if kind == 'all' else kind} files "
                             f"(no model bridges its space to theirs: fit the bridge first)")
        available = sum(files.get(m.value, 0) for m in reachable)
        if k > available:
            if strict_k:
                raise UsageError(f"{{opt:k}} {k} is more than the {available} files this store holds for {{opt:kind}} "
                                 f"{kind}")
            notes.append(f"only {available} file{'s' if available != 1 else ''} to search")
        hits: list[Hit] = []
        for modality in reachable:
            hits.extend(self._search_one(modality, query.by_space[SPACE_OF[modality]], k, glob))
        hits.sort(key=(lambda h: -h.calibrated) if len(reachable) > 1 else (lambda h: -h.score))
        return SearchResult(tuple(hits[:k]), tuple(notes))

    def _search_one(self, modality: Modality, queries: np.ndarray, k: int, glob: str | None) -> list[Hit]:
        """Search one index with one or more query rows (an audio query has one per window); a file's
        score is its best segment's score against any row."""
        index = self.store.index(modality)
        if index is None or not len(index):
            return []
        allowed = self._allowed_ids(modality, glob, len(index)) if glob is not None else None
        if allowed is not None and not len(allowed):
            return []
        queries = np.atleast_2d(queries).astype(np.float32)
        pool = len(allowed) if allowed is not None else len(index)
        depth = min(pool, k if modality == Modality.IMAGE and len(queries) == 1 else k * 4)
        while True:
            found = index.search(queries, depth, allowed_ids=allowed)
            rows = [(scores.tolist(), ids.tolist()) for scores, ids in zip(found.scores, found.ids)]
            pairs = [(s, i, row) for row, (scores, ids) in enumerate(rows) for s, i in zip(scores, ids) if i >= 0]
            if len(rows) > 1:  # each row comes best first; several rows are merged
                pairs.sort(reverse=True)
            segments = self.store.catalog.segment_rows([i for _, i, _ in pairs])
            best: dict[int, tuple[float, int, int]] = {}
            for score, seg_id, row in pairs:
                segment = segments.get(seg_id)
                if segment is not None and segment.item_id not in best:
                    best[segment.item_id] = (score, seg_id, row)
            if len(best) >= k or depth >= pool:
                break
            depth = min(pool, depth * 4)
        means, stds = self._calibration(modality, queries)
        hits = []
        for item_id, (score, seg_id, row) in list(best.items())[:k]:  # filled best first
            segment = segments[seg_id]
            hits.append(Hit(path=segment.path, modality=modality, score=round(score, 6),
                            calibrated=round(float((score - means[row]) / stds[row]), 4), item_id=item_id, segment_id=seg_id,
                            passage=segment.text if modality == Modality.TEXT else None,
                            start=segment.start, end=segment.end))
        return hits

    def file_counts(self) -> dict[str, int]:
        """Indexed files per modality. Counting scans the catalog (about a second at 10M files), so the
        count is kept until one of the loaded indexes changes size."""
        key = tuple((m, len(index)) for m, index in self.store.loaded_indexes().items())
        if self._counts is None or self._counts[0] != key:
            self._counts = (key, self.store.catalog.counts()[0])
        return self._counts[1]

    def _allowed_ids(self, modality: Modality, glob: str, size: int) -> np.ndarray:
        """Segment ids under a --path glob, kept for repeated queries until the index changes size."""
        cached = self._globs.get((modality, glob))
        if cached is None or cached[0] != size:
            cached = (size, self.store.catalog.segment_ids(modality, glob))
            self._globs[(modality, glob)] = cached
        return cached[1]

    def _calibration(self, modality: Modality, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query row: mean and spread of its cosines to a fixed random sample S of the index's vectors,
        from the sample's mean m and covariance C kept per index: mean = q.m and variance = q'Cq, the
        population statistics of the sample's cosines without computing them (one dim x dim product
        instead of 1,024 dot products and their mean and deviation, per query)."""
        if modality not in self._stats:
            sample = self._load_sample(modality).astype(np.float64)
            stats = None
            if len(sample) >= 2:
                centre = sample.mean(axis=0)
                covariance = (sample - centre).T @ (sample - centre) / len(sample)
                stats = (centre.astype(np.float32), np.ascontiguousarray(covariance, np.float32))
            self._stats[modality] = stats
        stats = self._stats[modality]
        if stats is None:
            return np.zeros(len(queries)), np.ones(len(queries))
        centre, covariance = stats
        # FAISS's single-threaded kernel, not `queries @ covariance`: a product this small costs milliseconds
        # of thread hand-offs in a threaded BLAS on a busy machine (benchmarks/bench_search_overhead.py)
        spread = inner_products(covariance, queries).T  # (rows, dim): C q per query row, C being symmetric
        means = queries @ centre
        variances = np.einsum("ij,ij->i", spread, queries)
        return means, np.maximum(np.sqrt(np.maximum(variances, 0.0)), 1e-6)

    def _load_sample(self, modality: Modality) -> np.ndarray:
        """A fixed random sample (seed 0) of the index's vectors. The ids come from the loaded index, which
        holds exactly the catalog's (sorted alike), so no scan of the catalog (0.5 s at 1M segments)."""
        index = self.store.index(modality)
        ids = index.ids() if index is not None else np.empty(0, np.int64)
        dim = self.store.dim(modality)
        if not len(ids) or dim is None:
            return np.empty((0, 1), np.float32)
        rng = np.random.default_rng(0)
        chosen = rng.choice(ids, size=min(CALIBRATION_SAMPLE, len(ids)), replace=False)
        found = self.store.catalog.vectors_for(sorted(chosen.tolist()), dim)
        return np.vstack(list(found.values())) if found else np.empty((0, dim), np.float32)
