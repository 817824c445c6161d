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
    (dict(query=Query(text="a"), kind="movies"), "^kind must be one of"),
    (dict(query=Query(text="a"), kind="video"), "this store holds no video files"),
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


DIM = 16


@pytest.fixture
def seeded(tmp_path):
    """A store of synthetic vectors: 40 text files of 1 to 9 passages each (a file's passages lie close
    together, so a query near a file fills the first results with it) under /docs/a and /docs/b, and 30
    images; returns (store, query rows)."""
    import numpy as np

    from mmsearch.ingest.importer import bind_import_model
    from mmsearch.records import Modality, Segment
    from mmsearch.store.folder import Store
    from mmsearch.store.rows import INDEXED

    rng = np.random.default_rng(7)
    centres = rng.standard_normal((70, DIM))
    store = Store.open(tmp_path / "store", create=True)
    store.acquire_writer()
    for modality in (Modality.TEXT, Modality.IMAGE):
        bind_import_model(store, modality, "synthetic:random", DIM, "test")
    with store.catalog.transaction() as write:
        entries = []
        for n, centre in enumerate(centres):
            modality = Modality.TEXT if n < 40 else Modality.IMAGE
            path = f"/docs/{'ab'[n % 2]}/file{n}.{'txt' if modality == Modality.TEXT else 'jpg'}"
            item = write.put_item(path=path, modality=modality, size=1, mtime_ns=1, content_hash=None, state=INDEXED)
            parts = 1 + n % 9 if modality == Modality.TEXT else 1
            vectors = centre + 0.05 * rng.standard_normal((parts, DIM))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            segments = [Segment(i, f"passage {i} of {n}", float(i), float(i + 1)) if modality == Modality.TEXT
                        else Segment(0) for i in range(parts)]
            entries.append((item, modality, segments, vectors.astype(np.float32)))
        write.add_segments_many(entries)
    queries = centres[[3, 5, 17]] + 0.3 * rng.standard_normal((3, DIM))
    yield store, (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    store.close()


def reference_search(store, rows, modalities, k, glob):
    """What the searcher must answer, the plain way: every stored vector scored against every query row,
    the best segment per file, z-scores against the calibration sample computed from the cosines."""
    import numpy as np

    from mmsearch.search.searcher import Searcher, check_glob

    found = []
    for modality in modalities:
        ids, vectors = map(np.concatenate, zip(*store.catalog.iter_vectors(modality, DIM)))
        if glob is not None:
            keep = np.isin(ids, store.catalog.segment_ids(modality, check_glob(glob)))
            ids, vectors = ids[keep], vectors[keep]
        scores = vectors @ rows.T
        sample = Searcher(store)._load_sample(modality) @ rows.T
        segments = store.catalog.segment_rows(ids)
        best = {}
        for seg_id, row_scores in zip(ids.tolist(), scores):
            row = int(np.argmax(row_scores))
            segment = segments[seg_id]
            if segment.item_id not in best or row_scores[row] > best[segment.item_id][0]:
                best[segment.item_id] = (float(row_scores[row]), row, segment)
        for score, row, segment in best.values():
            z = (score - sample[:, row].mean()) / sample[:, row].std()
            found.append((segment.path, segment.id, score, z, segment.text, segment.start))
    return sorted(found, key=lambda hit: -(hit[3] if len(modalities) > 1 else hit[2]))[:k]


@pytest.mark.parametrize("kind, rows, k, glob", [
    ("text", [0], 5, None), ("text", [2], 3, None), ("text", [1], 12, "/docs/a/*"), ("text", [0, 1, 2], 8, None),
    ("text", [2], 40, "b/*.txt"), ("image", [0], 7, None), ("all", [0], 15, None), ("all", [0, 2], 9, "*/a/*"),
])
def test_hits_match_a_plain_reference_search(seeded, kind, rows, k, glob):
    """One hit per file (its best segment against any query row), the depth grown when a file's passages
    fill the first results, globs, the merge by calibrated score, and calibrated scores equal to the
    z-score of the hit's cosine among the query's cosines to the calibration sample."""
    from mmsearch.records import Modality
    from mmsearch.search.searcher import QueryVectors, Searcher

    store, queries = seeded
    modalities = [Modality.TEXT, Modality.IMAGE] if kind == "all" else [Modality(kind)]
    expected = reference_search(store, queries[rows], modalities, k, glob)
    hits = Searcher(store).search(QueryVectors({"clip": queries[rows]}), kind=kind, k=k, path_glob=glob).hits
    assert [(h.path, h.segment_id) for h in hits] == [(path, seg) for path, seg, *_ in expected]
    assert [h.score for h in hits] == pytest.approx([hit[2] for hit in expected], abs=2e-6)
    assert [h.calibrated for h in hits] == pytest.approx([hit[3] for hit in expected], abs=2e-4)
    assert [(h.passage, h.start) for h in hits] == [(text, start) for *_, text, start in expected]
    assert len({h.path for h in hits}) == len(hits)


def test_a_commit_is_seen_by_the_next_query(seeded):
    """Rows of hits are kept in memory between queries, but never past a change to the catalog."""
    from mmsearch.search.searcher import QueryVectors, Searcher

    store, queries = seeded
    searcher = Searcher(store)
    first = searcher.search(QueryVectors({"clip": queries[:1]}), kind="text", k=3).hits[0]
    with store.catalog.transaction() as write:
        write.move_item(first.item_id, "/moved/there.txt", 1, 1)
    again = searcher.search(QueryVectors({"clip": queries[:1]}), kind="text", k=3).hits[0]
    assert (again.path, again.segment_id, again.score) == ("/moved/there.txt", first.segment_id, first.score)
