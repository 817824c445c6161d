"""Text queries without torch: an index run exports the image model's text tower to ONNX inside the store,
and a text search then runs on onnxruntime + numpy + FAISS + SQLite alone, giving the torch path's hits.
A store whose export is missing, damaged or made for another model still answers, through torch, says so
once, and `mmsearch verify` reports it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CORPUS, TINY, break_sessions, damage_export, sentence, write_image, write_text

from mmsearch.config import Settings
from mmsearch.encoders.exported import CLIP_TEXT, EXPORTS, WARM_AFTER, ExportedTextEncoder, ExportRecord
from mmsearch.engine import Engine
from mmsearch.search.queries import Query
from mmsearch_cli.app import app

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "torchvision", "transformers", "torchaudio")


@pytest.fixture
def store(tmp_path, make_engine):
    media = tmp_path / "media"
    for i in range(6):
        write_image(media / f"photo{i}.png", seed=i)
        write_text(media / "notes" / f"note{i}.txt", sentence(40 + i, words=30))
    engine = make_engine(audio_model="none")
    report = engine.index([media])
    assert report.failed == () and report.notes == ()
    return engine.store.path


def paths_of(result) -> list[str]:
    return [hit.path for hit in result.hits]


def test_an_index_run_exports_the_text_tower_checked_against_the_model(store):
    record = ExportRecord.read(store / EXPORTS / CLIP_TEXT)
    assert record.fingerprint == "test-tiny:random:seed0" and record.context_length == 77
    assert record.min_cosine >= 0.9999 and record.checked > 3000  # every shipped sentence's tokens compared
    names = sorted(path.name for path in (store / EXPORTS / CLIP_TEXT).iterdir())
    assert names == sorted(["export.json", record.model, record.embedding, record.tokenizer])


class ShapeSpy:
    """Stands in for an export's session: runs the real one and keeps the shape of the ids it was given."""

    def __init__(self, session):
        self.session, self.shapes = session, []

    def run(self, outputs, feed):
        self.shapes.append(feed["ids"].shape)
        return self.session.run(outputs, feed)


def test_a_short_query_runs_a_short_sequence_and_an_older_full_context_export_still_answers(store, tiny_clip):
    folder = store / EXPORTS / CLIP_TEXT
    record = ExportRecord.read(folder)
    assert record.dynamic_length
    texts = ["a dog", "harbour lantern meadow at dusk"]
    short = ExportedTextEncoder(folder, record, tiny_clip.identity)
    short._session = ShapeSpy(short._session)
    full = ExportedTextEncoder(folder, ExportRecord(**{**record.__dict__, "dynamic_length": False}), tiny_clip.identity)
    full._session = ShapeSpy(full._session)  # an export made before sequences were cut: all 77 positions
    ours, theirs = short.encode_texts(texts).vectors, full.encode_texts(texts).vectors
    assert short._session.shapes == [(2, 7)] and full._session.shapes == [(2, 77)]  # start, 5 words, end
    assert np.min(np.sum(ours * theirs, axis=1)) >= 0.99999
    assert np.min(np.sum(ours * tiny_clip.encode_texts(texts).vectors, axis=1)) >= 0.9999


def test_a_process_that_keeps_asking_moves_to_a_prepacked_session_with_the_same_answers(store, tiny_clip):
    with Engine.open(Settings.resolve(store=store), clip=tiny_clip) as engine:
        first = [engine.search(f"harbour lantern {i}", k=4) for i in range(WARM_AFTER)]
        session = engine.towers.clip(Query(text="x"), [])._session
        assert session.warming is not None
        session.warming.join()
        assert session.prepacked
        again = [engine.search(f"harbour lantern {i}", k=4) for i in range(WARM_AFTER)]
    for before, after in zip(first, again):
        assert paths_of(after) == paths_of(before)
        assert [h.score for h in after.hits] == pytest.approx([h.score for h in before.hits], abs=1e-5)


def test_a_text_search_in_a_fresh_process_imports_no_torch(store, tiny_clip):
    code = (f"import sys, json, mmsearch\n"
            f"with mmsearch.open_store({str(store)!r}) as engine:\n"
            f"    result = engine.search('harbour lantern meadow', k=8)\n"
            f"print(json.dumps({{'paths': [h.path for h in result.hits], 'notes': list(result.notes),\n"
            f"                  'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    fast = json.loads(done.stdout)
    assert fast["heavy"] == [] and fast["notes"] == []
    with Engine.open(Settings.resolve(store=store, query_encoder="torch"), clip=tiny_clip) as engine:
        assert fast["paths"] == paths_of(engine.search("harbour lantern meadow", k=8))


def check_parity(store: Path, captions: list[str], clip) -> None:
    """The same top-10 (paths and order) from both query paths, and query vectors within cosine 0.9999."""
    with Engine.open(Settings.resolve(store=store, query_encoder="onnx")) as fast, \
            Engine.open(Settings.resolve(store=store, query_encoder="torch"), clip=clip) as slow:
        for caption in captions:
            assert paths_of(fast.search(caption, kind="image", k=10)) == paths_of(slow.search(caption, kind="image", k=10)), caption
        exported = ExportedTextEncoder.open(store, slow.store.model_identity("clip"))
        cosines = np.sum(exported.encode_texts(captions).vectors * clip.encode_texts(captions).vectors, axis=1)
        assert cosines.min() >= 0.9999


def coco_captions(count: int) -> tuple[list[Path], list[str]]:
    photos, captions = [], []
    for line in (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        fields = line.split("\t")
        if fields[0].startswith("coco-mini/") and fields[1] == "image":
            photos.append(CORPUS / fields[0])
            captions.append(fields[4].split(" || ")[0])
    return photos, captions[:count]


def test_both_query_paths_agree_on_generated_captions(store, tiny_clip):
    check_parity(store, [sentence(200 + i, words=4 + i % 20) for i in range(100)], tiny_clip)


@pytest.mark.corpus
@pytest.mark.parametrize("spec", [TINY, pytest.param("ViT-B-32:random", marks=pytest.mark.slow)])
def test_both_query_paths_agree_on_100_coco_captions(corpus, tmp_path, spec, tiny_clip):
    photos, captions = coco_captions(100)
    folder = tmp_path / "coco"
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    clip = tiny_clip if spec == TINY else None
    with Engine.open(Settings.resolve(store=tmp_path / "store", model=spec, audio_model="none"), create=True,
                     clip=clip) as engine:
        assert engine.index([folder]).notes == ()
        clip = engine.clip
    check_parity(tmp_path / "store", captions, clip)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "other model"])
def test_a_store_with_an_unusable_export_still_answers_through_torch_says_so_once_and_verify_reports_it(
        store, tiny_clip, damage):
    damage_export(store / EXPORTS / CLIP_TEXT, damage, "ViT-B-32:random")
    with Engine.open(Settings.resolve(store=store), clip=tiny_clip) as engine:
        first = engine.search("harbour lantern", k=3)
        second = engine.search("meadow copper", k=3)
        assert len(first.hits) == 3 and len(second.hits) == 3
        assert [n for n in first.notes if "torch model" in n] and not [n for n in second.notes if "torch" in n]
    with Engine.open(Settings.resolve(store=store, query_encoder="torch"), clip=tiny_clip) as engine:
        assert paths_of(engine.search("harbour lantern", k=3)) == paths_of(first)
    result = CliRunner().invoke(app, ["verify", "--store", str(store), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"]  # a warning: the store answers, only slower
    assert [f["code"] for f in report["findings"]] == ["export-unusable"]
    with Engine.open(Settings.resolve(store=store, model=TINY), clip=tiny_clip) as engine:
        assert engine.status().extra["query_encoder"].startswith("torch (the exported text tower")
        engine.index([store.parent / "media"])  # the next index run exports it again
        assert engine.status().extra["query_encoder"].startswith("onnx")


def test_an_export_that_fails_to_run_falls_back_to_torch_for_the_query_and_after(store, tiny_clip, monkeypatch):
    break_sessions(monkeypatch, ExportedTextEncoder)
    with Engine.open(Settings.resolve(store=store), clip=tiny_clip) as engine:
        first = engine.search("harbour lantern", k=3)
        assert [n for n in first.notes if "failed to run (RuntimeError: kernel exploded)" in n]
        assert not engine.search("meadow copper", k=3).notes
    with Engine.open(Settings.resolve(store=store, query_encoder="torch"), clip=tiny_clip) as engine:
        assert paths_of(engine.search("harbour lantern", k=3)) == paths_of(first)
