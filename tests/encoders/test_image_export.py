"""The image tower exported to ONNX, and ``--precision`` choosing how the image tower runs by measurement.

The export must give the torch model's pixels and vectors (image queries without torch), its int8 graph
must say how far it is from float32, and ``auto`` must time the candidates once per machine and model,
keep the fastest lossless one, and remember it.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from conftest import TINY

from mmsearch.config import Settings
from mmsearch.encoders import precision
from mmsearch.encoders.clip import load_clip
from mmsearch.encoders.exported import ExportUnusable
from mmsearch.encoders.image_export import add_int8, check_images, export_clip_image
from mmsearch.encoders.image_exported import (ExportedImageEncoder, ImageExportRecord, check_image_export,
                                              image_export_folder)
from mmsearch.encoders.precision import Measured, measure, prepare_image_runtime
from mmsearch.encoders.runtime import resolve_runtime
from mmsearch.errors import UsageError


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_clip):
    store = tmp_path_factory.mktemp("store")
    return store, export_clip_image(tiny_clip, store)


def photos():
    """PIL images of awkward shapes and modes: portrait, landscape, odd sizes, smaller than the model."""
    rng = np.random.default_rng(3)
    for width, height, mode in ((97, 61, "RGB"), (40, 130, "RGB"), (64, 64, "RGB"), (333, 212, "L"), (23, 31, "RGB")):
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        yield Image.fromarray(pixels).convert(mode).convert("RGB") if mode == "L" else Image.fromarray(pixels)


def test_the_export_makes_the_torch_models_pixels_and_vectors(exported, tiny_clip):
    store, record = exported
    assert record.fingerprint == tiny_clip.identity.fingerprint and record.min_cosine >= 0.9999
    encoder = ExportedImageEncoder.open(store, tiny_clip.identity)
    for image in photos():
        ours = encoder.preprocess(image)
        theirs = tiny_clip.preprocess(image).numpy()
        assert ours.dtype == np.uint8 and np.array_equal(ours, theirs), image.size
    batch = np.stack([encoder.preprocess(image) for image in photos()])
    import torch

    reference = tiny_clip.encode_images(torch.from_numpy(batch))
    assert np.min(np.sum(encoder.encode_images(batch) * reference, axis=1)) >= 0.9999


def test_an_int8_graph_is_made_on_request_with_its_distance_to_float32_recorded(tmp_path, tiny_clip):
    record = export_clip_image(tiny_clip, tmp_path)
    assert record.int8 == ""
    with pytest.raises(ExportUnusable, match="no int8 graph"):
        ExportedImageEncoder.open(tmp_path, tiny_clip.identity, "int8")
    made = add_int8(tiny_clip, tmp_path, record)
    assert ImageExportRecord.read(image_export_folder(tmp_path)) == made
    assert 0.99 <= made.int8_min_cosine < 1.0  # lossy, and says so
    encoder = ExportedImageEncoder.open(tmp_path, tiny_clip.identity, "int8")
    pixels = check_images(tiny_clip.image_size)
    fp32 = ExportedImageEncoder.open(tmp_path, tiny_clip.identity).encode_images(pixels)
    assert np.min(np.sum(encoder.encode_images(pixels) * fp32, axis=1)) >= 0.99
    names = sorted(path.name for path in image_export_folder(tmp_path).iterdir())
    assert names == sorted(["export.json", made.model, made.int8])


def test_a_damaged_or_foreign_export_is_refused_with_the_reason(tmp_path, tiny_clip):
    record = export_clip_image(tiny_clip, tmp_path)
    folder = image_export_folder(tmp_path)
    other = type(tiny_clip.identity)("ViT-B-32:random", "ViT-B-32:random:seed0", 512, False)
    with pytest.raises(ExportUnusable, match="was made for 'test-tiny:random'"):
        ExportedImageEncoder.open(tmp_path, other)
    graph = folder / record.model
    size = graph.stat().st_size
    graph.write_bytes(b"not a graph")  # truncated: seen without loading it
    with pytest.raises(ExportUnusable, match=f"has a damaged {record.model}"):
        check_image_export(tmp_path, tiny_clip.identity)
    graph.write_bytes(b"x" * size)  # the same size: seen when it is loaded
    with pytest.raises(ExportUnusable, match="cannot be loaded"):
        ExportedImageEncoder.open(tmp_path, tiny_clip.identity)
    (folder / "export.json").write_text("{", encoding="utf-8")
    with pytest.raises(ExportUnusable, match="unreadable export.json"):
        ExportedImageEncoder.open(tmp_path, tiny_clip.identity)


def test_a_record_from_a_later_mmsearch_is_read_for_the_fields_this_one_knows(tmp_path, tiny_clip):
    record = export_clip_image(tiny_clip, tmp_path)
    path = image_export_folder(tmp_path) / "export.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "added_later": {"x": 1}}), encoding="utf-8")
    assert check_image_export(tmp_path, tiny_clip.identity) == record
    path.write_text(json.dumps({"format": 1, "spec": record.spec}), encoding="utf-8")  # fields missing
    with pytest.raises(ExportUnusable, match="unreadable export.json"):
        check_image_export(tmp_path, tiny_clip.identity)


def _runner(seconds: float, vectors: np.ndarray):
    def run(pixels):
        time.sleep(seconds)
        return vectors
    return run


def test_auto_keeps_the_fastest_candidate_that_stays_within_the_lossless_cosine():
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(8, 16)).astype(np.float32)
    exact /= np.linalg.norm(exact, axis=1, keepdims=True)
    near = exact + 1e-4 * rng.normal(size=exact.shape).astype(np.float32)
    far = exact + 0.5 * rng.normal(size=exact.shape).astype(np.float32)
    near, far = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (near, far))
    pixels = np.zeros((8, 3, 4, 4), np.uint8)
    verdict = measure({"fp32": _runner(0.02, exact), "lossy": _runner(0.0, far), "onnx": _runner(0.005, near),
                       "crawl": _runner(0.5, exact)}, pixels, "machine")
    by_name = {m.name: m for m in verdict.measured}
    assert verdict.chosen == "onnx"  # the lossy one is faster still, but too far from fp32
    assert by_name["lossy"].cosine < precision.LOSSLESS_COSINE <= by_name["onnx"].cosine
    assert by_name["crawl"].images_per_s is None  # its first batch was far slower than the fastest: not timed
    assert "onnx" in verdict.describe() and "crawl too slow" in verdict.describe()


def test_auto_measures_once_per_machine_and_model_and_remembers(tmp_path, monkeypatch):
    encoder = load_clip(TINY, device="cpu", precision="auto")
    said = prepare_image_runtime(encoder, tmp_path, "auto", 8)
    cache = json.loads(precision.cache_path().read_text(encoding="utf-8"))
    assert len(cache) >= 1 and said.startswith(f"{encoder.image_runtime} (measured on this machine")
    assert {m.name for m in precision.cached_verdict(encoder.identity.fingerprint).measured} == {"fp32", "bf16", "onnx"}

    def no_timing(*args, **kwargs):
        raise AssertionError("measured again")
    monkeypatch.setattr(precision, "measure", no_timing)
    again = load_clip(TINY, device="cpu", precision="auto")
    assert prepare_image_runtime(again, tmp_path, "auto", 8) == said
    assert again.image_runtime == encoder.image_runtime
    monkeypatch.setattr(precision, "machine_key", lambda: "another machine")
    with pytest.raises(AssertionError, match="measured again"):
        prepare_image_runtime(load_clip(TINY, device="cpu", precision="auto"), tmp_path, "auto", 8)


def test_explicit_choices_run_as_asked(tmp_path):
    encoder = load_clip(TINY, device="cpu", precision="int8")
    assert encoder.runtime.precision == "fp32"  # the text tower and the torch fallback
    said = prepare_image_runtime(encoder, tmp_path, "int8", 8)
    assert encoder.image_runtime == "int8" and said.startswith("int8 (onnxruntime, cosine to fp32 >= 0.99")
    onnx = load_clip(TINY, device="cpu", precision="onnx")
    assert prepare_image_runtime(onnx, tmp_path, "onnx", 8) == "onnx (onnxruntime, float32)"
    assert onnx.image_runtime == "onnx"
    bf16 = load_clip(TINY, device="cpu", precision="bf16")
    assert prepare_image_runtime(bf16, tmp_path, "bf16", 8) == "bf16" and bf16.image_runtime == "bf16"
    with pytest.raises(UsageError, match="onnxruntime on the CPU: use it with"):
        resolve_runtime("cuda", "int8")
    assert Settings.resolve(store=tmp_path, precision="int8").precision == "int8"


def test_measured_records_are_read_back_as_written():
    verdict = precision.Verdict("onnx", (Measured("fp32", 10.0, 1.0), Measured("bf16", None, 0.99)), 16, "m", "2026-11-29")
    assert precision.Verdict.from_json(json.loads(json.dumps(precision.asdict(verdict)))) == verdict
