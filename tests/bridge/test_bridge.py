"""The CLAP<->CLIP bridge: recovers known maps, picks the right method, saves atomically, refuses strangers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmsearch.bridge.alignment import default_sentences
from mmsearch.bridge.linear import BridgeFileError, BridgeMismatchError, SpaceMap, fit_space_map
from mmsearch.encoders.base import l2_normalise
from mmsearch.errors import UsageError


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return l2_normalise(rng.standard_normal((n, d)))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(l2_normalise(a) * l2_normalise(b), axis=1)))


def test_orthogonal_map_is_recovered_by_procrustes():
    rng = np.random.default_rng(1)
    n, d = 400, 64
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    source = unit(rng, n, d)
    target = l2_normalise(source @ rotation + 0.1 * rng.standard_normal((n, d)) / np.sqrt(d))
    space_map = fit_space_map(source, target, source_fingerprint="clap", target_fingerprint="clip")
    assert space_map.forward.fit.method == "procrustes" and space_map.reverse.fit.method == "procrustes"
    fresh = unit(rng, 300, d)
    forward_cosine = mean_cosine(space_map.apply(fresh), fresh @ rotation)
    reverse_cosine = mean_cosine(space_map.apply_reverse(fresh @ rotation), fresh)
    assert forward_cosine >= 0.99 and reverse_cosine >= 0.99, (forward_cosine, reverse_cosine)
    assert space_map.forward.fit.heldout_r_at_1 == 1.0
    assert space_map.forward.fit.n_sentences == n and space_map.forward.fit.n_heldout == 80


def test_general_linear_map_is_recovered_by_ridge():
    rng = np.random.default_rng(2)
    n, d_a, d_b = 1000, 48, 64
    mixing = rng.standard_normal((d_a, d_b)) * np.linspace(0.1, 3.0, d_b)  # far from orthogonal
    source = unit(rng, n, d_a)
    target = l2_normalise(source @ mixing + 0.02 * rng.standard_normal((n, d_b)))
    space_map = fit_space_map(source, target, source_fingerprint="clap", target_fingerprint="clip")
    fit = space_map.forward.fit
    assert fit.method == "ridge" and fit.ridge_lambda is not None
    fresh = unit(rng, 300, d_a)
    cosine = mean_cosine(space_map.apply(fresh), fresh @ mixing)
    assert cosine >= 0.99, cosine
    assert fit.heldout_r_at_1 >= 0.95
    assert space_map.apply(fresh).shape == (300, d_b)
    assert space_map.apply_reverse(fresh @ mixing).shape == (300, d_a)


def test_unrelated_spaces_score_near_chance():
    rng = np.random.default_rng(3)
    space_map = fit_space_map(unit(rng, 300, 32), unit(rng, 300, 32), source_fingerprint="a", target_fingerprint="b")
    assert space_map.forward.fit.heldout_r_at_1 < 0.2


def test_save_load_round_trip_and_fingerprint_check(tmp_path):
    rng = np.random.default_rng(4)
    source, target = unit(rng, 100, 16), unit(rng, 100, 24)
    space_map = fit_space_map(source, target, source_fingerprint="clap-x", target_fingerprint="clip-y")
    path = tmp_path / "sub" / "bridge.npz"
    space_map.save(path)
    space_map.save(path)  # overwriting is atomic too
    assert [p.name for p in path.parent.iterdir()] == ["bridge.npz"]  # no temp files left behind
    loaded = SpaceMap.load(path, source_fingerprint="clap-x", target_fingerprint="clip-y")
    assert loaded.forward.fit == space_map.forward.fit and loaded.reverse.fit == space_map.reverse.fit
    queries = unit(rng, 5, 16)
    assert np.allclose(loaded.apply(queries), space_map.apply(queries), atol=1e-6)
    with pytest.raises(BridgeMismatchError, match="refit"):
        SpaceMap.load(path, source_fingerprint="clap-x", target_fingerprint="another-clip")
    with pytest.raises(BridgeMismatchError):
        loaded.check("clip-y", "clap-x")
    inverted = loaded.inverted()
    inverted.check("clip-y", "clap-x")
    assert np.allclose(inverted.apply(unit(rng, 3, 24)).shape, (3, 16))


def test_damaged_or_missing_files_are_bridge_file_errors(tmp_path):
    with pytest.raises(BridgeFileError, match="no such file"):
        SpaceMap.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip archive")
    with pytest.raises(BridgeFileError, match="damaged"):
        SpaceMap.load(tmp_path / "bad.npz")


def test_bad_inputs_are_usage_errors():
    rng = np.random.default_rng(5)
    with pytest.raises(UsageError):
        fit_space_map(unit(rng, 50, 8), unit(rng, 40, 8), source_fingerprint="a", target_fingerprint="b")
    with pytest.raises(UsageError):
        fit_space_map(unit(rng, 5, 8), unit(rng, 5, 8), source_fingerprint="a", target_fingerprint="b")
    space_map = fit_space_map(unit(rng, 50, 8), unit(rng, 50, 6), source_fingerprint="a", target_fingerprint="b")
    with pytest.raises(UsageError):
        space_map.apply(unit(rng, 2, 6))


def test_shipped_sentences_are_many_distinct_single_lines():
    sentences = default_sentences()
    assert len(sentences) >= 3000
    assert len({s.lower() for s in sentences}) == len(sentences)
    assert all(2 <= len(s.split()) <= 25 and "\t" not in s for s in sentences)


def test_sentence_generator_reproduces_the_shipped_file():
    """tools/make_sentences.py (not installed with the package) still writes exactly the shipped file."""
    import importlib.util

    tool = Path(__file__).resolve().parents[2] / "tools" / "make_sentences.py"
    spec = importlib.util.spec_from_file_location("make_sentences", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate() == default_sentences()
