"""Composed queries on constructed vectors with known answers: a store of hand-made unit vectors (imported,
exact index), queried by its own items as weighted ``like`` parts, so that every fusion rule, the cut-off
and paging can be checked against arithmetic done here with numpy."""
from __future__ import annotations

import numpy as np
import pytest

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.errors import UsageError
from mmsearch.ingest.importer import ImportChunk, bind_import_model, import_chunks
from mmsearch.records import Hit, Modality
from mmsearch.search.fusion import RRF_K, autocut, late_fusion
from mmsearch.search.queries import Part, Query, parse_part

DIM = 6


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """12 directions: the axes, some between them, and a seeded random rest, each nudged by a little seeded
    noise so that no two cosines to any row tie (ties would leave the order to the index)."""
    rng = np.random.default_rng(7)
    e = np.eye(DIM)
    rows = [e[0], e[1], e[0] + e[1], e[0] - e[1], e[2], e[0] + 0.2 * e[2], e[1] + 0.5 * e[3], e[3]] + \
        [rng.standard_normal(DIM) for _ in range(4)]
    return np.asarray([_unit(_unit(row) + 0.04 * rng.standard_normal(DIM)) for row in rows], np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory, vectors):
    from mmsearch.store.folder import Store

    folder = tmp_path_factory.mktemp("fusion") / "store"
    with Store.open(folder, create=True) as opened:
        opened.acquire_writer()
        bind_import_model(opened, Modality.IMAGE, "synthetic-clustered:random", DIM, "test")
        import_chunks(opened, iter([ImportChunk(vectors, [f"/v/{i:02d}.jpg" for i in range(len(vectors))])]),
                      Modality.IMAGE)
    return folder


@pytest.fixture
def engine(store):
    with Engine.open(Settings.resolve(store=store)) as engine:
        yield engine


@pytest.fixture
def ids(engine) -> list[int]:
    """Catalog id of row i."""
    items = engine.store.catalog.all_items()
    return [items[f"/v/{i:02d}.jpg"].id for i in range(len(items))]


def _rows(hits, ids) -> list[int]:
    return [ids.index(h.item_id) for h in hits]


def _order(values: dict[int, float]) -> list[int]:
    return [row for row, _ in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))]


def test_parse_part_reads_weights_after_the_last_colon():
    assert parse_part("text", "beach at night:2") == Part("text", "beach at night", 2.0)
    assert parse_part("text", "less of this:-0.5") == Part("text", "less of this", -0.5)
    assert parse_part("text", "clock at 10:30:1") == Part("text", "clock at 10:30", 1.0)
    assert parse_part("text", "a: b") == Part("text", "a: b", 1.0)
    assert parse_part("image", "/photos/take:2.jpg").value.name == "take:2.jpg"
    assert parse_part("like", "42:-1") == Part("like", 42, -1.0)
    assert str(parse_part("like", "/a/b.jpg").value) == "/a/b.jpg"
    assert parse_part("text", ":2") == Part("text", ":2", 1.0)  # nothing before the colon: all of it is text
    for bad in ("x:nan", "x:inf", "  :2"):
        with pytest.raises(UsageError):
            parse_part("text", bad)


def test_early_fusion_is_the_weighted_sum_of_part_cosines(engine, vectors, ids):
    weights = {0: 1.0, 1: 1.0, 4: -0.5}  # A + B - 0.5 E
    query = Query(parts=tuple(Part("like", ids[row], w) for row, w in weights.items()))
    result = engine.search(query, kind="image", k=9, fusion="early")
    total = sum(w * vectors[row].astype(np.float64) for row, w in weights.items())
    expected = {row: float(vectors[row] @ total / np.linalg.norm(total)) for row in range(len(vectors))
                if row not in weights}
    assert result.fusion == "early" and _rows(result.hits, ids) == _order(expected)
    assert _rows(result.hits, ids)[0] == 2  # halfway between A and B
    for hit in result.hits:
        row = ids.index(hit.item_id)
        assert hit.parts == pytest.approx([float(vectors[row] @ vectors[p]) for p in weights], abs=1e-6)
        weighted = sum(w * c for w, c in zip(weights.values(), hit.parts))
        assert hit.score == pytest.approx(weighted / np.linalg.norm(total), abs=1e-5)  # exact index: equality


def test_a_negative_part_turns_the_answer_away(engine, ids):
    plus = engine.search(Query(parts=(Part("like", ids[0]), Part("like", ids[1]))), kind="image", k=1)
    minus = engine.search(Query(parts=(Part("like", ids[0]), Part("like", ids[1], -1.0))), kind="image", k=1)
    assert _rows(plus.hits, ids) == [2] and _rows(minus.hits, ids) == [3]  # (e1+e2) vs (e1-e2)


def _single_lists(vectors, parts: dict[int, float]) -> dict[int, list[int]]:
    """Each part's ranking of the other files (liked files are left out of every list)."""
    rows = [r for r in range(len(vectors)) if r not in parts]
    return {p: sorted(rows, key=lambda r: (-float(vectors[r] @ vectors[p]), r)) for p in parts}


def test_reciprocal_rank_fusion_matches_the_formula(engine, vectors, ids):
    parts = {0: 1.0, 3: 0.5, 6: -1.0}
    query = Query(parts=tuple(Part("like", ids[row], w) for row, w in parts.items()))
    result = engine.search(query, kind="image", k=9, fusion="rrf")
    lists = _single_lists(vectors, parts)
    fused = {r: sum(w / (RRF_K + lists[p].index(r) + 1) for p, w in parts.items()) for r in lists[0]}
    assert result.fusion == "rrf" and _rows(result.hits, ids) == _order(fused)
    assert [h.score for h in result.hits] == pytest.approx([fused[r] for r in _order(fused)], abs=1e-6)
    custom = engine.search(query, kind="image", k=9, fusion="rrf", rrf_k=1)
    fused1 = {r: sum(w / (1 + lists[p].index(r) + 1) for p, w in parts.items()) for r in lists[0]}
    assert _rows(custom.hits, ids) == _order(fused1)


def test_score_fusion_sums_weighted_calibrated_scores(engine, vectors, ids):
    parts = {1: 1.0, 5: 1.0, 7: -0.5}
    query = Query(parts=tuple(Part("like", ids[row], w) for row, w in parts.items()))
    result = engine.search(query, kind="image", k=9, fusion="score")
    sample = vectors.astype(np.float64)  # fewer vectors than the calibration sample: all of them
    centre = sample.mean(axis=0)
    cov = (sample - centre).T @ (sample - centre) / len(sample)

    def z(row, part):
        q = sample[part]
        return (float(sample[row] @ q) - float(q @ centre)) / np.sqrt(float(q @ cov @ q))
    fused = {r: sum(w * z(r, p) for p, w in parts.items()) for r in range(len(vectors)) if r not in parts}
    assert _rows(result.hits, ids) == _order(fused)
    assert [h.score for h in result.hits] == pytest.approx([fused[r] for r in _order(fused)], abs=1e-3)


def _hit(item, score, calibrated=None):
    from mmsearch.records import Modality as M

    return Hit(f"/{item}", M.IMAGE, score, score if calibrated is None else calibrated, item, item)


def test_late_fusion_rules_on_hand_made_lists():
    lists = [(_hit(1, .9), _hit(2, .8), _hit(3, .7)),   # part 0, weight 1
             (_hit(3, .95), _hit(1, .5)),               # part 1, weight 1
             (_hit(1, .99),)]                           # part 2, weight -1: penalises item 1
    rrf = late_fusion(lists, [1.0, 1.0, -1.0], "rrf", rrf_k=60)
    expected = {1: 1 / 61 + 1 / 62 - 1 / 61, 2: 1 / 62, 3: 1 / 63 + 1 / 61}
    assert [h.item_id for h in rrf] == [3, 1, 2]
    assert [h.score for h in rrf] == pytest.approx([expected[3], expected[1], expected[2]], abs=1e-6)
    assert rrf[0].parts == (.7, .95, None) and rrf[2].parts == (.8, None, None)
    score = late_fusion(lists, [1.0, 1.0, -1.0], "score")
    # a part that did not return a file counts its lowest calibrated score: part 1 -> 0.5, part 2 -> 0.99
    values = {1: .9 + .5 - .99, 2: .8 + .5 - .99, 3: .7 + .95 - .99}
    assert [h.item_id for h in score] == sorted(values, key=lambda i: -values[i])
    assert late_fusion([(_hit(5, .9),), (_hit(6, .9),)], [1.0, -1.0], "rrf")[0].item_id == 5  # 6: only negative


def test_auto_chooses_early_within_a_space_and_rrf_across(engine, ids):
    one_space = engine.search(Query(parts=(Part("like", ids[0]), Part("like", ids[1]))), kind="image", k=2)
    assert one_space.fusion == "early"
    single = engine.search(Query(like=ids[0]), kind="image", k=2)
    assert single.fusion is None and all(h.parts is None for h in single.hits)


def test_autocut_keeps_what_comes_before_the_largest_drop():
    assert autocut([5.0, 4.9, 4.8, 2.0, 1.9, 1.8]) == 3
    assert autocut([3.0, 1.0]) == 1 and autocut([1.0]) == 1 and autocut([]) == 0


def test_cutoff_and_min_score_report_what_they_cut(engine, vectors, ids):
    query = Query(like=ids[0])
    whole = engine.search(query, kind="image", k=11)
    scores = [h.calibrated for h in whole.hits]
    keep = autocut(scores)
    cut = engine.search(query, kind="image", k=11, cutoff="auto")
    assert len(cut.hits) == keep < 11 and cut.cut == 11 - keep and not cut.more
    floor = scores[4]
    above = engine.search(query, kind="image", k=11, min_score=floor)
    assert [h.item_id for h in above.hits] == [h.item_id for h in whole.hits[:5]] and above.cut == 6


@pytest.mark.parametrize("fusion, cutoff, min_score", [("early", None, None), ("rrf", None, None),
                                                        ("score", None, None), ("rrf", "auto", None),
                                                        ("early", None, -0.5)])
def test_pages_have_no_duplicates_or_gaps(engine, ids, fusion, cutoff, min_score):
    query = Query(parts=(Part("like", ids[0]), Part("like", ids[6], 0.7), Part("like", ids[4], -0.3)))
    options = dict(kind="image", fusion=fusion, cutoff=cutoff, min_score=min_score)
    whole = engine.search(query, k=9, **options)
    pages, offset = [], 0
    while True:
        page = engine.search(query, k=2, offset=offset, **options)
        pages.extend(h.item_id for h in page.hits)
        offset += 2
        if not page.more:
            break
    assert pages == [h.item_id for h in whole.hits]


def test_a_query_needs_a_positive_part(engine, ids):
    for fusion in ("early", "rrf", "score"):
        with pytest.raises(UsageError, match="positive weight"):
            engine.search(Query(parts=(Part("like", ids[0], -1.0),)), kind="image", fusion=fusion)
    with pytest.raises(UsageError, match="fusion must be one of"):
        engine.search(Query(like=ids[0]), fusion="median")


def test_like_by_path(engine, ids):
    by_path = engine.search(Query(parts=(Part("like", __import__("pathlib").Path("/v/00.jpg")),)), kind="image", k=3)
    by_id = engine.search(Query(like=ids[0]), kind="image", k=3)
    assert [h.item_id for h in by_path.hits] == [h.item_id for h in by_id.hits]


def test_a_part_that_reaches_no_index_is_left_out_of_late_fusion_with_a_note(engine, vectors, ids):
    from mmsearch.search.filters import Filters
    from mmsearch.search.fusion import run_query
    from mmsearch.search.queries import PartVectors
    from mmsearch.search.searcher import Searcher

    liked = PartVectors(Part("like", ids[0]), {"clip": vectors[:1]}, frozenset({"clip"}))
    sound = PartVectors(Part("audio", "x.wav"), {"clap": np.ones((1, 4), np.float32) / 2}, frozenset({"clap"}))
    result = run_query(Searcher(engine.store), [liked, sound], [], kind="image", k=3, offset=0, filters=Filters(),
                       strict_k=False, fusion="auto", rrf_k=RRF_K, cutoff=None, min_score=None, exclude={ids[0]},
                       fetch=None)
    alone = engine.search(Query(like=ids[0]), kind="image", k=3)
    assert result.fusion == "rrf" and [h.item_id for h in result.hits] == [h.item_id for h in alone.hits]
    assert [h.parts for h in result.hits] == [(h.score, None) for h in alone.hits]
    assert result.notes == ("query part 2 (audio) reaches none of the files searched (no bridge to their model's "
                            "space): left out",)
