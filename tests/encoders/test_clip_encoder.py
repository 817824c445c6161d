"""Model loading through the real open_clip path: random, local checkpoint, offline failures."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import fails_fast

from mmsearch.encoders.clip import load_clip
from mmsearch.errors import ModelLoadError


def test_tiny_random_is_deterministic_and_normalised(tiny_clip):
    again = load_clip("test-tiny:random")
    a = tiny_clip.encode_texts(["a red bicycle"]).vectors
    b = again.encode_texts(["a red bicycle"]).vectors
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.linalg.norm(a[0]) == pytest.approx(1.0, abs=1e-5)
    assert tiny_clip.identity.semantic is False and tiny_clip.identity.dim == 64


def test_local_checkpoint_loads_through_the_same_path(tiny_clip, tmp_path):
    import torch

    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), checkpoint)
    loaded = load_clip(f"test-tiny:{checkpoint}")
    assert loaded.identity.semantic is True and "sha256" in loaded.identity.fingerprint
    np.testing.assert_allclose(loaded.encode_texts(["x y"]).vectors, tiny_clip.encode_texts(["x y"]).vectors, atol=1e-6)


@pytest.mark.parametrize("spec, message", [
    ("ViT-B-32:laion2b_s34b_b79k", "cannot be reached"),
    ("ViT-B-32:not-a-tag", "unknown weights tag"),
    ("ViT-B-32:/no/such/file.pt", "no such checkpoint file"),
    ("No-Such-Arch:random", "unknown open_clip architecture"),
    ("ViT-B-32", "no weights given"),
])
def test_load_failures_are_fast_and_clear(spec, message, connections):
    with pytest.raises(ModelLoadError, match=message):
        load_clip(spec)
    assert fails_fast(connections)


def test_corrupt_checkpoint_is_a_model_load_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="bad.pt"):
        load_clip(f"test-tiny:{bad}")


@pytest.fixture(scope="module")
def cpu_clip():
    """The tiny model on the CPU in float32 (``tiny_clip`` runs on a GPU where there is one)."""
    from mmsearch.encoders.clip import load_clip

    return load_clip("test-tiny:random", device="cpu", precision="fp32")


def test_images_reach_the_model_as_pixels_and_encode_exactly_as_the_float_preprocessing(cpu_clip):
    """Decoding threads hand over 8-bit pixels; ToTensor + Normalize then run batched on the model's
    device, with the same result as open_clip's own float preprocessing."""
    import torch
    from PIL import Image

    tiny_clip = cpu_clip
    rng = np.random.default_rng(5)
    images = [Image.fromarray(rng.integers(0, 256, (90 + 13 * i, 120, 3), dtype=np.uint8)) for i in range(4)]
    images.append(Image.fromarray(rng.integers(0, 256, (70, 70), dtype=np.uint8)).convert("L"))
    pixels = [tiny_clip.preprocess(image) for image in images]
    assert all(p.dtype == torch.uint8 and p.shape == (3, tiny_clip.image_size, tiny_clip.image_size) for p in pixels)
    reference = torch.stack([tiny_clip._preprocess(image) for image in images])
    assert reference.dtype == torch.float32
    np.testing.assert_allclose(tiny_clip.encode_images(torch.stack(pixels)), tiny_clip.encode_images(reference),
                               atol=1e-5)


def test_gpu_preprocessing_gives_the_vectors_of_the_cpu_preprocessing(cpu_clip, monkeypatch, tmp_path):
    """With the model on a GPU, JPEGs are decoded by libjpeg-turbo through torchvision and resized by the
    same transforms on tensors, on the GPU (here: on the CPU, the same code with another device); other
    images are resized there from Pillow's pixels, and huge ones in the decoding thread."""
    import torch
    from PIL import Image

    from mmsearch.ingest.pipelines import ImagePipeline

    rng = np.random.default_rng(8)
    paths = []
    for i, size in enumerate([(160, 120), (120, 200), (90, 90), (300, 200)]):
        image = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        paths.append(tmp_path / f"{i}.{'jpg' if i % 2 == 0 else 'png'}")
        image.save(paths[-1])
    tiny_clip = cpu_clip
    pipeline = ImagePipeline(tiny_clip)
    assert not tiny_clip.device_preprocess
    on_cpu = pipeline.encode([x for p in paths for _, x in pipeline.decode(p)])
    monkeypatch.setattr(tiny_clip, "device_preprocess", True)
    inputs = [x for p in paths for _, x in pipeline.decode(p)]
    assert all(x.dtype == torch.uint8 and x.shape == (3, tiny_clip.image_size, tiny_clip.image_size) for x in inputs)
    assert np.sum(pipeline.encode(inputs) * on_cpu, axis=1).min() >= 0.999
    huge = Image.new("RGB", (2500, 2000), (9, 99, 199))  # above DEVICE_RESIZE_MAX_PIXELS: resized in the thread
    assert tuple(tiny_clip.preprocess(huge).shape) == (3, tiny_clip.image_size, tiny_clip.image_size)


@pytest.mark.parametrize("height, width", [(375, 605), (640, 427), (224, 300), (500, 500), (231, 1000), (97, 61)])
def test_tensor_resize_and_crop_is_torchvisions(cpu_clip, height, width):
    """The few-call resize used on the GPU gives exactly the pixels of open_clip's Resize + CenterCrop."""
    import torch

    from mmsearch.encoders.clip import _resize_and_crop

    assert cpu_clip._short_side_resize == (cpu_clip.image_size, "bicubic")
    pixels = (torch.rand(3, height, width, generator=torch.Generator().manual_seed(height)) * 255).to(torch.uint8)
    assert torch.equal(_resize_and_crop(pixels, *cpu_clip._short_side_resize), cpu_clip._pixel_steps(pixels))
