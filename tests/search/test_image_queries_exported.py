"""Image queries without torch: an index run exports the image model's image tower to ONNX inside the
store, and an `--image` search then runs on onnxruntime + Pillow + numpy + FAISS + SQLite alone, with the
torch path's hits. A damaged export falls back to torch, says so once, and `mmsearch verify` reports it.
Indexing itself runs the image tower as ``--precision`` says: torch, the export, or its int8 graph."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, break_sessions, sentence, write_image, write_text

from mmsearch.config import Settings
from mmsearch.encoders.image_exported import ExportedImageEncoder, ImageExportRecord, image_export_folder
from mmsearch.engine import Engine
from mmsearch.errors import UsageError
from mmsearch.search.fusion import embed_query
from mmsearch.search.queries import Query

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "torchvision", "transformers", "torchaudio")


@pytest.fixture
def media(tmp_path) -> Path:
    folder = tmp_path / "media"
    for i in range(8):
        write_image(folder / f"photo{i}.png", seed=i, size=(90 + 7 * i, 70 + 3 * i))
    write_image(folder / "grey.jpg", seed=99, size=(120, 64), mode="L")
    for i in range(3):
        write_text(folder / "notes" / f"note{i}.txt", sentence(10 + i, words=25))
    return folder


@pytest.fixture
def store(media, make_engine) -> Path:
    engine = make_engine(audio_model="none")
    report = engine.index([media])
    assert report.failed == () and report.notes == ()
    assert report.image_runtime == "fp32"  # the suite pins MMSEARCH_PRECISION=fp32
    return engine.store.path


def open_engine(store: Path, tiny_clip=None, **settings) -> Engine:
    return Engine.open(Settings.resolve(store=store, audio_model="none", **settings), clip=tiny_clip)


def test_an_index_run_exports_the_image_tower_and_status_says_so(store, tiny_clip):
    record = ImageExportRecord.read(image_export_folder(store))
    assert record.fingerprint == tiny_clip.identity.fingerprint and record.min_cosine >= 0.9999
    with open_engine(store) as engine:
        extra = engine.status().extra
    assert extra["image_query_encoder"].startswith("onnx (image tower exported")


def test_image_queries_through_the_export_match_the_torch_path(store, media, tiny_clip):
    with open_engine(store) as fast, open_engine(store, tiny_clip, query_encoder="torch") as slow:
        for name in ("photo0.png", "photo5.png", "grey.jpg"):
            query = Query(image=media / name, text="harbour lantern" if name == "photo5.png" else None)
            ours = fast.search(query, kind="all", k=10)
            theirs = slow.search(query, kind="all", k=10)
            assert [h.path for h in ours.hits] == [h.path for h in theirs.hits] and ours.notes == ()
            assert ours.hits[0].path == str(media / name) or query.text is not None  # an image finds itself first
            exported = embed_query(query, clip=fast.towers.clip(query, [])).by_space["clip"]
            reference = embed_query(query, clip=tiny_clip).by_space["clip"]
            assert float(np.sum(exported * reference)) >= 0.9999
        assert isinstance(fast.towers.clip(Query(image=media / "photo0.png"), []), ExportedImageEncoder)


def test_an_image_search_in_a_fresh_process_imports_no_torch(store, media):
    code = (f"import sys, json, mmsearch\n"
            f"with mmsearch.open_store({str(store)!r}) as engine:\n"
            f"    result = engine.search(image={str(media / 'photo3.png')!r}, kind='image', k=4)\n"
            f"print(json.dumps({{'paths': [h.path for h in result.hits], 'notes': list(result.notes),\n"
            f"                  'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    found = json.loads(done.stdout)
    assert found["heavy"] == [] and found["notes"] == [] and found["paths"][0] == str(media / "photo3.png")


def test_a_damaged_image_export_falls_back_to_torch_once_and_verify_reports_it(store, media, tiny_clip):
    folder = image_export_folder(store)
    (folder / ImageExportRecord.read(folder).model).write_bytes(b"\0" * 64)
    with open_engine(store, tiny_clip) as engine:
        first = engine.search(image=media / "photo1.png", kind="image", k=3)
        second = engine.search(image=media / "photo2.png", kind="image", k=3)
        assert first.hits[0].path == str(media / "photo1.png") and second.hits[0].path == str(media / "photo2.png")
        assert [n for n in first.notes if "image queries use the torch model" in n] and second.notes == ()
        assert engine.status().extra["image_query_encoder"].startswith("torch (the exported image tower has a damaged")
        from mmsearch.store.verify import verify_store

        findings = [f for f in verify_store(engine.store).findings if f.code == "export-unusable"]
        assert [f.message for f in findings if "clip-image" in f.message and "damaged" in f.message]
    with open_engine(store, query_encoder="onnx") as strict, pytest.raises(UsageError, match="onnx.*damaged"):
        strict.search(image=media / "photo1.png", kind="image", k=3)
    with open_engine(store, tiny_clip, model=TINY) as engine:
        assert engine.index([media]).notes == ()  # the next index run exports it again
        assert engine.status().extra["image_query_encoder"].startswith("onnx")
        assert engine.search(image=media / "photo1.png", kind="image", k=3).notes == ()


def test_an_image_export_that_fails_to_run_is_given_up_for_torch(store, media, tiny_clip, monkeypatch):
    break_sessions(monkeypatch, ExportedImageEncoder)
    with open_engine(store, tiny_clip) as engine:
        first = engine.search("harbour", image=media / "photo6.png", kind="all", k=4)
        [note] = [n for n in first.notes if "torch" in n]
        assert note.startswith("image queries use the torch model") and "kernel exploded" in note
        second = engine.search(image=media / "photo7.png", kind="image", k=2)
        assert second.notes == () and second.hits[0].path == str(media / "photo7.png")


@pytest.mark.parametrize("precision", ["int8", "onnx", "auto"])
def test_indexing_runs_the_image_tower_as_precision_says(media, make_engine, precision, tmp_path):
    from mmsearch.encoders.clip import load_clip

    encoder = load_clip(TINY, device="cpu", precision=precision)  # its own: the choice changes the encoder
    engine = Engine.open(Settings.resolve(store=tmp_path / f"store-{precision}", model=TINY, audio_model="none",
                                          precision=precision), create=True, clip=encoder)
    with engine:
        report = engine.index([media])
        said = {"int8": "int8 (onnxruntime, cosine to fp32 >= 0.99", "onnx": "onnx (onnxruntime, float32)",
                "auto": f"{encoder.image_runtime} (measured on this machine"}[precision]
        assert report.image_runtime.startswith(said) and report.failed == ()
        assert encoder.image_runtime == {"int8": "int8", "onnx": "onnx"}.get(precision, encoder.image_runtime)
        for name in ("photo4.png", "photo6.png"):
            assert engine.search(image=media / name, kind="image", k=2).hits[0].path == str(media / name)
