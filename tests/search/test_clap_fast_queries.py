"""Text queries without torch on a store that holds audio: an index run also exports the audio model's (CLAP's)
text tower to ONNX, and a text search of every kind then runs on onnxruntime alone, giving the torch path's hits.
A store whose audio export is missing, damaged or made for another model still answers through torch, says
so once, and `mmsearch verify` reports it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import TINY, break_sessions, damage_export, sentence, write_image, write_text

from mmsearch.config import Settings
from mmsearch.encoders.clap_exported import CLAP_TEXT, ExportedClapTextEncoder
from mmsearch.encoders.exported import EXPORTS, ExportRecord, ExportUnusable
from mmsearch.engine import Engine
from mmsearch.errors import UsageError
from mmsearch.search.queries import Query
from mmsearch_cli.app import app

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "torchvision", "transformers", "torchaudio")
CAPTIONS = [sentence(300 + i, words=2 + i % 15) for i in range(12)] + ["a dog barks", "x" * 400]


def write_tone(path: Path, seconds: float, freq: float, seed: int, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), rate)


@pytest.fixture(scope="module")
def tiny_clap():
    from mmsearch.encoders.clap import load_audio_encoder

    return load_audio_encoder(TINY)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip, tiny_clap) -> Path:
    """A store with images, passages and sounds, indexed (and so exported) once for the module."""
    root = tmp_path_factory.mktemp("clap-fast")
    for i in range(4):
        write_image(root / "media" / f"photo{i}.png", seed=i)
        write_text(root / "media" / "notes" / f"note{i}.txt", sentence(40 + i, words=20))
        write_tone(root / "media" / "sounds" / f"tone{i}.wav", 1.0 + i, freq=220.0 * (i + 1), seed=i)
    with Engine.open(Settings.resolve(store=root / "store", model=TINY, audio_model=TINY), create=True,
                     clip=tiny_clip, clap=tiny_clap) as engine:
        report = engine.index([root / "media"])
        assert report.failed == () and report.notes == ()
    return root / "store"


@pytest.fixture
def store(built, tmp_path) -> Path:
    """A copy of the module's store, for a test to damage."""
    shutil.copytree(built, tmp_path / "store")
    return tmp_path / "store"


@pytest.fixture
def exported_calls(monkeypatch) -> list[int]:
    """How many texts each call of the exported audio text tower embedded."""
    calls: list[int] = []
    real = ExportedClapTextEncoder.encode_texts

    def encode_texts(self, texts):
        calls.append(len(texts))
        return real(self, texts)
    monkeypatch.setattr(ExportedClapTextEncoder, "encode_texts", encode_texts)
    return calls


def paths_of(result) -> list[str]:
    return [hit.path for hit in result.hits]


def torch_notes(result) -> list[str]:
    return [note for note in result.notes if "torch" in note]


def test_an_index_run_exports_the_audio_models_text_tower_checked_against_the_model(built, tiny_clip, tiny_clap):
    folder = built / EXPORTS / CLAP_TEXT
    record = ExportRecord.read(folder)
    assert record.tower == CLAP_TEXT and record.fingerprint == "test-tiny:random:seed0" and record.context_length == 77
    assert record.min_cosine >= 0.9999 and record.checked > 3000  # every shipped sentence's tokens compared
    assert sorted(p.name for p in folder.iterdir()) == sorted(["export.json", record.model, record.embedding,
                                                               record.tokenizer])
    with Engine.open(Settings.resolve(store=built), clip=tiny_clip, clap=tiny_clap) as engine:
        extra = engine.status().extra
    assert extra["query_encoder"].startswith("onnx") and extra["audio_query_encoder"].startswith("onnx")


def test_the_exported_tower_gives_the_models_tokens_and_vectors_at_any_batch_and_length(built, tiny_clap):
    exported = ExportedClapTextEncoder.open(built, tiny_clap.identity)
    texts = [*CAPTIONS, "", "<pad> and </s> written out", " ".join(["lantern"] * 120)]
    reference = tiny_clap.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="np")
    ids, mask, truncated = exported.tokens(texts)
    assert np.array_equal(ids, reference["input_ids"]) and np.array_equal(mask, reference["attention_mask"])
    for batch in [texts, *([text] for text in texts)]:
        ours, theirs = exported.encode_texts(batch), tiny_clap.encode_texts(batch)
        assert ours.truncated == theirs.truncated
        assert np.sum(ours.vectors * theirs.vectors, axis=1).min() >= 0.9999
    assert truncated[-1] and not truncated[0]


@pytest.mark.parametrize("kind", ["all", "audio"])
def test_both_query_paths_agree_on_text_queries(built, tiny_clip, tiny_clap, kind, exported_calls):
    with Engine.open(Settings.resolve(store=built, query_encoder="onnx")) as fast, \
            Engine.open(Settings.resolve(store=built, query_encoder="torch"), clip=tiny_clip, clap=tiny_clap) as slow:
        for caption in CAPTIONS:
            ours, theirs = fast.search(caption, kind=kind, k=10), slow.search(caption, kind=kind, k=10)
            assert paths_of(ours) == paths_of(theirs), caption
            assert [h.score for h in ours.hits] == pytest.approx([h.score for h in theirs.hits], abs=1e-4)
            assert ours.notes == theirs.notes
    assert exported_calls == [1] * len(CAPTIONS)  # the fast engine's queries only


def test_an_audio_file_query_still_uses_the_torch_model(built, tiny_clip, tiny_clap, exported_calls):
    sound = built.parent / "media" / "sounds" / "tone2.wav"
    with Engine.open(Settings.resolve(store=built), clip=tiny_clip, clap=tiny_clap) as engine:
        hits = engine.search(Query(audio=sound), kind="audio", k=2).hits
        assert hits[0].path == str(sound)
        mixed = engine.search(Query(text="a low hum", audio=sound), kind="audio", k=2)
        assert len(mixed.hits) == 2 and mixed.notes == ()
    assert exported_calls == []


def test_a_text_search_on_a_store_with_audio_in_a_fresh_process_imports_no_torch(built, tiny_clip, tiny_clap):
    code = (f"import sys, json, mmsearch\n"
            f"with mmsearch.open_store({str(built)!r}) as engine:\n"
            f"    found = {{kind: [h.path for h in engine.search('harbour lantern meadow', kind=kind, k=8).hits]\n"
            f"             for kind in ('all', 'audio')}}\n"
            f"    notes = list(engine.search('copper glacier').notes)\n"
            f"print(json.dumps({{'found': found, 'notes': notes,\n"
            f"                  'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    fast = json.loads(done.stdout)
    assert fast["heavy"] == [] and fast["notes"] == []
    with Engine.open(Settings.resolve(store=built, query_encoder="torch"), clip=tiny_clip, clap=tiny_clap) as engine:
        for kind in ("all", "audio"):
            assert fast["found"][kind] == paths_of(engine.search("harbour lantern meadow", kind=kind, k=8))
    assert any(path.endswith(".wav") for path in fast["found"]["all"])


@pytest.mark.parametrize("damage", ["missing", "corrupt", "other model"])
def test_a_store_with_an_unusable_audio_export_answers_through_torch_says_so_once_and_verify_reports_it(
        built, store, tiny_clip, tiny_clap, damage):
    damage_export(store / EXPORTS / CLAP_TEXT, damage, "clap-htsat:random")
    with Engine.open(Settings.resolve(store=store), clip=tiny_clip, clap=tiny_clap) as engine:
        first = engine.search("harbour lantern", k=6)
        second = engine.search("meadow copper", kind="audio", k=3)
        assert len(first.hits) == 6 and len(second.hits) == 3
        # one note, about the audio model (the image model's export still answers), and only once
        assert len(torch_notes(first)) == 1 and "torch audio model" in torch_notes(first)[0]
        assert torch_notes(second) == []
    with Engine.open(Settings.resolve(store=store, query_encoder="torch"), clip=tiny_clip, clap=tiny_clap) as engine:
        assert paths_of(engine.search("harbour lantern", k=6)) == paths_of(first)
    result = CliRunner().invoke(app, ["verify", "--store", str(store), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"]  # a warning: the store answers, only slower
    assert [(f["code"], f["modality"]) for f in report["findings"]] == [("export-unusable", "audio")]
    assert "clap-text" in report["findings"][0]["message"]
    with Engine.open(Settings.resolve(store=store), clip=tiny_clip, clap=tiny_clap) as engine:
        assert engine.status().extra["audio_query_encoder"].startswith("torch (the exported text tower")
        assert engine.index([built.parent / "media"]).notes == ()  # the next index run exports it again
        assert engine.status().extra["audio_query_encoder"].startswith("onnx")
        assert ExportedClapTextEncoder.open(store, tiny_clap.identity).encode_texts(["rain"]).vectors.shape == (1, 32)


def test_an_audio_export_that_fails_to_run_falls_back_to_torch_for_the_query_and_after(
        built, tiny_clip, tiny_clap, monkeypatch):
    break_sessions(monkeypatch, ExportedClapTextEncoder)
    with Engine.open(Settings.resolve(store=built), clip=tiny_clip, clap=tiny_clap) as engine:
        first = engine.search("harbour lantern", k=6)
        [note] = torch_notes(first)  # the image model's export still answers
        assert "torch audio model" in note and "failed to run (RuntimeError: kernel exploded)" in note
        assert not engine.search("meadow copper", k=3).notes
    with Engine.open(Settings.resolve(store=built, query_encoder="torch"), clip=tiny_clip, clap=tiny_clap) as engine:
        assert paths_of(engine.search("harbour lantern", k=6)) == paths_of(first)


def test_onnx_only_refuses_a_store_without_an_audio_export(store, tiny_clip, tiny_clap):
    shutil.rmtree(store / EXPORTS / CLAP_TEXT)
    with Engine.open(Settings.resolve(store=store, query_encoder="onnx"), clip=tiny_clip, clap=tiny_clap) as engine:
        with pytest.raises(UsageError, match="clap-text: was never made"):
            engine.search("harbour lantern", kind="audio", k=3)


@pytest.mark.slow
def test_the_full_size_random_clap_text_tower_exports_and_passes_its_checks(tmp_path):
    from mmsearch.bridge.alignment import default_sentences
    from mmsearch.encoders.clap import load_audio_encoder
    from mmsearch.encoders.clap_export import export_clap_text

    clap = load_audio_encoder("clap-htsat:random", device="cpu")
    record = export_clap_text(clap, tmp_path, default_sentences())
    assert record.min_cosine >= 0.9999 and record.dim == 512
    exported = ExportedClapTextEncoder.open(tmp_path, clap.identity)
    texts = ["a dog barks in the rain", "x" * 400]
    cosines = np.sum(exported.encode_texts(texts).vectors * clap.encode_texts(texts).vectors, axis=1)
    assert cosines.min() >= 0.9999


@pytest.mark.parametrize("fault", ["tokens", "vectors"])
def test_an_export_that_fails_its_checks_is_not_committed(tmp_path, tiny_clap, monkeypatch, fault):
    from mmsearch.bridge.alignment import default_sentences
    from mmsearch.encoders import clap_export

    if fault == "tokens":
        real = clap_export.build_tokenizer

        def cut_short(tokenizer):
            made = real(tokenizer)
            made.enable_truncation(70)
            return made
        monkeypatch.setattr(clap_export, "build_tokenizer", cut_short)
    else:
        monkeypatch.setattr(clap_export, "_torch_vectors", lambda encoder, texts: np.eye(len(texts), 32, 5, np.float32))
    with pytest.raises(ExportUnusable, match="tokenizer disagrees" if fault == "tokens" else "vectors differ"):
        clap_export.export_clap_text(tiny_clap, tmp_path, default_sentences()[:100])
    assert list((tmp_path / EXPORTS / CLAP_TEXT).iterdir()) == []
