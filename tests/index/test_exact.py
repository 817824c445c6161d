"""The one exact top-k and the one recall@k every index, benchmark and tuner is measured with."""
from __future__ import annotations

import numpy as np
import pytest

from mmsearch.errors import UsageError
from mmsearch.index.exact import ExactTopK, exact_top_k, recall_at_k


def test_recall_at_k_is_the_mean_share_of_each_querys_true_neighbours():
    exact = np.array([[1, 2, 3, 4], [5, 6, -1, -1], [-1, -1, -1, -1]])
    approx = np.array([[2, 9, 1, 3], [6, 6, 5, 0], [1, 2, 3, 4]])
    # query 0: {1,2} of top 2 -> found {2}: 1/2; query 1: {5,6} -> {6}: 1/2; query 2 has no neighbours
    assert recall_at_k(approx, exact, 2) == 0.5
    # query 0 top 3 {1,2,3} vs {2,9,1}: 2/3; query 1 {5,6} vs {6,6,5}: 1 (a query is scored over the
    # true ids it has, and a repeated id counts once)
    assert recall_at_k(approx, exact, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert recall_at_k(exact, exact, 4) == 1.0
    with pytest.raises(UsageError, match="between 1 and the depth"):
        recall_at_k(approx, exact, 5)
    with pytest.raises(UsageError, match="no query has any true neighbour"):
        recall_at_k(approx[2:], exact[2:], 2)


def test_the_streaming_top_k_equals_the_one_shot_answer_and_pads_short_collections():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1000, 16)).astype(np.float32)
    ids = np.arange(5000, 6000, dtype=np.int64)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    whole = exact_top_k(queries, vectors, ids, 10)
    streamed = ExactTopK(queries, 10)
    for start in range(0, 1000, 137):
        streamed.update(ids[start:start + 137], vectors[start:start + 137])
    assert np.array_equal(streamed.ids, whole.ids) and np.allclose(streamed.scores, whole.scores)
    scores = queries @ vectors.T
    assert np.array_equal(whole.ids, ids[np.argsort(-scores, axis=1)[:, :10]])  # by brute force
    short = ExactTopK(queries, 10).update(ids[:4], vectors[:4]).result()
    assert (short.ids[:, 4:] == -1).all() and np.isneginf(short.scores[:, 4:]).all()
    assert set(short.ids[0, :4].tolist()) == set(ids[:4].tolist())
