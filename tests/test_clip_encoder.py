"""Model loading through the real open_clip path: random, local checkpoint, offline failures."""
from __future__ import annotations

import time

import numpy as np
import pytest

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
def test_load_failures_are_fast_and_clear(spec, message):
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=message):
        load_clip(spec)
    assert time.monotonic() - started < 10


def test_corrupt_checkpoint_is_a_model_load_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="bad.pt"):
        load_clip(f"test-tiny:{bad}")
