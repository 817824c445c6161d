"""The GPU paths against the CPU ones: encoders under fp16 autocast, exact search through torch, and a
whole index + search run. Skipped where torch sees no CUDA GPU (CI has none; run them on a GPU machine)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, sentence, write_image

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def clip_pair():
    from mmsearch.encoders.clip import load_clip

    return load_clip(TINY, device="cpu", precision="fp32"), load_clip(TINY, device="cuda", precision="auto")


def test_clip_on_the_gpu_runs_fp16_and_matches_the_cpu(clip_pair, tmp_path):
    from mmsearch.decoding.images import load_image

    cpu, gpu = clip_pair
    assert gpu.runtime.device == "cuda" and gpu.runtime.precision == "fp16"
    assert gpu.identity == cpu.identity  # same weights: a store built on one is searched with the other
    paths = [write_image(tmp_path / f"{i}.jpg", seed=i, size=(160, 120)) for i in range(16)]
    images = [load_image(p, target_size=cpu.image_size) for p in paths]
    on_cpu = cpu.encode_images(torch.stack([cpu.preprocess(i) for i in images]))
    on_gpu = gpu.encode_images(torch.stack([gpu.preprocess(i) for i in images]))
    assert cosines(on_cpu, on_gpu).min() >= 0.999
    texts = [sentence(i) for i in range(16)]
    assert cosines(cpu.encode_texts(texts).vectors, gpu.encode_texts(texts).vectors).min() >= 0.999


def test_clap_on_the_gpu_matches_the_cpu():
    from mmsearch.encoders.clap import load_audio_encoder

    cpu, gpu = load_audio_encoder("test-tiny:random", device="cpu"), load_audio_encoder("test-tiny:random", device="cuda")
    rate = cpu.sample_rate
    t = np.arange(10 * rate) / rate
    windows = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (110, 440, 1760, 5000)]
    assert cosines(cpu.encode_audio(windows), gpu.encode_audio(windows)).min() >= 0.999
    texts = ["a dog barking", "rain on a tin roof", "a violin solo"]
    assert cosines(cpu.encode_texts(texts).vectors, gpu.encode_texts(texts).vectors).min() >= 0.999


@pytest.mark.parametrize("dtype, floor", [("float16", 0.99), ("float32", 0.999)])
def test_torch_flat_on_the_gpu_finds_the_exact_neighbours(dtype, floor):
    from mmsearch.bench.synthetic import ClusteredSphere
    from mmsearch.index.exact import exact_top_k, recall_at_k
    from mmsearch.index.factory import create_index

    space = ClusteredSphere(dim=64, clusters=64, seed=1)
    base, queries = space.rows(0, 50_000), space.queries(200)
    ids = np.arange(7, 7 + len(base), dtype=np.int64)
    index = create_index("torch-flat", 64, {"dtype": dtype})
    index.add(ids, base)
    assert index.on_gpu
    truth = exact_top_k(queries, base, ids, 10)
    assert recall_at_k(index.search(queries, 10).ids, truth.ids, 10) >= floor
    doomed = truth.ids[:, 0]
    index.remove(doomed)
    assert not np.isin(index.search(queries, 10).ids, doomed).any()


def test_index_and_search_on_the_gpu_give_the_cpu_answers(tmp_path, clip_pair):
    from mmsearch.config import Settings
    from mmsearch.engine import Engine
    from mmsearch.search.queries import Query

    root = tmp_path / "media"
    for i in range(24):
        write_image(root / f"photo{i}.jpg", seed=i, size=(200, 150))
    answers = {}
    for name, encoder in zip(("cpu", "cuda"), clip_pair):
        settings = Settings.resolve(store=tmp_path / name, model=TINY, device=name)
        with Engine.open(settings, create=True, clip=encoder) as engine:
            report = engine.index([root])
            assert report.added == 24 and not report.failed
            status = engine.status()
            answers[name] = [[hit.path for hit in engine.search(Query(image=root / f"photo{i}.jpg"), k=3).hits]
                             for i in range(0, 24, 4)]
    from mmsearch.index.gpu import faiss_gpu_count

    assert [a[0] for a in answers["cpu"]] == [a[0] for a in answers["cuda"]]
    # exact search on the GPU: FAISS's own where its build can use the GPU, else through torch
    assert status.index["image"].startswith("gpu-flat" if faiss_gpu_count() else "torch-flat"), status.index["image"]
