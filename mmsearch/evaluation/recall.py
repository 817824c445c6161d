"""Cross-modal retrieval recall, exactly as CLIP-style papers report it (ranks of the true media or caption).

Definitions (all ranks are 1-based):

* text→media, one query per caption: the caption's rank is ``1 + #{media scoring strictly higher than
  its own media}``. It hits at k when rank <= k.
* media→text, one query per media: each of its captions gets the same kind of rank among all
  captions, and the media's rank is the best (smallest) of them, i.e. ``1 + #{captions of OTHER
  media scoring strictly higher than its best caption}``. A media hits at k when ANY of its captions
  is in its top k.
* Ties: ``ties="optimistic"`` (the default, and the formula above) lets the true item win every tie;
  ``ties="pessimistic"`` lets it lose every tie (``>=`` instead of ``>``). Both are deterministic;
  a gap between them shows that an encoder produces many equal scores (a broken or constant model
  reaches 100 % optimistic recall and near 0 pessimistic).
* Recall is in PERCENT (0..100), unrounded; rendering rounds. (How well an approximate index finds
  the exact top-k is another measure, a FRACTION: ``mmsearch.index.exact.recall_at_k``.)
* Median and mean rank are over the per-query ranks above.

Scores are inner products (cosine for L2-normalised vectors), computed in float32 in chunks of
queries so that 5k media x 25k captions never needs the full matrix in memory.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mmsearch.errors import UsageError
from mmsearch.records import Modality

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)
TIES = ("optimistic", "pessimistic")
_CHUNK_BYTES = 64 * 2**20  # score block budget per chunk of queries


@dataclass(frozen=True)
class DirectionRecall:
    """Recall of one retrieval direction, e.g. ``text→image``."""

    direction: str
    recall: dict[int, float]
    """k -> percent of queries whose truth is in the top k (0..100, unrounded)."""
    median_rank: float
    mean_rank: float
    queries: int
    rank_depth: int | None = None
    """None for exact search. For results read back from an index, the depth K retrieved: a query
    whose truth was not among them has rank K+1, so median/mean rank are lower bounds."""
    ties: str = "optimistic"


def cross_modal_recall(
    media_vectors: np.ndarray,
    caption_vectors: np.ndarray,
    caption_media: np.ndarray | Sequence[int],
    ks: Iterable[int] = DEFAULT_KS,
    *,
    media_modality: Modality | str = Modality.IMAGE,
    ties: str = "optimistic",
    chunk_size: int | None = None,
) -> tuple[DirectionRecall, DirectionRecall]:
    """(text→media, media→text) recall for media (M,d), captions (C,d) and caption -> media (C,).

    ``chunk_size`` is the number of queries scored at once (default: as many as fit in 64 MiB).
    """
    media, captions, owner = _check_inputs(media_vectors, caption_vectors, caption_media)
    ks = _check_ks(ks)
    modality = str(Modality(media_modality))
    text_ranks = text_to_media_ranks(media, captions, owner, ties=ties, chunk_size=chunk_size)
    media_ranks = media_to_text_ranks(media, captions, owner, ties=ties, chunk_size=chunk_size)
    return (
        summarize_ranks(text_ranks, ks, f"text→{modality}", ties=ties),
        summarize_ranks(media_ranks, ks, f"{modality}→text", ties=ties),
    )


def text_to_media_ranks(
    media_vectors: np.ndarray,
    caption_vectors: np.ndarray,
    caption_media: np.ndarray | Sequence[int],
    *,
    ties: str = "optimistic",
    chunk_size: int | None = None,
) -> np.ndarray:
    """(C,) int64: per caption, the rank of its media among all media (uncaptioned media allowed)."""
    media, captions, owner = _check_inputs(media_vectors, caption_vectors, caption_media, every_media_captioned=False)
    _check_ties(ties)
    ranks = np.empty(len(captions), dtype=np.int64)
    for start, stop in _chunks(len(captions), len(media), chunk_size):
        scores = captions[start:stop] @ media.T  # (b, M)
        true = scores[np.arange(stop - start), owner[start:stop]][:, None]
        if ties == "optimistic":
            ranks[start:stop] = 1 + np.count_nonzero(scores > true, axis=1)
        else:  # the true media itself is among the >=, so no +1
            ranks[start:stop] = np.count_nonzero(scores >= true, axis=1)
    return ranks


def media_to_text_ranks(
    media_vectors: np.ndarray,
    caption_vectors: np.ndarray,
    caption_media: np.ndarray | Sequence[int],
    *,
    ties: str = "optimistic",
    chunk_size: int | None = None,
) -> np.ndarray:
    """(M,) int64: per media, the best rank of any of its captions among all captions."""
    media, captions, owner = _check_inputs(media_vectors, caption_vectors, caption_media)
    _check_ties(ties)
    by_media = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[by_media], np.arange(len(media) + 1))
    ranks = np.empty(len(media), dtype=np.int64)
    for start, stop in _chunks(len(media), len(captions), chunk_size):
        scores = media[start:stop] @ captions.T  # (b, C)
        own = by_media[bounds[start]:bounds[stop]]  # captions of this chunk's media
        row = owner[own] - start
        own_scores = scores[row, own]
        best = np.full(stop - start, -np.inf, dtype=scores.dtype)
        np.maximum.at(best, row, own_scores)
        if ties == "optimistic":  # no own caption beats the best one, so all that do are others'
            ranks[start:stop] = 1 + np.count_nonzero(scores > best[:, None], axis=1)
        else:  # others' captions scoring >= the best, own captions left out
            at_least = np.count_nonzero(scores >= best[:, None], axis=1)
            own_at_least = np.bincount(row[own_scores >= best[row]], minlength=stop - start)
            ranks[start:stop] = 1 + at_least - own_at_least
    return ranks


def summarize_ranks(
    ranks: np.ndarray | Sequence[int],
    ks: Iterable[int] = DEFAULT_KS,
    direction: str = "",
    *,
    rank_depth: int | None = None,
    ties: str = "optimistic",
) -> DirectionRecall:
    """Recall@k (percent), median and mean of per-query 1-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise UsageError("recall needs at least one query")
    ks = _check_ks(ks)
    recall = {k: 100.0 * float(np.count_nonzero(ranks <= k)) / ranks.size for k in ks}
    return DirectionRecall(
        direction=direction,
        recall=recall,
        median_rank=float(np.median(ranks)),
        mean_rank=float(np.mean(ranks)),
        queries=int(ranks.size),
        rank_depth=rank_depth,
        ties=ties,
    )


def ranks_from_ranked_ids(ranked: np.ndarray, truth: np.ndarray | Sequence[Iterable[int]]) -> np.ndarray:
    """(Q,) int64 ranks from ids an index returned, best first, ``-1`` padded: (Q, K).

    ``truth`` is per query one id (an int array (Q,)) or a collection of acceptable ids (any of them
    counts, as for media→text). The rank is 1 + the number of DISTINCT other ids listed before the
    first true one (repeats and ``-1`` are skipped, so an index that returns a file once per segment
    is scored as if deduplicated); ``K + 1`` when no true id is within the K retrieved.
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or not np.issubdtype(ranked.dtype, np.integer):
        raise UsageError(f"ranked ids must be a (queries, K) integer array, got shape {ranked.shape} {ranked.dtype}")
    truth_sets = _truth_sets(truth, len(ranked))
    depth = ranked.shape[1]
    ranks = np.full(len(ranked), depth + 1, dtype=np.int64)
    for q, (row, wanted) in enumerate(zip(ranked.tolist(), truth_sets)):
        seen: set[int] = set()
        for item in row:
            if item < 0 or item in seen:
                continue
            if item in wanted:
                ranks[q] = len(seen) + 1
                break
            seen.add(item)
    return ranks


def recall_from_ranked_ids(
    ranked: np.ndarray,
    truth: np.ndarray | Sequence[Iterable[int]],
    ks: Iterable[int] = DEFAULT_KS,
    direction: str = "",
) -> DirectionRecall:
    """Recall of results that came back through an index (possibly approximate), same rules as exact.

    Every k must be <= K, the retrieved depth. Median/mean rank are capped: a miss counts as K+1
    (``rank_depth`` is set to K so that renderers can say so).
    """
    ranked = np.asarray(ranked)
    ks = _check_ks(ks)
    if ranked.ndim == 2 and max(ks) > ranked.shape[1]:
        raise UsageError(f"recall@{max(ks)} needs at least {max(ks)} results per query; only {ranked.shape[1]} were retrieved")
    ranks = ranks_from_ranked_ids(ranked, truth)
    return summarize_ranks(ranks, ks, direction, rank_depth=ranked.shape[1])


# ---------------------------------------------------------------------------------------- checks

def _check_inputs(
    media_vectors, caption_vectors, caption_media, every_media_captioned: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    media = np.ascontiguousarray(media_vectors, dtype=np.float32)
    captions = np.ascontiguousarray(caption_vectors, dtype=np.float32)
    owner = np.asarray(caption_media)
    if media.ndim != 2 or captions.ndim != 2 or media.shape[1] != captions.shape[1]:
        raise UsageError(f"media vectors {media.shape} and caption vectors {captions.shape} must be 2-D with one dimension")
    if len(media) == 0 or len(captions) == 0:
        raise UsageError("recall needs at least one media and one caption")
    if owner.shape != (len(captions),) or not np.issubdtype(owner.dtype, np.integer):
        raise UsageError(f"caption_media must be {len(captions)} integers, one per caption; got shape {owner.shape}")
    if owner.min() < 0 or owner.max() >= len(media):
        raise UsageError(f"caption_media must index the {len(media)} media (0..{len(media) - 1})")
    if every_media_captioned and np.unique(owner).size != len(media):
        raise UsageError("every media needs at least one caption for media→text recall")
    if not (np.isfinite(media).all() and np.isfinite(captions).all()):
        raise UsageError("vectors contain NaN or infinity")
    return media, captions, owner.astype(np.int64, copy=False)


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise UsageError(f"recall needs k values >= 1, got {ks}")
    return ks


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise UsageError(f"ties must be one of {', '.join(TIES)}, not {ties!r}")


def _chunks(queries: int, candidates: int, chunk_size: int | None) -> Iterable[tuple[int, int]]:
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // (4 * max(candidates, 1)))
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, queries, chunk_size):
        yield start, min(start + chunk_size, queries)


def _truth_sets(truth: np.ndarray | Sequence[Iterable[int]], queries: int) -> list[frozenset[int]]:
    if isinstance(truth, np.ndarray) and truth.ndim == 1 and np.issubdtype(truth.dtype, np.integer):
        sets = [frozenset((int(t),)) for t in truth.tolist()]
    else:
        sets = [
            frozenset((int(item),)) if isinstance(item, (int, np.integer)) else frozenset(int(t) for t in item)
            for item in truth
        ]
    if len(sets) != queries:
        raise UsageError(f"truth has {len(sets)} entries for {queries} queries")
    if any(not s or min(s) < 0 for s in sets):
        raise UsageError("every query needs at least one true id, all >= 0")
    return sets
