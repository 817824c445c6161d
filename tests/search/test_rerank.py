"""Re-ranking a search's first hits by cross-attention (``search(..., rerank=N)``), with the built-in tiny
matching model: the order is the combined score's, the rest follows untouched, pages stay slices of one
ranking, and every way it cannot be done is said in one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import TINY, fails_fast, sentence, write_image, write_text
from mmsearch.errors import ModelLoadError, UsageError
from mmsearch.search.queries import Part, Query


def index_media(root: Path) -> Path:
    """The conftest's media (6 images, 4 notes) and 7 more images."""
    for i in range(13):
        write_image(root / ("sub/deep.jpg" if i == 12 else f"photo{i}.png"), seed=99 if i == 12 else i)
    for i in range(4):
        write_text(root / "notes" / f"note{i}.txt", sentence(100 + i))
    return root


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_clip):
    """One store for the tests that only search it."""
    from mmsearch.config import Settings
    from mmsearch.engine import Engine

    folder = tmp_path_factory.mktemp("rerank")
    engine = Engine.open(Settings.resolve(store=folder / "store", model=TINY, audio_model="none", rerank_model=TINY),
                         create=True, clip=tiny_clip)
    engine.index([index_media(folder / "media")])
    yield engine, folder / "media"
    engine.close()


@pytest.fixture
def engine(shared):
    return shared[0]


@pytest.fixture
def own_engine(make_engine, tmp_path):
    """A store of its own, for tests that change files."""
    engine = make_engine(audio_model="none", rerank_model=TINY)
    engine.index([index_media(tmp_path / "own")])
    return engine, tmp_path / "own"


def expected_match(engine, hit, text: str) -> float:
    """The tiny model's probability for (text, the hit's image), computed on its own."""
    from mmsearch.decoding.images import load_image

    matcher = engine.reranker.matcher
    image = load_image(Path(hit.path), target_size=matcher.image_size)
    return float(matcher.match([text], matcher.image_states(matcher.pixels([image])))[0])


def test_first_n_hits_are_ordered_by_match_plus_cosine_and_the_rest_follow(engine):
    plain = engine.search("copper river at dawn", kind="image", k=10).hits
    result = engine.search("copper river at dawn", kind="image", k=10, rerank=6)
    head, tail = result.hits[:6], result.hits[6:]
    assert result.reranked == 6
    assert {h.item_id for h in head} == {h.item_id for h in plain[:6]}  # the same candidates, re-ordered
    assert [h.rerank_score for h in head] == sorted((h.rerank_score for h in head), reverse=True)
    for hit in head:
        assert hit.rerank_score == pytest.approx(hit.match + hit.score, abs=2e-6)
        assert hit.match == pytest.approx(expected_match(engine, hit, "copper river at dawn"), abs=1e-5)
    assert [h.item_id for h in tail] == [h.item_id for h in plain[6:]]
    assert all(h.match is None and h.rerank_score is None for h in tail)
    assert [h.item_id for h in head] != [h.item_id for h in plain[:6]]  # the tiny model does re-order
    as_json = head[0].as_json()
    assert as_json["match"] == head[0].match and as_json["rerank_score"] == head[0].rerank_score


def test_n_larger_than_the_hits_is_fine(engine):
    result = engine.search("velvet lemon", kind="image", k=5, rerank=500)
    assert len(result.hits) == 5 and result.reranked == 13 and result.more and result.notes == ()
    everything = engine.search("velvet lemon", kind="image", k=13, rerank=500).hits
    assert [h.item_id for h in result.hits] == [h.item_id for h in everything[:5]]
    assert all(h.rerank_score is not None for h in everything)


def test_pages_are_slices_of_one_re_ranked_list(engine):
    whole = engine.search("marble falcon", kind="image", k=13, rerank=8).hits
    pages = [engine.search("marble falcon", kind="image", k=4, offset=offset, rerank=8) for offset in (0, 4, 8, 12)]
    assert [p.more for p in pages] == [True, True, True, False]
    assert [h.item_id for p in pages for h in p.hits] == [h.item_id for h in whole]


def test_an_image_re_ranks_passages(shared):
    engine, media = shared
    result = engine.search(image=media / "photo3.png", kind="text", k=4, rerank=3)
    assert len(result.hits) == 4 and result.reranked == 3
    head = result.hits[:3]
    assert [h.rerank_score for h in head] == sorted((h.rerank_score for h in head), reverse=True)
    assert all(h.passage and h.match is not None for h in head) and result.hits[3].match is None


def test_a_candidate_that_cannot_be_read_follows_the_re_ranked_ones(own_engine):
    engine, media = own_engine
    plain = engine.search("glacier orchard", kind="image", k=5).hits
    gone = plain[1].path
    os.remove(gone)
    result = engine.search("glacier orchard", kind="image", k=5, rerank=5)
    assert [h.path for h in result.hits][4] == gone and result.hits[4].match is None
    assert any(gone in note and "could not be read for re-ranking" in note for note in result.notes)


def test_vision_states_are_cached_per_file_version(own_engine, monkeypatch):
    engine, media = own_engine
    matcher = engine.reranker.matcher
    encoded: list[int] = []
    real = matcher.image_states

    def counting(pixels):
        encoded.append(len(pixels))
        return real(pixels)
    monkeypatch.setattr(matcher, "image_states", counting)
    first = engine.search("thunder pepper", kind="image", k=6, rerank=6)
    again = engine.search("a saddle in a canyon", kind="image", k=6, rerank=6)  # other text, same images
    assert encoded == [6] or sum(encoded) <= 6 + len({h.item_id for h in again.hits} - {h.item_id for h in first.hits})
    encoded.clear()
    repeat = engine.search("thunder pepper", kind="image", k=6, rerank=6)
    assert encoded == [] and [h.match for h in repeat.hits] == [h.match for h in first.hits]
    changed = Path(first.hits[0].path)
    write_image(changed, seed=777)  # the file changes: its states are made anew
    os.utime(changed, ns=(1, 1))
    engine.search("thunder pepper", kind="image", k=6, rerank=6)
    assert encoded == [1]


@pytest.mark.parametrize("query, kind, message", [
    ("dawn", "all", "rerank with a text query re-ranks image hits: add kind image"),
    ("dawn", "text", "rerank with a text query re-ranks image hits: add kind image"),
    (Query(parts=(Part("text", "dawn"), Part("text", "dusk"))), "image", "not a query of several parts"),
    (Query(parts=(Part("text", "dawn", -1.0),)), "image", "not a query of several parts"),
])
def test_searches_that_cannot_be_re_ranked_are_refused(engine, query, kind, message):
    with pytest.raises(UsageError, match=message):
        engine.search(query, kind=kind, rerank=5)


def test_depth_is_bounded(engine):
    for depth in (-1, 1001):
        with pytest.raises(UsageError, match="rerank must be between 1 and 1000"):
            engine.search("dawn", kind="image", rerank=depth)


def test_model_that_cannot_be_had_fails_fast_unless_optional(shared, tiny_clip, connections, monkeypatch):
    from mmsearch.config import Settings
    from mmsearch.engine import Engine

    monkeypatch.delenv("HF_HUB_OFFLINE")
    engine = Engine.open(Settings.resolve(store=shared[0].store.path, audio_model="none"), clip=tiny_clip)
    # the default model: not cached, no network
    with pytest.raises(ModelLoadError, match="Salesforce/blip-itm-base-coco"):
        engine.search("dawn", kind="image", rerank=5)
    assert fails_fast(connections)
    result = engine.search("dawn", kind="image", k=3, rerank=5, rerank_optional=True)
    assert len(result.hits) == 3 and result.reranked == 0 and all(h.match is None for h in result.hits)
    assert result.notes[0].startswith("not re-ranked: cannot load model 'Salesforce/blip-itm-base-coco'")
    plain = engine.search("dawn", kind="image", k=3)
    assert [h.item_id for h in result.hits] == [h.item_id for h in plain.hits]
    engine.close()


def test_cli_shows_both_scores_and_fails_in_one_line(tmp_path, media):
    import json

    from typer.testing import CliRunner

    from mmsearch_cli.app import app

    def cli(*args):
        return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)

    store = tmp_path / "cli-store"
    assert cli("index", media, "--store", store, "--model", TINY, "--audio-model", "none").exit_code == 0
    found = cli("search", "river", "--kind", "image", "--rerank", "3", "--rerank-model", TINY, "--store", store,
                "--json", "-k", "4")
    hits = json.loads(found.stdout)
    assert found.exit_code == 0 and [("match" in h, "rerank_score" in h) for h in hits] == [(True, True)] * 3 + [(False, False)]
    shown = cli("search", "river", "--kind", "image", "--rerank", "3", "--rerank-model", TINY, "--store", store, "-k", "4")
    lines = shown.stdout.splitlines()
    assert "= match 0." in lines[0] and "+ cos " in lines[0] and "(not re-ranked)" in lines[3]
    offline = cli("search", "river", "--kind", "image", "--rerank", "3", "--store", store)
    assert offline.exit_code == 2 and len(offline.stderr.strip().splitlines()) == 1
    assert "--rerank-model /path/to/dir" in offline.stderr and "--rerank-optional" in offline.stderr
    optional = cli("search", "river", "--kind", "image", "--rerank", "3", "--rerank-optional", "--store", store, "--json")
    assert optional.exit_code == 0 and "not re-ranked" in optional.stderr
    assert all("match" not in h for h in json.loads(optional.stdout))
    wrong = cli("search", "river", "--rerank", "3", "--rerank-model", TINY, "--store", store)
    assert wrong.exit_code == 2 and "--rerank with a text query re-ranks image hits: add --kind image" in wrong.stderr
