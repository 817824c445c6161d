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
import math
from dataclasses import dataclass, replace
from itertools import repeat
from typing import Collection

import numpy as np

from ..errors import UsageError
from ..index.backend import Neighbours
from ..index.predicate import Predicate
from ..records import INDEX_MODALITIES, Hit, Modality, SearchResult
from ..store.folder import SPACE_OF, Store
from ..store.rows import SegmentRow
from .filters import Filters, check_glob  # noqa: F401  (check_glob: re-exported)

log = logging.getLogger(__name__)

KINDS = ("all", "image", "text", "audio", "video")
TARGETS = {"all": INDEX_MODALITIES, "image": (Modality.IMAGE,), "text": (Modality.TEXT,),
           "audio": (Modality.AUDIO,), "video": (Modality.IMAGE, Modality.AUDIO)}
"""The indexes each kind searches (a video's frames are in the image index, its soundtrack in the audio one)."""
SHARED = {"image": ("video",), "audio": ("video",), "video": ("image", "audio")}
"""The kinds whose files share the indexes a kind searches: present, the search is narrowed to the kind's files."""


def indexes_holding(kind: str, files: dict[str, int]) -> list[Modality]:
    """The indexes ``kind`` searches that hold any file (``files``: indexed files per kind), a video's frames
    and soundtrack counting for the image and audio indexes."""
    return [m for m in TARGETS.get(kind, ()) if files.get(m.value) or (m.value in SHARED["video"] and files.get("video"))]
CALIBRATION_SAMPLE = 1024


@dataclass(frozen=True)
class QueryVectors:
    """The query embedded in each model space it reaches (unit vectors), and notes on how it was read."""

    by_space: dict[str, np.ndarray]
    """Space name -> (n, dim) unit query rows (usually one row; an audio query has one per window)."""
    notes: tuple[str, ...] = ()


def short_note(available: int) -> str:
    """The note of a search for more files than there are."""
    return f"only {available} file{'s' if available != 1 else ''} to search"


def check_page(k: int, offset: int) -> None:
    if k < 1:
        raise UsageError(f"{{opt:k}} must be at least 1, not {k}")
    if offset < 0:
        raise UsageError(f"{{opt:offset}} must be at least 0, not {offset}")


class Calibration:
    """The mean and spread of a query's cosines to a fixed random sample S of an index's vectors, from the
    sample's mean m and covariance C: mean = q.m and variance = q.Cq, the population statistics of the
    sample's cosines without computing them (no 1,024 dot products and their mean and deviation per row).

    q.Cq is read from the upper triangle U of C with its off-diagonal entries doubled (q.Cq = q.Uq), in
    ``BLOCKS`` bands of rows that each start at their diagonal: 62 % of C's floats. After a FAISS search
    the matrix comes from main memory, so the product costs what it reads (~50 us for all of a 512 x 512
    C on a busy 2-core machine)."""

    BLOCKS = 4

    def __init__(self, centre: np.ndarray, covariance: np.ndarray):
        import faiss

        self._faiss = faiss
        self.dim = len(centre)
        upper = np.triu(covariance) * 2 - np.diag(np.diag(covariance))
        starts = np.unique(np.linspace(0, self.dim, self.BLOCKS + 1).astype(int))
        # band i: rows starts[i]:starts[i+1] of U from column starts[i]; the first band leads with m
        self._bands = []
        for first, end in zip(starts[:-1], starts[1:]):
            rows = upper[first:end, first:] if first else np.vstack([centre, upper[:end]])
            band = np.ascontiguousarray(rows, np.float32)
            self._bands.append((band, faiss.swig_ptr(band), int(first), int(first) + 1 if first else 0))

    @classmethod
    def of(cls, sample: np.ndarray) -> Calibration | None:
        """From the sample's vectors; None with fewer than two."""
        if len(sample) < 2:
            return None
        sample = sample.astype(np.float64)
        centre = sample.mean(axis=0)
        return cls(centre, (sample - centre).T @ (sample - centre) / len(sample))

    def spread(self, queries: np.ndarray) -> tuple[list[float], list[float]]:
        """(means, spreads) of the query rows' cosines to the sample. By FAISS's single-threaded kernel,
        not a matrix product: one this small costs milliseconds of thread hand-offs in a threaded BLAS on
        a busy machine (benchmarks/bench_search_overhead.py)."""
        swig_ptr, products_of = self._faiss.swig_ptr, self._faiss.fvec_inner_products_ny
        means, stds = [], []
        for query in np.ascontiguousarray(queries, np.float32):
            products = np.empty(self.dim + 1, np.float32)  # q.m, then U q
            for band, pointer, first, at in self._bands:
                products_of(swig_ptr(products[at:]), swig_ptr(query[first:]), pointer, self.dim - first, len(band))
            means.append(float(products[0]))
            stds.append(max(math.sqrt(max(float(products[1:] @ query), 0.0)), 1e-6))
        return means, stds


class Searcher:
    """Answers queries against the store's loaded indexes. Per query, beyond the FAISS search, the hot
    path is kept to one catalog statement (``Catalog.segment_lookup``: are the cached rows still current?),
    a walk over the few dozen ids returned that stops at the ``k``-th file, the calibration of only the
    query rows the hits came from, and ``k`` records. After a FAISS search every step runs from cold
    caches (each costs 2-4x what it does in a loop of its own), so doing fewer of them is what counts."""

    def __init__(self, store: Store):
        self.store = store
        self._stats: dict[Modality, Calibration | None] = {}
        self._counts: tuple[tuple, dict[str, int]] | None = None
        self._allowed: dict[tuple[Modality, Filters], tuple[int, np.ndarray]] = {}

    def search(self, query: QueryVectors, *, kind: str = "all", k: int = 10, path_glob: str | None = None,
               filters: Filters | None = None,
               strict_k: bool = False, offset: int = 0, exclude: Collection[int] = (),
               say_when_short: bool = True) -> SearchResult:
        """The ``k`` best files after the first ``offset`` (a page), ``SearchResult.more`` saying whether
        any file follows; ``exclude``: leave those files out (the items a "more like this" query is)."""
        if kind not in KINDS:
            raise UsageError(f"{{opt:kind}} must be one of {', '.join(KINDS)}, not {kind!r}")
        check_page(k, offset)
        filters = replace(filters or Filters(), path_glob=path_glob) if path_glob is not None else filters or Filters()
        files = self.file_counts()
        if any(files.get(other) for other in SHARED.get(kind, ())):
            filters = replace(filters, file_kind=kind)
        chosen = filters if filters.active else None
        notes = list(query.notes)
        reachable = [m for m in indexes_holding(kind, files) if SPACE_OF[m] in query.by_space]
        if kind != "all" and not files.get(kind):
            raise UsageError(f"this store holds no {kind} files")
        if not reachable:
            raise UsageError(f"this query cannot reach {'any indexed kind' if kind == 'all' else kind} files "
                             f"(no model bridges its space to theirs: fit the bridge first)")
        exclude = frozenset(int(i) for i in exclude)
        kinds = [kind] if kind != "all" else \
            [m.value for m in reachable] + (["video"] if any(m.value in SHARED["video"] for m in reachable) else [])
        available = sum(files.get(name, 0) for name in kinds) - len(exclude)
        if k > available and not offset and say_when_short:
            if strict_k:
                raise UsageError(f"{{opt:k}} {k} is more than the {available} files this store holds for {{opt:kind}} "
                                 f"{kind}")
            notes.append(short_note(available))
        wanted = offset + k + 1  # one more than the page: is there a next one?
        hits = [hit for modality in reachable
                for hit in self._search_one(modality, query.by_space[SPACE_OF[modality]], wanted, chosen, exclude)]
        if len(reachable) > 1 and files.get("video"):  # a video can come from both its tracks: once, its best
            best: dict[int, Hit] = {}
            for hit in hits:
                if hit.item_id not in best or hit.calibrated > best[hit.item_id].calibrated:
                    best[hit.item_id] = hit
            hits = list(best.values())
        hits.sort(key=(lambda h: -h.calibrated) if len(reachable) > 1 else (lambda h: -h.score))
        return SearchResult(tuple(hits[offset:offset + k]), tuple(notes), more=len(hits) > offset + k)

    def _search_one(self, modality: Modality, queries: np.ndarray, k: int, filters: Filters | None,
                    exclude: frozenset[int] = frozenset()) -> list[Hit]:
        """Search one index with one or more query rows (an audio query has one per window); a file's
        score is its best segment's score against any row. The search deepens while too few files come
        back (many segments of the same files)."""
        index = self.store.index(modality)
        if index is None:
            return []
        # a server-held index is as big as the catalog says (it is kept in step): no count request per query
        size = self.store.vector_count(modality) if getattr(index, "remote", False) else len(index)
        if not size:
            return []
        where = self._pushed_down(index, modality, filters) if filters is not None else None
        allowed = self._allowed_ids(modality, filters, size) if filters is not None and where is None else None
        if (allowed is not None and not len(allowed)) or where is False:
            return []
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        pool = len(allowed) if allowed is not None else size
        depth = min(pool, k if modality == Modality.IMAGE and len(queries) == 1 else k * 4)
        while True:
            if where is not None:  # the backend applies the filters itself (Milvus)
                found = index.search(queries, depth, where=where)
            else:
                found = index.search(queries, depth, allowed_ids=allowed)
            best = self._best_per_file(found, k, exclude)
            if len(best) >= k or depth >= pool or (where is not None and (found.ids >= 0).sum(axis=1).max() < depth):
                break  # (pushed down: fewer than asked for came back, so nothing else matches)
            depth = min(pool, depth * 4)
        return self._hits(modality, queries, best)

    def _best_per_file(self, found: Neighbours, k: int,
                       exclude: frozenset[int] = frozenset()) -> dict[int, tuple[float, SegmentRow, int]]:
        """Item id -> (score, segment, query row) of the best segment of each of the first ``k`` files, best
        first. The few dozen ids are resolved from the catalog's in-memory rows: mapping every segment of a
        1M index to its file up front would cost the first query of a process half a second."""
        if len(found.ids) == 1:  # FAISS's order, ties included
            ids = found.ids[0].tolist()
            pairs = zip(found.scores[0].tolist(), ids, repeat(0))
            rows = self.store.catalog.segment_lookup(ids)
        else:  # each row comes best first; several rows are merged
            pairs = sorted(((s, i, row) for row, (scores, ids) in enumerate(zip(found.scores.tolist(),
                                                                                 found.ids.tolist()))
                            for s, i in zip(scores, ids) if i >= 0), reverse=True)
            rows = self.store.catalog.segment_lookup([i for _, i, _ in pairs])
        best: dict[int, tuple[float, SegmentRow, int]] = {}
        for score, seg_id, row in pairs:
            segment = rows.get(seg_id)
            if segment is not None and segment.item_id not in best and segment.item_id not in exclude:
                best[segment.item_id] = (score, segment, row)
                if len(best) == k:
                    break
        return best

    def _hits(self, modality: Modality, queries: np.ndarray, best: dict[int, tuple[float, SegmentRow, int]]) -> list[Hit]:
        """The records, calibrated against only the query rows the hits came from (in Python floats: numpy
        scalar arithmetic costs a microsecond an operation)."""
        used = sorted({row for _, _, row in best.values()})
        means, stds = self._calibration(modality, queries if len(queries) == 1 else queries[used])
        at = {row: n for n, row in enumerate(used)}
        passages = modality == Modality.TEXT
        hits = []
        for item_id, (score, segment, row) in best.items():
            n = at[row]
            kind = segment.file_modality or modality
            hits.append(Hit(segment.path, kind, round(score, 6), round((score - means[n]) / stds[n], 4), item_id,
                            segment.id, segment.text if passages else None, segment.start, segment.end,
                            page=segment.page, track=modality if kind == Modality.VIDEO else None))
        return hits

    def file_counts(self) -> dict[str, int]:
        """Indexed files per modality. Counting scans the catalog (about a second at 10M files), so the
        count is kept until one of the loaded indexes changes size."""
        key = tuple((m, len(index)) for m, index in self.store.loaded_indexes().items())
        if self._counts is None or self._counts[0] != key:
            self._counts = (key, self.store.catalog.counts()[0])
        return self._counts[1]

    @staticmethod
    def _pushed_down(index, modality: Modality, filters: Filters) -> Predicate | bool | None:
        """The filters as a ``Predicate`` for a backend that applies them itself and can express them exactly
        (False: nothing can match); None: answer them with the catalog's allowed ids."""
        pushes_down = getattr(index, "pushes_down", None)
        if pushes_down is None:
            return None
        if filters.has_duration and modality != Modality.AUDIO:
            return False  # only sounds have a duration
        args = filters.catalog_args()
        predicate = Predicate(filters.path_glob, args["modified"], args["duration"], args["file_kind"])
        return predicate if pushes_down(predicate) else None

    def _allowed_ids(self, modality: Modality, filters: Filters, size: int) -> np.ndarray:
        """Segment ids the filters allow, kept for repeated queries until the index changes size."""
        if filters.has_duration and modality != Modality.AUDIO:
            return np.empty(0, np.int64)  # only sounds have a duration
        cached = self._allowed.get((modality, filters))
        if cached is None or cached[0] != size:
            cached = (size, self.store.catalog.segment_ids(modality, filters.path_glob, **filters.catalog_args()))
            self._allowed[(modality, filters)] = cached
        return cached[1]

    def _calibration(self, modality: Modality, queries: np.ndarray) -> tuple[list[float], list[float]]:
        """Per query row: mean and spread of its cosines to a fixed random sample of the index's vectors
        (``Calibration``), the sample read once per index."""
        if modality not in self._stats:
            self._stats[modality] = Calibration.of(self._load_sample(modality))
        stats = self._stats[modality]
        if stats is None:
            return [0.0] * len(queries), [1.0] * len(queries)
        return stats.spread(queries)

    def _load_sample(self, modality: Modality) -> np.ndarray:
        """A fixed random sample (seed 0) of the index's vectors. The ids come from the loaded index, which
        holds exactly the catalog's (sorted alike), so no scan of the catalog (0.5 s at 1M segments)."""
        index = self.store.index(modality)
        ids = np.empty(0, np.int64) if index is None else \
            np.sort(self.store.catalog.segment_ids(modality)) if getattr(index, "remote", False) else index.ids()
        dim = self.store.dim(modality)
        if not len(ids) or dim is None:
            return np.empty((0, 1), np.float32)
        rng = np.random.default_rng(0)
        chosen = rng.choice(ids, size=min(CALIBRATION_SAMPLE, len(ids)), replace=False)
        found = self.store.catalog.vectors_for(sorted(chosen.tolist()), dim)
        return np.vstack(list(found.values())) if found else np.empty((0, dim), np.float32)
