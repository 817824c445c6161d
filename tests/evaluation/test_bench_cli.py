"""``mmsearch bench``: recall with a stub encoder whose vectors give known answers (exact, stored,
index, end to end), failures left out with their captions, and CLI smoke tests with the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY, write_image

from mmsearch.encoders.base import ModelIdentity, TextEncoding
from mmsearch.evaluation.pairs import load_pairs
from mmsearch.evaluation.runner import run_recall
from mmsearch_cli.app import app

# Three images e0, e1, e2 (plus, in the store, a distractor D) and four captions. Caption vectors are
# chosen so every rank can be read off by hand (scores are plain dot products):
#   caption                 own   scores m0 / m1 / m2 (/ D)        text->image rank (exact) (end to end)
#   c0 (1, 0, 0)            m0    1   / 0   / 0   (/ .3)           1                         1
#   c1 (.2, 1, 0)           m0    .2  / 1   / 0   (/ 1.06)         2                         3 (D, m1 above)
#   c2 (1, .5, .9)          m1    1   / .5  / .9  (/ .89)          3                         4 (m0, m2, D)
#   c3 (0, 0, 1)            m2    0   / 0   / 1   (/ .1)           1                         1
# image->text (any caption of the image counts): m0's best caption c0 (1) ties c2 (1, other's): rank 1;
# m1's only caption c2 (.5) is beaten by c1 (1): rank 2; m2's c3 (1): rank 1.
MEDIA_VECTORS = {0: (1, 0, 0), 1: (0, 1, 0), 2: (0, 0, 1), 9: (0.3, 1, 0.1)}
CAPTIONS = {"c0 a red thing": (1, 0, 0), "c1 a red thing too": (0.2, 1, 0), "c2 a green thing": (1, 0.5, 0.9),
            "c3 a blue thing": (0, 0, 1), "c4 lost": (1, 1, 1), "c5 lost too": (1, 1, 1)}
OWNERS = [("m0.png", "c0 a red thing"), ("m0.png", "c1 a red thing too"), ("m1.png", "c2 a green thing"),
          ("broken.png", "c4 lost"), ("m2.png", "c3 a blue thing"), ("broken.png", "c5 lost too")]


class StubEncoder:
    """An ImageTextEncoder whose image vector is looked up by the image's colour, text vector by text."""

    image_size = 16
    context_length = 77
    identity = ModelIdentity("stub:fixed", "stub:fixed:1", 3, semantic=True)

    def preprocess(self, image):
        import torch

        return torch.tensor(image.getpixel((0, 0)), dtype=torch.float32)

    def encode_images(self, pixels) -> np.ndarray:
        return np.asarray([MEDIA_VECTORS[int(p[0]) // 10] for p in pixels.tolist()], dtype=np.float32)

    def encode_texts(self, texts) -> TextEncoding:
        return TextEncoding(np.asarray([CAPTIONS[t] for t in texts], dtype=np.float32), (False,) * len(texts))

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def solid(path: Path, number: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), (number * 10, 0, 0)).save(path)
    return path


@pytest.fixture
def designed(tmp_path):
    return make_designed(tmp_path)


def make_designed(tmp_path: Path) -> tuple[Path, Path]:
    """(folder of m0, m1, m2 and broken.png, the pairs file of OWNERS)."""
    folder = tmp_path / "labelled"
    for number in range(3):
        solid(folder / f"m{number}.png", number)
    (folder / "broken.png").write_bytes(b"this is not a png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"image": f"labelled/{m}", "caption": c}) + "\n" for m, c in OWNERS))
    return folder, pairs


def by_method(report):
    return {(row.method, row.result.direction): row for row in report.rows}


def test_exact_recall_matches_the_hand_computed_ranks(designed):
    _, pairs = designed
    report = run_recall(load_pairs(pairs), StubEncoder(), batch_size=2, workers=2)
    rows = by_method(report)
    assert set(rows) == {("exact", "text→image"), ("exact", "image→text")}
    t2i, i2t = rows["exact", "text→image"].result, rows["exact", "image→text"].result
    assert t2i.recall == {1: 50.0, 5: 100.0, 10: 100.0} and t2i.queries == 4  # ranks 1, 2, 3, 1
    assert (t2i.median_rank, t2i.mean_rank) == (1.5, 1.75)
    assert i2t.recall[1] == pytest.approx(200 / 3) and i2t.recall[5] == 100.0  # ranks 1, 2, 1
    assert (i2t.median_rank, i2t.mean_rank) == (1.0, pytest.approx(4 / 3))
    # the undecodable image is listed and left out with both its captions
    assert [Path(f.path).name for f in report.failed] == ["broken.png"]
    assert report.excluded_captions == 2 and report.media == 4 and report.captions == 6
    assert rows["exact", "text→image"].media == 3 and rows["exact", "text→image"].captions == 4
    assert report.semantic and not report.notes


def test_store_rows_show_index_and_end_to_end_with_a_distractor(designed, tmp_path):
    from mmsearch.config import Settings
    from mmsearch.engine import Engine

    folder, pairs = designed
    solid(folder / "distractor.png", 9)  # in the store, not in the pairs
    stub = StubEncoder()
    with Engine.open(Settings.resolve(store=tmp_path / "store", audio_model="none"), create=True, clip=stub) as engine:
        engine.index([folder])
        report = run_recall(load_pairs(pairs), stub, engine=engine, depth=10)
    rows = by_method(report)
    for method in ("exact", "stored", "index"):  # a flat index loses nothing; the distractor is skipped
        assert rows[method, "text→image"].result.recall == {1: 50.0, 5: 100.0, 10: 100.0}, method
    assert rows["index", "text→image"].result.rank_depth == 10
    end_to_end = rows["end-to-end", "text→image"].result  # ranks 1, 3, 4, 1: the distractor competes
    assert end_to_end.recall == {1: 50.0, 5: 100.0, 10: 100.0}
    assert end_to_end.mean_rank == pytest.approx(2.25) and end_to_end.median_rank == 2.0
    assert rows["stored", "image→text"].result.recall[1] == pytest.approx(200 / 3)
    assert ("index", "image→text") not in rows
    assert [Path(f.path).name for f in rows["index", "text→image"].excluded] == ["broken.png"]
    assert report.store == str(tmp_path / "store") and "flat" in report.index


def test_store_rows_leave_out_pair_media_the_store_lacks(designed, tmp_path):
    from mmsearch.config import Settings
    from mmsearch.engine import Engine

    folder, pairs = designed
    stub = StubEncoder()
    other = tmp_path / "other"
    solid(other / "m0.png", 0)
    solid(other / "m2.png", 2)
    with Engine.open(Settings.resolve(store=tmp_path / "store", audio_model="none"), create=True, clip=stub) as engine:
        engine.index([other])  # same pixels, other paths: matched by path, so none of the pair media
        with pytest.raises(Exception, match="none of the 3 pair media are indexed"):
            run_recall(load_pairs(pairs), stub, engine=engine)
        engine.index([folder / "m0.png", folder / "m1.png"])
        report = run_recall(load_pairs(pairs), stub, engine=engine)
    index_row = by_method(report)["index", "text→image"]
    assert (index_row.media, index_row.captions, index_row.excluded_captions) == (2, 3, 3)
    assert {Path(f.path).name: f.reason for f in index_row.excluded} == {
        "broken.png": "not a readable image (format not recognised)", "m2.png": "not in the store"}


# ------------------------------------------------------------------------------------------- CLI

runner = CliRunner()


@pytest.fixture
def tiny_pairs(tmp_path):
    return make_tiny_pairs(tmp_path)


def make_tiny_pairs(tmp_path: Path) -> Path:
    """Four noise images with two captions each."""
    for i in range(4):
        write_image(tmp_path / "img" / f"p{i}.png", seed=i)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"image": f"img/p{i}.png", "captions": [f"photo {i}", f"picture {i}"]}) + "\n"
                             for i in range(4)))
    return pairs


def test_cli_recall_json_has_one_object_per_direction(tiny_pairs):
    result = runner.invoke(app, ["bench", "recall", "--pairs", str(tiny_pairs), "--model", TINY, "--json"])
    assert result.exit_code == 0, result.output
    objects = json.loads(result.stdout)
    assert [(o["method"], o["direction"]) for o in objects] == [("exact", "text→image"), ("exact", "image→text")]
    for o in objects:
        assert {"recall_at_1", "recall_at_5", "recall_at_10", "median_rank", "mean_rank", "queries", "model",
                "excluded_media", "excluded_captions", "media", "captions", "semantic"} <= set(o)
        assert o["media"] == 4 and o["captions"] == 8 and o["semantic"] is False
        assert all(0 <= o[f"recall_at_{k}"] <= 100 for k in (1, 5, 10))
    assert [o["queries"] for o in objects] == [8, 4]
    assert objects[0]["recall_at_5"] == 100.0  # only 4 images: every caption's image is in the top 5
    assert "random weights" in result.stderr


def test_cli_recall_table_and_store_rows(tiny_pairs, tmp_path):
    store = tmp_path / "store"
    indexed = runner.invoke(app, ["index", str(tiny_pairs.parent / "img"), "--store", str(store), "--model", TINY,
                                  "--audio-model", "none"])
    assert indexed.exit_code == 0, indexed.output
    result = runner.invoke(app, ["bench", "recall", "--pairs", str(tiny_pairs), "--store", str(store)])
    assert result.exit_code == 0, result.output
    methods = [line.split()[0] for line in result.stdout.splitlines()
               if line.split() and line.split()[0] in ("exact", "stored", "index", "end-to-end")]
    assert methods == ["exact", "exact", "stored", "stored", "index", "end-to-end"]
    assert "R@1" in result.stdout and "median rank" in result.stdout
    mismatch = runner.invoke(app, ["bench", "recall", "--pairs", str(tiny_pairs), "--store", str(store),
                                   "--model", "ViT-B-32:random"])
    assert mismatch.exit_code == 2 and "was built with model" in mismatch.stderr


def test_cli_recall_lists_undecodable_media_on_stderr(tiny_pairs):
    (tiny_pairs.parent / "img" / "bad.jpg").write_bytes(b"\xff\xd8\xff not really")
    with tiny_pairs.open("a") as out:
        out.write(json.dumps({"image": "img/bad.jpg", "caption": "a broken photo"}) + "\n")
    result = runner.invoke(app, ["bench", "recall", "--pairs", str(tiny_pairs), "--model", TINY, "--json"])
    assert result.exit_code == 0, result.output
    assert "1 of 5 media could not be decoded" in result.stderr and "bad.jpg" in result.stderr
    first = json.loads(result.stdout)[0]
    assert first["media"] == 4 and first["excluded_captions"] == 1
    assert [Path(e["path"]).name for e in first["excluded_media"]] == ["bad.jpg"]


def test_cli_malformed_pairs_file_is_one_line_with_file_and_line(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"image": "a.png", "caption": "fine"}\n{"image": "b.png", "caption": \n')
    result = runner.invoke(app, ["bench", "recall", "--pairs", str(pairs), "--model", TINY])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"mmsearch: error: {pairs}:2: ")
    assert len(result.stderr.strip().splitlines()) == 1
    missing = runner.invoke(app, ["bench", "recall", "--pairs", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_cli_bench_index_reports_both_rates(tmp_path):
    for i in range(3):
        write_image(tmp_path / "photos" / f"p{i}.jpg", seed=i)
    result = runner.invoke(app, ["bench", "index", str(tmp_path / "photos"), "--model", TINY, "--batch-size", "2",
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["files"], report["images"], report["encoded_images"], report["failed"]) == (3, 3, 3, 0)
    assert report["images_per_second"] > 0 and report["encode_images_per_second"] > 0
    assert report["ratio"] == pytest.approx(report["images_per_second"] / report["encode_images_per_second"], rel=1e-2)
    text = runner.invoke(app, ["bench", "index", str(tmp_path / "photos"), "--model", TINY])
    assert text.exit_code == 0 and "model only" in text.stdout and "ratio" in text.stdout


def test_bench_ann_cli_on_synthetic_data():
    import typer

    from mmsearch_cli.bench_ann import ann

    app = typer.Typer()
    app.command("ann")(ann)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["ann", "--synthetic", "3000", "--dim", "16", "--queries", "50", "--types",
                                      "flat,ivf-flat", "--seconds", "0.05", "--no-blas-sweep", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "clustered" in report["data"]
    rows = {r["kind"]: r for r in report["results"]}
    assert rows["flat"]["recall_at_10"] == 1.0 and rows["ivf-flat"]["recall_at_10"] >= 0.9
    assert rows["ivf-flat"]["qps_batch1"] > 0 and rows["ivf-flat"]["index_bytes"] > 0
