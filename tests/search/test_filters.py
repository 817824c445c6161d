"""Filters applied inside the search (before k, not after a fixed top-k): modification time, audio duration,
path glob; composed with parts and paging."""
from __future__ import annotations

import os
import time

import pytest

from conftest import write_image

from mmsearch.errors import UsageError
from mmsearch.search.filters import Filters, parse_time
from mmsearch.search.queries import Query

DAY = 86400.0


@pytest.fixture
def dated(make_engine, tmp_path):
    """20 images, image i last modified i days after 2024-01-01."""
    folder = tmp_path / "dated"
    start = parse_time("2024-01-01T00:00:00+00:00", "modified_after")
    for i in range(20):
        path = write_image(folder / f"d{i:02d}.png", seed=i)
        os.utime(path, (start + i * DAY, start + i * DAY))
    engine = make_engine(audio_model="none")
    engine.index([folder])
    return engine, start, folder


def test_modified_range_is_applied_before_k(dated):
    engine, start, folder = dated
    window = Filters(modified_after=start + 15 * DAY, modified_before=start + 18 * DAY)  # days 15, 16, 17
    hits = engine.search("x", kind="image", k=3, filters=window).hits
    assert sorted(os.path.basename(h.path) for h in hits) == ["d15.png", "d16.png", "d17.png"]
    ranked_last = engine.search("x", kind="image", k=20).hits[-1]  # the file the query likes least
    day = int(os.path.basename(ranked_last.path)[1:3])
    alone = Filters(modified_after=start + day * DAY, modified_before=start + day * DAY + 1)
    assert [h.path for h in engine.search("x", kind="image", k=1, filters=alone).hits] == [ranked_last.path]


def test_filters_compose_with_parts_globs_and_pages(dated):
    engine, start, folder = dated
    later = Filters(path_glob="*/d1*.png", modified_after=start + 12 * DAY)  # d12..d19
    liked = engine.search(image=folder / "d03.png", kind="image", k=1).hits[0].item_id
    query = Query(text="meadow", like=liked)
    whole = engine.search(query, kind="image", k=8, filters=later)
    assert len(whole.hits) == 8 and all(int(os.path.basename(h.path)[1:3]) >= 12 for h in whole.hits)
    pages = [h.item_id for offset in (0, 3, 6) for h in engine.search(query, kind="image", k=3, offset=offset,
                                                                       filters=later).hits]
    assert pages == [h.item_id for h in whole.hits]


def test_duration_keeps_sounds_of_that_length_and_leaves_other_kinds_out(engine):
    long_only = engine.search("a hum", kind="audio", k=3, filters=Filters(min_duration=10))
    assert [os.path.basename(h.path) for h in long_only.hits] == ["long.wav"]
    short = engine.search("a hum", kind="audio", k=3, filters=Filters(max_duration=5))
    assert sorted(os.path.basename(h.path) for h in short.hits) == ["a440.wav", "a880.wav"]
    mixed = engine.search("a hum", kind="all", k=10, filters=Filters(min_duration=3.5, max_duration=30))
    assert sorted(os.path.basename(h.path) for h in mixed.hits) == ["a880.wav", "long.wav"]


def test_bad_filters_are_refused():
    with pytest.raises(UsageError, match="earlier than"):
        Filters(modified_after=10, modified_before=5)
    with pytest.raises(UsageError, match="not be more than"):
        Filters(min_duration=5, max_duration=1)
    with pytest.raises(UsageError, match="not a date"):
        parse_time("yesterday-ish", "modified_after")
    assert parse_time("1700000000", "modified_after") == 1700000000.0
    assert abs(parse_time("2024-05-01", "x") - time.mktime((2024, 5, 1, 0, 0, 0, 0, 0, -1))) < 1
