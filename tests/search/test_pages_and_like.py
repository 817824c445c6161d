"""Pages of hits (``offset``, ``SearchResult.more``) and "more like this" (``Query.like``) in the library."""
from __future__ import annotations

import pytest

from mmsearch.errors import ItemNotFoundError
from mmsearch.search.queries import Query


@pytest.fixture
def engine(make_engine, media):
    engine = make_engine(audio_model="none")
    engine.index([media])
    return engine


def test_pages_are_slices_of_one_ranking(engine):
    whole = engine.search("copper river", k=10)
    assert len(whole.hits) == 10 and not whole.more
    pages = [engine.search("copper river", k=3, offset=offset) for offset in (0, 3, 6, 9)]
    assert [p.more for p in pages] == [True, True, True, False]
    assert [h.item_id for p in pages for h in p.hits] == [h.item_id for h in whole.hits]
    assert engine.search("copper river", k=3, offset=12).hits == ()
    assert engine.search("copper river", k=12).notes == ("only 10 files to search",)
    assert engine.search("copper river", k=3, offset=9).notes == ()  # said on the first page only


def test_like_searches_with_the_stored_vector_and_leaves_the_file_out(engine, media):
    photo = engine.search(image=media / "photo2.png", kind="image", k=6).hits
    liked = engine.search(Query(like=photo[0].item_id), kind="image", k=5)
    assert [h.item_id for h in liked.hits] == [h.item_id for h in photo[1:]]
    assert [h.score for h in liked.hits] == pytest.approx([h.score for h in photo[1:]], abs=1e-5)


def test_like_a_text_file_reaches_images_and_text(engine):
    note = engine.search("river", kind="text", k=1).hits[0]
    hits = engine.search(Query(like=note.item_id), k=9).hits
    assert note.item_id not in [h.item_id for h in hits] and len(hits) == 9
    assert {h.modality.value for h in hits} == {"image", "text"}


def test_like_with_text_is_the_mean_of_both(engine):
    import numpy as np

    from mmsearch.records import Modality

    note = engine.search("river", kind="text", k=1).hits[0]
    _, passages = engine.store.catalog.item_vectors(note.item_id)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    query = unit(unit(engine.clip.encode_texts(["lantern"]).vectors[0]) + unit(passages.mean(axis=0)))
    ids, vectors = next(engine.store.catalog.iter_vectors(Modality.IMAGE, engine.store.dim(Modality.IMAGE)))
    expected = np.sort(vectors @ query)[::-1][:3]
    both = engine.search(Query(text="lantern", like=note.item_id), kind="image", k=3).hits
    assert [h.score for h in both] == pytest.approx(expected.tolist(), abs=2e-3)


def test_unknown_or_removed_items_are_refused(engine, media):
    with pytest.raises(ItemNotFoundError, match="item 4242: no such item"):
        engine.search(Query(like=4242))
    photo = engine.search(image=media / "photo1.png", kind="image", k=1).hits[0]
    engine.remove([media / "photo1.png"])
    with pytest.raises(ItemNotFoundError):
        engine.search(Query(like=photo.item_id))
