"""``mmsearch bench recall --rerank N``: the no-rerank and rerank rows. With a matching model that knows the
answers, the hand-computed ranks of the designed case in ``test_bench_cli``; with the tiny random BLIP, the
rows are what ``Engine.search(..., rerank=N)`` (text→image) and match + cosine over the nearest captions
(image→text) give query by query, and re-ordering the first N hits leaves recall@k for k >= N unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY
from test_bench_cli import OWNERS, StubEncoder, by_method, make_designed, make_tiny_pairs, solid

from mmsearch.config import Settings
from mmsearch.encoders.matching import MatcherIdentity
from mmsearch.engine import Engine
from mmsearch.evaluation.pairs import load_pairs
from mmsearch.evaluation.recall import summarize_ranks
from mmsearch.evaluation.rerank_recall import spread
from mmsearch.evaluation.runner import embed_pairs, run_recall
from mmsearch.evaluation.store_recall import match_store
from mmsearch_cli.app import app

OWN_IMAGE = {caption: int(Path(image).stem[1:]) for image, caption in OWNERS if image != "broken.png"}


class OracleMatcher:
    """A matching model that knows the designed case: P(match) is 1 for a caption and its own image, else 0.
    An image's "vision states" are its number (the stub images are solid, red = 10 x number)."""

    identity = MatcherIdentity("oracle", semantic=True)
    image_size = 16

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def pixels(self, images) -> np.ndarray:
        return np.asarray([image.getpixel((0, 0))[0] // 10 for image in images], dtype=np.float32)

    def image_states(self, pixels: np.ndarray):
        import torch

        return torch.from_numpy(pixels)[:, None]

    def match(self, texts, states) -> np.ndarray:
        numbers = [int(n) for n in states.flatten().tolist()]
        n = max(len(texts), len(numbers))
        texts, numbers = (texts * n if len(texts) == 1 else texts), (numbers * n if len(numbers) == 1 else numbers)
        return np.asarray([float(OWN_IMAGE.get(t) == number) for t, number in zip(texts, numbers)], np.float32)


@pytest.fixture
def designed(tmp_path):
    return make_designed(tmp_path)


@pytest.fixture
def oracle(monkeypatch):
    monkeypatch.setattr("mmsearch.encoders.matching.load_matcher", lambda spec, device="auto": OracleMatcher())


def test_rerank_rows_with_a_matcher_that_knows_the_answers(designed, tmp_path, oracle):
    folder, pairs = designed
    solid(folder / "distractor.png", 9)
    stub = StubEncoder()
    with Engine.open(Settings.resolve(store=tmp_path / "store", audio_model="none"), create=True, clip=stub) as engine:
        engine.index([folder])
        report = run_recall(load_pairs(pairs), stub, engine=engine, rerank=3)
        deeper = by_method(run_recall(load_pairs(pairs), stub, engine=engine, rerank=4))
    rows = by_method(report)
    # text→image: end-to-end ranks 1, 3, 4, 1. Re-ranking the first 3 lifts c1's image (3rd) to the top; c2's
    # image, 4th, is not among them and stays 4th; re-ranking 4 lifts it too.
    plain, reranked = rows["no-rerank", "text→image"].result, rows["rerank", "text→image"].result
    assert plain.recall == rows["end-to-end", "text→image"].result.recall == {1: 50.0, 5: 100.0, 10: 100.0}
    assert plain.mean_rank == pytest.approx(2.25)
    assert reranked.recall == {1: 75.0, 5: 100.0, 10: 100.0} and reranked.mean_rank == pytest.approx(1.75)
    assert deeper["rerank", "text→image"].result.recall[1] == 100.0
    # image→text over the stored vectors: m1's caption c2 is 2nd (after c1); re-ranking 2 puts it first
    plain, reranked = rows["no-rerank", "image→text"].result, rows["rerank", "image→text"].result
    assert plain.recall[1] == pytest.approx(200 / 3) and plain.mean_rank == pytest.approx(4 / 3)
    assert reranked.recall == {1: 100.0, 5: 100.0, 10: 100.0} and reranked.mean_rank == 1.0
    assert (plain.queries, reranked.queries, rows["rerank", "text→image"].result.queries) == (3, 3, 4)
    summary = report.rerank
    assert (summary.depth, summary.model, summary.semantic) == (3, "oracle", True)
    assert (summary.captions, summary.of_captions, summary.images, summary.of_images) == (4, 4, 3, 3)
    assert [Path(f.path).name for f in rows["rerank", "text→image"].excluded] == ["broken.png"]


def test_rerank_queries_bounds_both_directions_and_both_rows(designed, tmp_path, oracle):
    folder, pairs = designed
    stub = StubEncoder()
    with Engine.open(Settings.resolve(store=tmp_path / "store", audio_model="none"), create=True, clip=stub) as engine:
        engine.index([folder])
        report = run_recall(load_pairs(pairs), stub, engine=engine, rerank=3, rerank_queries=2)
        with pytest.raises(Exception, match="rerank_queries must be at least 1"):
            run_recall(load_pairs(pairs), stub, engine=engine, rerank=3, rerank_queries=0)
        with pytest.raises(Exception, match="rerank must be between 1 and"):
            run_recall(load_pairs(pairs), stub, engine=engine, rerank=5000)
    rows = by_method(report)
    for method in ("no-rerank", "rerank"):  # captions c0 and c3 (first and last), images m0 and m2
        assert rows[method, "text→image"].result.queries == rows[method, "text→image"].captions == 2
        assert rows[method, "image→text"].result.queries == rows[method, "image→text"].media == 2
        assert rows[method, "text→image"].result.recall[1] == rows[method, "image→text"].result.recall[1] == 100.0
    assert (report.rerank.captions, report.rerank.of_captions, report.rerank.images, report.rerank.of_images) == \
        (2, 4, 2, 3)
    with pytest.raises(Exception, match="add store"):
        run_recall(load_pairs(pairs), stub, rerank=3)


def test_spread_takes_first_and_last_evenly():
    assert spread(10, None).tolist() == list(range(10)) and spread(3, 5).tolist() == [0, 1, 2]
    assert spread(10, 3).tolist() == [0, 4, 9] and spread(10, 1).tolist() == [0]
    assert len(spread(25_000, 1000)) == 1000


# ------------------------------------------------------------------- the tiny random BLIP, query by query

@pytest.fixture
def tiny_store(tmp_path):
    tiny_pairs = make_tiny_pairs(tmp_path)
    store = tmp_path / "store"
    indexed = CliRunner().invoke(app, ["index", str(tiny_pairs.parent / "img"), "--store", str(store), "--model",
                                       TINY, "--audio-model", "none"])
    assert indexed.exit_code == 0, indexed.output
    return tiny_pairs, store


def test_rows_are_what_the_re_ranked_search_returns_query_by_query(tiny_store):
    import torch

    pairs_file, store = tiny_store
    pairs = load_pairs(pairs_file)
    with Engine.open(Settings.resolve(store=store, rerank_model=TINY)) as engine:
        report = run_recall(pairs, engine.clip, engine=engine, rerank=2)
        rows = by_method(report)
        ranks = []
        for caption, owner in zip(pairs.captions, pairs.caption_media.tolist()):
            hits = engine.search(caption, kind="image", k=10, rerank=2).hits
            assert hits[0].rerank_score is not None and hits[2].rerank_score is None
            paths = [Path(hit.path).resolve() for hit in hits]
            ranks.append(paths.index(Path(pairs.media[owner]).resolve()) + 1)
        expected = summarize_ranks(ranks, (1, 5, 10), "text→image", rank_depth=10)
        assert rows["rerank", "text→image"].result == expected
        assert expected != rows["no-rerank", "text→image"].result  # the random model does re-order this case
        # image→text: each image's 10 nearest captions by stored vector, the first 2 ordered by match + cosine
        embedded = embed_pairs(pairs, engine.clip)
        match = match_store(embedded, engine.store)
        matcher = engine.reranker.matcher
        ranks = []
        for row, vector in zip(match.rows.tolist(), match.vectors):
            scores = embedded.caption_vectors @ vector
            nearest = np.argsort(-scores, kind="stable")[:10].tolist()
            image = matcher.image_states(matcher.pixels([_load(pairs.media[embedded.kept_media[row]], matcher)]))
            probabilities = matcher.match([pairs.captions[c] for c in nearest[:2]], image)
            combined = {c: round(float(p) + float(scores[c]), 6) for c, p in zip(nearest, probabilities)}
            ordered = sorted(nearest[:2], key=lambda c: -combined[c]) + nearest[2:]  # sorted() is stable
            own = set(np.flatnonzero(embedded.caption_owner == row).tolist())
            ranks.append(next(n for n, c in enumerate(ordered, 1) if c in own))
        assert isinstance(image, torch.Tensor)
        expected = summarize_ranks(ranks, (1, 5, 10), "image→text", rank_depth=10)
        assert rows["rerank", "image→text"].result == expected


def _load(path, matcher):
    from mmsearch.decoding.images import load_image

    return load_image(Path(path), target_size=matcher.image_size)


runner = CliRunner()


@pytest.mark.parametrize("depth", [1, 3])
def test_cli_rerank_rows_in_text_and_json(tiny_store, depth):
    pairs, store = tiny_store
    command = ["bench", "recall", "--pairs", str(pairs), "--store", str(store), "--rerank", str(depth),
               "--rerank-model", TINY]
    result = runner.invoke(app, [*command, "--json"])
    assert result.exit_code == 0, result.output
    objects = {(o["method"], o["direction"]): o for o in json.loads(result.stdout)}
    for direction in ("text→image", "image→text"):
        plain, reranked = objects["no-rerank", direction], objects["rerank", direction]
        assert reranked["rerank_depth"] == depth and reranked["rerank_model"] == TINY
        assert reranked["rerank_semantic"] is False and reranked["rerank_seconds_per_query"] > 0
        assert plain["queries"] == reranked["queries"] == (8 if direction == "text→image" else 4)
        # re-ordering the first N hits cannot move the answer into or out of them
        for k in (1, 5, 10):
            if k >= depth:
                assert reranked[f"recall_at_{k}"] == plain[f"recall_at_{k}"], (direction, k)
    assert objects["no-rerank", "text→image"]["recall_at_1"] == objects["end-to-end", "text→image"]["recall_at_1"]
    if depth == 1:  # one candidate cannot be re-ordered: the index's recall@1 (the store holds only pair images)
        assert objects["rerank", "text→image"]["recall_at_1"] == objects["index", "text→image"]["recall_at_1"]
    assert "re-ranking model test-tiny:random has random weights" in result.stderr
    text = runner.invoke(app, [*command, "--rerank-queries", "3"])
    assert text.exit_code == 0, text.output
    methods = [line.split()[0] for line in text.stdout.splitlines() if line.split()[:1] in (["no-rerank"], ["rerank"])]
    assert methods == ["no-rerank", "rerank", "no-rerank", "rerank"]
    assert f"rerank: the first {depth} hits of each query re-ranked by {TINY}" in text.stdout
    assert "3 of 8 captions and 3 of 4 images (--rerank-queries)" in text.stdout


def test_cli_rerank_needs_a_store_and_a_loadable_model(tiny_store):
    pairs, store = tiny_store
    alone = runner.invoke(app, ["bench", "recall", "--pairs", str(pairs), "--model", TINY, "--rerank", "3"])
    assert alone.exit_code == 2 and "--rerank re-ranks a store's search: add --store" in alone.stderr
    offline = ["bench", "recall", "--pairs", str(pairs), "--store", str(store), "--rerank", "3", "--rerank-model",
               "nobody/no-such-blip"]
    failed = runner.invoke(app, offline)
    assert failed.exit_code == 2 and "nobody/no-such-blip" in failed.stderr
    assert "end-to-end" not in failed.stdout  # refused before anything was measured
    optional = runner.invoke(app, [*offline, "--rerank-optional", "--json"])
    assert optional.exit_code == 0, optional.output
    assert "not re-ranked" in optional.stderr
    assert {o["method"] for o in json.loads(optional.stdout)} == {"exact", "stored", "index", "end-to-end"}
