"""Queries: image->image, text->text, combined queries, filters, -k, kinds."""
from __future__ import annotations

import pytest

from conftest import sentence, write_text

from mmsearch.errors import PathNotFoundError, QueryError, UsageError
from mmsearch.search.queries import Query


@pytest.fixture
def engine(make_engine, media):
    engine = make_engine()
    engine.index([media])
    return engine


def test_indexed_image_as_query_comes_back_first_with_score_one(engine, media):
    for name in ("photo0.png", "photo4.png", "sub/deep.jpg"):
        hits = engine.search(Query(image=media / name), kind="image", k=3).hits
        assert hits[0].path == str(media / name)
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[1].score < hits[0].score


def test_text_file_content_as_query_comes_back_first(engine, media):
    content = (media / "notes" / "note2.txt").read_text()
    hits = engine.search(Query(text=content), kind="text", k=4).hits
    assert hits[0].path == str(media / "notes" / "note2.txt")
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].passage == content


def test_kind_all_returns_both_modalities_ranked_by_calibrated_score(engine):
    hits = engine.search(Query(text=sentence(1)), kind="all", k=10).hits
    assert {h.modality.value for h in hits} == {"image", "text"}
    calibrated = [h.calibrated for h in hits]
    assert calibrated == sorted(calibrated, reverse=True)


def test_image_query_can_return_text(engine, media):
    hits = engine.search(Query(image=media / "photo0.png"), kind="text", k=2).hits
    assert [h.modality.value for h in hits] == ["text", "text"]


def test_text_and_image_together_is_between_the_two(engine, media):
    photo = str(media / "photo1.png")

    def score(query):
        return {h.path: h.score for h in engine.search(query, kind="image", k=6).hits}[photo]

    text_only, both = score(Query(text=sentence(5))), score(Query(text=sentence(5), image=media / "photo1.png"))
    assert text_only < both < 0.9999


def test_path_glob_restricts_hits(engine, media):
    hits = engine.search(Query(text="x"), kind="all", k=10, path_glob="*/sub/*").hits
    assert [h.path for h in hits] == [str(media / "sub" / "deep.jpg")]
    relative = engine.search(Query(text="x"), kind="all", k=10, path_glob="notes/*.txt").hits
    assert len(relative) == 4 and all(h.modality.value == "text" for h in relative)
    assert engine.search(Query(text="x"), kind="image", k=10, path_glob="*.nothing").hits == ()


def test_k_limits_and_scores_are_sorted(engine):
    hits = engine.search(Query(text="river"), kind="image", k=3).hits
    assert len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(-1.0 <= h.score <= 1.0 for h in hits)


def test_k_beyond_store_size(engine):
    result = engine.search(Query(text="river"), kind="image", k=50)
    assert len(result.hits) == 6 and any("only 6 files" in note for note in result.notes)
    with pytest.raises(UsageError, match="more than the 6 files"):
        engine.search(Query(text="river"), kind="image", k=50, strict_k=True)


@pytest.mark.parametrize("kwargs, error", [
    (dict(query=Query(text="   ")), "empty text query"),
    (dict(query=Query()), "nothing to search for"),
    (dict(query=Query(text="a"), k=0), "^k must be at least 1"),
    (dict(query=Query(text="a"), kind="video"), "^kind must be one of"),
    (dict(query=Query(text="a"), path_glob="photos/[abc"), "unclosed"),
    (dict(query=Query(text="a"), kind="audio"), "no audio files"),
])
def test_bad_queries_raise_usage_errors(engine, kwargs, error):
    query = kwargs.pop("query")
    with pytest.raises(UsageError, match=error):
        engine.search(query, **kwargs)


def test_unreadable_query_files(engine, tmp_path):
    with pytest.raises(PathNotFoundError):
        engine.search(Query(image=tmp_path / "missing.jpg"))
    not_image = write_text(tmp_path / "fake.jpg", "just text")
    with pytest.raises(QueryError, match="fake.jpg"):
        engine.search(Query(image=not_image))


def test_long_query_text_is_truncated_with_a_note(engine):
    result = engine.search(Query(text=" ".join(["word"] * 500)), kind="text", k=1)
    assert any("truncated" in note for note in result.notes)


def test_exact_index_agrees_with_brute_force(engine, media):
    import numpy as np

    from mmsearch.index.exact import exact_top_k
    from mmsearch.records import Modality

    index = engine.store.index(Modality.IMAGE)
    ids, vectors = next(engine.store.catalog.iter_vectors(Modality.IMAGE, engine.store.dim(Modality.IMAGE)))
    queries = vectors[:3]
    found = index.search(queries, 4)
    expected = exact_top_k(queries, vectors, ids, 4)
    if getattr(index, "on_gpu", False):  # float16 on a GPU: exact up to its rounding, ties in either order
        row_of = {int(i): row for row, i in enumerate(ids)}
        true = np.array([[vectors[row_of[int(i)]] @ q for i in hits] for q, hits in zip(queries, found.ids)])
        np.testing.assert_allclose(true, expected.scores, atol=2e-3)
        np.testing.assert_allclose(found.scores, expected.scores, atol=2e-3)
        return
    np.testing.assert_array_equal(found.ids, expected.ids)
    np.testing.assert_allclose(found.scores, expected.scores, atol=1e-5)
