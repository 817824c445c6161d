"""Recall on hand-built score matrices with known answers, plus properties and chunking."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsearch.errors import UsageError
from mmsearch.evaluation.recall import (
    cross_modal_recall,
    media_to_text_ranks,
    ranks_from_ranked_ids,
    recall_from_ranked_ids,
    summarize_ranks,
    text_to_media_ranks,
)
from mmsearch.evaluation.render import recall_records, recall_table
from mmsearch.records import Modality

# With media = identity, the caption vectors ARE the score matrix: S[c, m] = caption c . media m.
# Rows are text→image queries, columns image→text queries.
OWNER = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
SCORES = np.array(
    [  # media:  0  1  2  3
        [5, 0, 3, 4],  # c0 (media 0): ranks 7th for media 0's query
        [8, 0, 3, 0],  # c1 (media 0): ranks 2nd for media 0's query -> media 0 has rank 2
        [9, 9, 3, 0],  # c2 (media 1): ties media 0 in its own row
        [7, 1, 3, 0],  # c3 (media 1)
        [7, 1, 3, 0],  # c4 (media 1)
        [7, 0, 1, 0],  # c5 (media 2)
        [7, 0, 2, 0],  # c6 (media 2): best caption of media 2, five others' captions above it
        [0, 0, 0, 4],  # c7 (media 3): ties c0 in media 3's column
        [0, 0, 0, 1],  # c8 (media 3)
        [0, 0, 0, 1],  # c9 (media 3)
    ],
    dtype=np.float32,
)


def designed_case():
    return np.eye(4, dtype=np.float32), SCORES, OWNER


def reference_ranks(media, captions, owner, pessimistic=False):
    """Slow, obvious implementation in float64 to check the vectorised one against."""
    scores = np.asarray(captions, np.float64) @ np.asarray(media, np.float64).T
    text = []
    for c, m in enumerate(owner):
        above = sum(1 for j in range(len(media)) if j != m and (scores[c, j] >= scores[c, m] if pessimistic else scores[c, j] > scores[c, m]))
        text.append(1 + above)
    per_media = []
    for m in range(len(media)):
        own = [c for c in range(len(captions)) if owner[c] == m]
        best = None
        for t in own:
            above = sum(1 for c in range(len(captions)) if c not in own and (scores[c, m] >= scores[t, m] if pessimistic else scores[c, m] > scores[t, m]))
            best = 1 + above if best is None else min(best, 1 + above)
        per_media.append(best)
    return np.array(text), np.array(per_media)


def test_designed_case_text_to_image():
    text, _ = cross_modal_recall(*designed_case())
    assert text.direction == "text→image"
    assert text.queries == 10
    # ranks 1,1,1,3,3,2,2,1,1,1 (c2 wins its tie with media 0)
    assert text.recall == pytest.approx({1: 60.0, 5: 100.0, 10: 100.0})
    assert text.median_rank == 1.0
    assert text.mean_rank == pytest.approx(1.6)


def test_designed_case_image_to_text_any_caption_counts():
    media, captions, owner = designed_case()
    ranks = media_to_text_ranks(media, captions, owner)
    # media 0: first caption 7th, second 2nd -> rank 2; media 3 wins its tie -> rank 1
    assert ranks.tolist() == [2, 1, 6, 1]
    _, image = cross_modal_recall(media, captions, owner)
    assert image.direction == "image→text"
    assert image.queries == 4
    assert image.recall == pytest.approx({1: 50.0, 5: 75.0, 10: 100.0})  # media 0 is a hit at 5
    assert image.median_rank == 1.5
    assert image.mean_rank == 2.5


def test_designed_case_pessimistic_ties():
    text, image = cross_modal_recall(*designed_case(), ties="pessimistic")
    assert text.recall[1] == pytest.approx(50.0)  # c2 now loses its tie: rank 2
    assert text.median_rank == 1.5 and text.mean_rank == pytest.approx(1.7)
    assert media_to_text_ranks(*designed_case(), ties="pessimistic").tolist() == [2, 1, 6, 2]
    assert image.recall == pytest.approx({1: 25.0, 5: 75.0, 10: 100.0})
    assert image.median_rank == 2.0 and image.mean_rank == 2.75
    assert text.ties == image.ties == "pessimistic"


def test_text_ranks_with_distractor_media():
    # 12 media, 6 captions (media 6..11 have no caption): caption c is built to rank wanted[c]
    wanted = [1, 2, 5, 6, 10, 12]
    scores = np.full((6, 12), -1.0, dtype=np.float32)
    for c, rank in enumerate(wanted):
        scores[c, c] = 0.0
        others = [j for j in range(12) if j != c][: rank - 1]
        scores[c, others] = 1.0
    ranks = text_to_media_ranks(np.eye(12, dtype=np.float32), scores, np.arange(6))
    assert ranks.tolist() == wanted
    summary = summarize_ranks(ranks, (1, 5, 10), "text→image")
    assert summary.recall == pytest.approx({1: 100 / 6, 5: 50.0, 10: 500 / 6})
    assert summary.median_rank == 5.5
    assert summary.mean_rank == 6.0


def test_all_equal_scores_expose_ties():
    media = np.zeros((5, 3), np.float32)
    captions = np.ones((5, 3), np.float32)
    owner = np.arange(5)
    optimistic = cross_modal_recall(media, captions, owner, ks=(1,))
    pessimistic = cross_modal_recall(media, captions, owner, ks=(1,), ties="pessimistic")
    assert [d.recall[1] for d in optimistic] == [100.0, 100.0]
    assert [d.recall[1] for d in pessimistic] == [0.0, 0.0]
    assert [d.median_rank for d in pessimistic] == [5.0, 5.0]


def test_direction_names_follow_modality():
    text, audio = cross_modal_recall(*designed_case(), media_modality=Modality.AUDIO)
    assert (text.direction, audio.direction) == ("text→audio", "audio→text")


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
def test_chunked_equals_unchunked_and_reference(ties):
    rng = np.random.default_rng(7)
    media = rng.integers(-2, 3, size=(23, 6)).astype(np.float32)  # small integers: exact, with ties
    owner = np.concatenate([np.arange(23), rng.integers(0, 23, size=40)])
    captions = rng.integers(-2, 3, size=(len(owner), 6)).astype(np.float32)
    expected_text, expected_media = reference_ranks(media, captions, owner, pessimistic=ties == "pessimistic")
    for chunk in (1, 4, 7, None):
        assert text_to_media_ranks(media, captions, owner, ties=ties, chunk_size=chunk).tolist() == expected_text.tolist()
        assert media_to_text_ranks(media, captions, owner, ties=ties, chunk_size=chunk).tolist() == expected_media.tolist()
    assert cross_modal_recall(media, captions, owner, chunk_size=3, ties=ties) == cross_modal_recall(media, captions, owner, ties=ties)


vectors_case = st.integers(min_value=1, max_value=8).flatmap(
    lambda media_count: st.tuples(
        st.just(media_count),
        st.lists(st.integers(0, media_count - 1), max_size=12),
        st.integers(0, 2**32 - 1),
    )
)


@settings(max_examples=60, deadline=None)
@given(vectors_case)
def test_properties(case):
    media_count, extra, seed = case
    rng = np.random.default_rng(seed)
    owner = np.array(list(range(media_count)) + extra)
    media = rng.integers(-1, 2, size=(media_count, 3)).astype(np.float32)
    captions = rng.integers(-1, 2, size=(len(owner), 3)).astype(np.float32)
    ks = (1, 2, 3, 5, media_count, len(owner))
    text, image = cross_modal_recall(media, captions, owner, ks=ks)
    for result in (text, image):
        values = [result.recall[k] for k in sorted(result.recall)]
        assert values == sorted(values)  # recall never drops as k grows
        assert all(0.0 <= v <= 100.0 for v in values)
        assert 1.0 <= result.median_rank and 1.0 <= result.mean_rank
    assert text.recall[media_count] == 100.0  # every media is within the top M
    assert image.recall[len(owner)] == 100.0
    assert text.queries == len(owner) and image.queries == media_count
    # the optimistic rank never exceeds the pessimistic one; without ties they are equal
    for rank_of in (text_to_media_ranks, media_to_text_ranks):
        low = rank_of(media, captions, owner)
        high = rank_of(media, captions, owner, ties="pessimistic")
        assert (low <= high).all()
    # a media with its only caption ranked by every other caption is at most C - own + 1
    own = np.bincount(owner, minlength=media_count)
    assert (media_to_text_ranks(media, captions, owner) <= len(owner) - own + 1).all()


def test_full_ranking_through_ids_matches_exact_without_ties():
    rng = np.random.default_rng(3)
    media = rng.normal(size=(15, 8)).astype(np.float32)
    owner = np.repeat(np.arange(15), 3)
    captions = rng.normal(size=(45, 8)).astype(np.float32)
    ranked_media = np.argsort(-(captions @ media.T), axis=1, kind="stable")
    ranked_captions = np.argsort(-(media @ captions.T), axis=1, kind="stable")
    own_captions = [set(np.flatnonzero(owner == m).tolist()) for m in range(15)]
    assert ranks_from_ranked_ids(ranked_media, owner).tolist() == text_to_media_ranks(media, captions, owner).tolist()
    assert ranks_from_ranked_ids(ranked_captions, own_captions).tolist() == media_to_text_ranks(media, captions, owner).tolist()
    exact_text, _ = cross_modal_recall(media, captions, owner)
    through_ids = recall_from_ranked_ids(ranked_media, owner, direction="text→image")
    assert through_ids.recall == exact_text.recall
    assert through_ids.median_rank == exact_text.median_rank
    assert through_ids.rank_depth == 15


def test_ranked_ids_padding_repeats_and_misses():
    ranked = np.array(
        [
            [4, 4, 2, 7, -1],  # repeated 4 counts once: truth 7 has rank 3
            [1, -1, -1, -1, -1],  # truth 1 first
            [3, 5, 6, 8, 9],  # truth 0 not retrieved: rank K + 1 = 6
            [9, 8, 2, 0, 1],  # any of {0, 2}: 2 at rank 3
        ]
    )
    truth = [{7}, {1}, {0}, {0, 2}]
    assert ranks_from_ranked_ids(ranked, truth).tolist() == [3, 1, 6, 3]
    result = recall_from_ranked_ids(ranked, truth, ks=(1, 5))
    assert result.recall == {1: 25.0, 5: 75.0}
    assert result.median_rank == 3.0 and result.mean_rank == 3.25 and result.rank_depth == 5
    with pytest.raises(UsageError, match="only 5 were retrieved"):
        recall_from_ranked_ids(ranked, truth, ks=(1, 10))
    with pytest.raises(UsageError, match="entries for 4 queries"):
        ranks_from_ranked_ids(ranked, truth[:3])


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.eye(3), np.eye(2), [0, 1]), "must be 2-D with one dimension"),
        ((np.eye(3), np.eye(3), [0, 1]), "one per caption"),
        ((np.eye(3), np.eye(3), [0, 1, 3]), "must index the 3 media"),
        ((np.eye(3), np.eye(3), [0, 1, 1]), "every media needs at least one caption"),
        ((np.eye(3), np.full((3, 3), np.nan), [0, 1, 2]), "NaN"),
    ],
)
def test_bad_inputs_are_usage_errors(args, message):
    with pytest.raises(UsageError, match=message):
        cross_modal_recall(*args)


def test_bad_ks_and_ties():
    with pytest.raises(UsageError):
        cross_modal_recall(*designed_case(), ks=(0, 1))
    with pytest.raises(UsageError, match="ties"):
        cross_modal_recall(*designed_case(), ties="random")


def test_render_records_and_table():
    results = list(cross_modal_recall(*designed_case()))
    results.append(recall_from_ranked_ids(np.array([[0, 1], [1, 0], [1, 0]]), np.array([0, 0, 1]), ks=(1, 2), direction="text→image (index)"))
    records = recall_records(results)
    json.dumps(records, ensure_ascii=False)  # JSON-ready
    assert records[1] == {
        "direction": "image→text", "recall_at_1": 50.0, "recall_at_5": 75.0, "recall_at_10": 100.0,
        "median_rank": 1.5, "mean_rank": 2.5, "queries": 4, "ties": "optimistic",
    }
    assert records[2]["rank_depth"] == 2 and records[2]["recall_at_1"] == 66.67
    header, rows = recall_table(results)
    assert header == ["direction", "R@1", "R@2", "R@5", "R@10", "median rank", "mean rank", "queries"]
    assert rows[0] == ["text→image", "60.00", "-", "100.00", "100.00", "1", "1.60", "10"]
    assert rows[2][-3:] == [">=1", ">=1.33", "3"]
