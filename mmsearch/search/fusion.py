"""Putting a query's parts together, cutting the tail, and paging.

**Early fusion** (``early``): in each model space, the weighted sum of the parts' unit vectors there,
normalised, is searched as one vector, so on an exact index a hit's cosine is Σ wᵢ·cosᵢ / ‖Σ wᵢ·uᵢ‖:
the weighted sum of the per-part cosines, up to one factor per query. A part with one row per audio
window enters as their normalised mean (alone, each window searches on its own, as ever). Parts that
cancel out in a space leave it unsearched; a query needs at least one part of positive weight.

**Late fusion** fuses ranked lists instead: each part is searched on its own, as a one-part query would
be (its top ``LATE_DEPTH`` files), and the files of the positive parts' lists are ranked by

- ``rrf`` (reciprocal rank): Σ wᵢ / (``rrf_k`` + rankᵢ) over the lists holding the file (rank from 1,
  ``rrf_k`` 60 by default). A negative part subtracts by the same rule: the higher it ranks a file,
  the more that file loses; files it did not return lose nothing.
- ``score``: Σ wᵢ · zᵢ over every part, zᵢ the file's calibrated score in part i's list; a part that
  did not return the file counts the lowest calibrated score it returned (the file scores at most that).

``auto`` picks early fusion when one part, or when every part lives natively in one common space (text
lives in both; an image in CLIP's; a sound in CLAP's; an indexed file in its own), and ``rrf`` otherwise
(parts joined only through the bridge). A hit of a several-part query carries each part's cosine to it.

**Cut-off**: ``cutoff="auto"`` looks at the first ``AUTOCUT_WINDOW`` hits and drops those after the largest
drop between consecutive scores (calibrated scores; the fused score in late fusion); ``min_score`` drops
hits whose calibrated (or fused) score is below it. Both act before paging, so pages never overlap.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Collection

import numpy as np

from ..errors import UsageError
from ..records import Hit, SearchResult
from ..store.folder import SPACE_OF
from .filters import Filters
from .queries import PartVectors, embed_parts
from .searcher import TARGETS, QueryVectors, Searcher, check_page

FUSIONS = ("auto", "early", "rrf", "score")
RRF_K = 60
LATE_DEPTH = 1000
"""Late fusion ranks the union of each part's top 1,000 files: a fixed depth, so pages never overlap."""
AUTOCUT_WINDOW = 100
CUTOFFS = (None, "auto")


def choose_fusion(parts: list[PartVectors], fusion: str) -> str:
    if fusion not in FUSIONS:
        raise UsageError(f"{{opt:fusion}} must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    if fusion != "auto":
        return fusion
    common = frozenset.intersection(*(p.native for p in parts))
    return "early" if len(parts) == 1 or common else "rrf"


def early_vectors(parts: list[PartVectors]) -> QueryVectors:
    """The parts as one query vector per space (rows of one part alone kept as they are)."""
    _need_a_positive_part(parts)
    by_space, notes = {}, []
    for space in ("clip", "clap"):
        having = [p for p in parts if space in p.by_space]
        if len(having) == 1 and having[0].part.weight > 0:
            by_space[space] = having[0].by_space[space]
            continue
        if not having:
            continue
        total = sum(p.part.weight * p.vector(space) for p in having)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6 or not any(p.part.weight > 0 for p in having):
            notes.append(f"the query's parts cancel out in the {'audio' if space == 'clap' else 'image'} "
                         f"model's space: not searched there")
            continue
        by_space[space] = (total / norm).astype(np.float32)[None, :]
    return QueryVectors(by_space, tuple(notes))


def embed_query(query, **encoders) -> QueryVectors:
    """``query`` (a ``Query``) as one vector per space, its parts fused early (``embed_parts``' arguments)."""
    parts, notes = embed_parts(query.all_parts(), **encoders)
    vectors = early_vectors(parts)
    return QueryVectors(vectors.by_space, tuple(notes) + vectors.notes)


def _need_a_positive_part(parts: list[PartVectors]) -> None:
    if not any(p.part.weight > 0 for p in parts):
        raise UsageError("a query needs at least one part with a positive weight (negative parts only say "
                         "what to have less of)")


def part_cosines(hits: tuple[Hit, ...], parts: list[PartVectors],
                 fetch: Callable[[str, list[int]], dict[int, np.ndarray]]) -> tuple[Hit, ...]:
    """The hits with each part's cosine to their best segment (``fetch(space, segment ids)`` -> vectors)."""
    vectors: dict[int, np.ndarray] = {}
    for space in {SPACE_OF[h.segment_modality] for h in hits}:
        vectors.update(fetch(space, [h.segment_id for h in hits if SPACE_OF[h.segment_modality] == space]))
    out = []
    for hit in hits:
        space, vector = SPACE_OF[hit.segment_modality], vectors.get(hit.segment_id)
        cosines = tuple(round(float((p.by_space[space] @ vector).max()), 6)
                        if space in p.by_space and vector is not None else None for p in parts)
        out.append(replace(hit, parts=cosines))
    return tuple(out)


def late_fusion(lists: list[tuple[Hit, ...]], weights: list[float], fusion: str, rrf_k: float = RRF_K) -> list[Hit]:
    """Each part's ranked hits -> the files of the positive parts' lists, ranked by the fused score (``rrf`` or
    ``score``; see the module's docstring), each hit carrying the fused score as ``score`` and
    ``calibrated`` and the parts' cosines as ``parts``."""
    if rrf_k <= 0:
        raise UsageError(f"{{opt:rrf_k}} must be more than 0, not {rrf_k}")
    found: dict[int, dict[int, tuple[int, Hit]]] = {}  # item -> part -> (rank, hit)
    for part, hits in enumerate(lists):
        for rank, hit in enumerate(hits, 1):
            found.setdefault(hit.item_id, {})[part] = (rank, hit)
    floors = [min((h.calibrated for h in hits), default=0.0) for hits in lists]
    fused = []
    for item, seen in found.items():
        if not any(weights[part] > 0 for part in seen):
            continue  # only negative parts returned it: they penalise, they do not propose
        if fusion == "rrf":
            value = sum(weights[part] / (rrf_k + rank) for part, (rank, _) in seen.items())
        else:
            value = sum(weight * (seen[part][1].calibrated if part in seen else floors[part])
                        for part, weight in enumerate(weights))
        first = next(seen[part][1] for part in sorted(seen) if weights[part] > 0)
        cosines = tuple(seen[part][1].score if part in seen else None for part in range(len(lists)))
        fused.append(replace(first, score=round(value, 6), calibrated=round(value, 6), parts=cosines))
    fused.sort(key=lambda h: (-h.calibrated, h.item_id))
    return fused


def autocut(scores: list[float]) -> int:
    """How many of ``scores`` (best first) to keep: those before the largest drop between neighbours."""
    if len(scores) < 2:
        return len(scores)
    drops = [a - b for a, b in zip(scores, scores[1:])]
    return int(np.argmax(drops)) + 1


def run_query(searcher: Searcher, parts: list[PartVectors], notes: list[str], *, kind: str, k: int, offset: int,
              filters: Filters, strict_k: bool, fusion: str, rrf_k: float, cutoff: str | None,
              min_score: float | None, exclude: Collection[int], fetch) -> SearchResult:
    """One page of the composed query's hits: fused, cut, then paged (see the module's docstring)."""
    if cutoff not in CUTOFFS:
        raise UsageError(f"{{opt:cutoff}} must be 'auto' or not given, not {cutoff!r}")
    check_page(k, offset)
    method = choose_fusion(parts, fusion)
    several = len(parts) > 1
    wanted = offset + k
    look = max(wanted, AUTOCUT_WINDOW) if cutoff == "auto" else wanted
    if method == "early":
        vectors = early_vectors(parts)
        result = searcher.search(QueryVectors(vectors.by_space, vectors.notes), kind=kind, k=look,
                                 filters=filters, strict_k=strict_k and not offset and look == k, exclude=exclude,
                                 say_when_short=look == wanted and not offset)
        window, beyond, extra = list(result.hits), result.more, result.notes
    else:
        _need_a_positive_part(parts)
        if look > LATE_DEPTH:
            raise UsageError(f"{method} fusion ranks each part's top {LATE_DEPTH:,} files: pages end there "
                             f"({{opt:offset}} + {{opt:k}} is {wanted:,})")
        reaching = [any(SPACE_OF[m] in part.by_space for m in TARGETS.get(kind, ())) for part in parts]
        lists = [searcher.search(QueryVectors(part.by_space), kind=kind, k=LATE_DEPTH, filters=filters,
                                 exclude=exclude, say_when_short=False).hits if reaches or not any(reaching) else ()
                 for part, reaches in zip(parts, reaching)]  # (none reaching: the searcher says why)
        fused = late_fusion(lists, [p.part.weight for p in parts], method, rrf_k)
        extra = tuple(f"query part {n + 1} ({part.part.kind}) reaches none of the files searched (no bridge to "
                      f"their model's space): left out"
                      for n, (part, reaches) in enumerate(zip(parts, reaching)) if not reaches)
        window, beyond = fused[:look], len(fused) > look
    kept = len(window)
    if cutoff == "auto":
        kept = autocut([h.calibrated for h in window[:AUTOCUT_WINDOW]])
        beyond = False  # the cut-off looks no further than its window
    if min_score is not None:
        kept = sum(1 for h in window[:kept] if h.calibrated >= min_score)
    cut = len(window) - kept
    beyond = beyond and not cut
    page = tuple(window[offset:min(wanted, kept)])
    if several and method == "early":
        page = part_cosines(page, parts, fetch)
    return SearchResult(page, tuple(notes) + tuple(extra), more=kept > wanted or beyond, cut=cut,
                        fusion=method if several else None)
