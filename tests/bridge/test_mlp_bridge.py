"""The non-linear bridge: an MLP learns a non-linear map the linear ones cannot, ``auto`` keeps it only
there, it saves and loads exactly, old (version-1) bridge files still load, and ``align --map`` works."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY

from mmsearch.bridge.alignment import default_sentences, describe_fit
from mmsearch.bridge.heldout import CandidateFit, MapFit, retrieval_score
from mmsearch.bridge.linear import MLP_MARGIN, LinearMap, MlpMap, SpaceMap, fit_space_map, keeps_mlp
from mmsearch.encoders.base import l2_normalise
from mmsearch.errors import UsageError

NON_LINEAR_GAIN = 0.3
"""The MLP must retrieve at least this much more (R@1, absolute) than the best linear map, held out and fresh."""


def two_spaces(n: int, *, non_linear: bool, seed: int, noise: float = 0.1, d_a: int = 24,
               d_b: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Two models' embeddings of the same n sentences: each sees a sentence's 6-d meaning with its own small
    noise (``noise`` times the meaning's); the source space embeds it linearly, the target space through a random 2-layer network (64 cosine
    units: random Fourier features) or, with ``non_linear=False``, a random linear map."""
    rng = np.random.default_rng(seed)
    meaning = rng.standard_normal((n, 6))
    embed = rng.standard_normal((6, d_a))
    source = l2_normalise((meaning + noise * rng.standard_normal((n, 6))) @ embed)
    seen = l2_normalise((meaning + noise * rng.standard_normal((n, 6))) @ embed)
    if non_linear:
        hidden = np.cos(2.0 * seen @ rng.standard_normal((d_a, 64)) + rng.uniform(0, 2 * np.pi, 64))
        target = hidden @ rng.standard_normal((64, d_b))
    else:
        target = seen @ rng.standard_normal((d_a, d_b))
    return source, l2_normalise(target)


def fit(source, target, map: str) -> SpaceMap:
    return fit_space_map(source, target, source_fingerprint="clap", target_fingerprint="clip", map=map)


def test_the_mlp_learns_a_non_linear_map_the_linear_maps_cannot_and_auto_keeps_it():
    source, target = two_spaces(1500, non_linear=True, seed=0)
    known, fresh = slice(0, 1000), slice(1000, None)
    chosen = fit(source[known], target[known], "auto")
    forward = chosen.forward.fit
    linear, mlp = forward.candidate("linear"), forward.candidate("mlp")
    assert forward.requested == "auto" and forward.method == "mlp" and isinstance(chosen.forward, MlpMap)
    assert mlp.heldout_r_at_1 >= linear.heldout_r_at_1 + NON_LINEAR_GAIN, (linear, mlp)
    assert mlp.epochs > 0 and mlp.gained > 10 * mlp.lost and keeps_mlp(linear, mlp)
    assert forward.heldout_r_at_1 == mlp.heldout_r_at_1 and forward.epochs == mlp.epochs
    # sentences neither map has seen: the kept (refitted) MLP still retrieves far better than linear alone
    only_linear = fit(source[known], target[known], "linear")
    mlp_fresh = retrieval_score(chosen.apply(source[fresh]), target[fresh])[0]
    linear_fresh = retrieval_score(only_linear.apply(source[fresh]), target[fresh])[0]
    assert mlp_fresh >= linear_fresh + NON_LINEAR_GAIN, (linear_fresh, mlp_fresh)
    assert only_linear.forward.fit.candidates == (linear,)  # the same linear candidate either way


def test_auto_keeps_the_linear_map_where_the_map_is_linear():
    """Noisy enough that R@1 has room (about 0.6): the MLP trains, and only learns the noise."""
    source, target = two_spaces(1000, non_linear=False, seed=2, noise=0.3)
    chosen = fit(source, target, "auto")
    for direction in (chosen.forward, chosen.reverse):
        linear, mlp = direction.fit.candidate("linear"), direction.fit.candidate("mlp")
        assert isinstance(direction, LinearMap) and direction.fit.method in ("ridge", "procrustes")
        assert direction.fit.requested == "auto" and mlp is not None and not keeps_mlp(linear, mlp)
        assert 0.4 <= linear.heldout_r_at_1 <= 0.8 and mlp.heldout_r_at_1 < linear.heldout_r_at_1 + MLP_MARGIN
    assert chosen.forward.fit.candidate("mlp").epochs > 0  # it did train: early stopping found "better" epochs
    # what auto kept is exactly the linear fit
    assert np.array_equal(chosen.forward.matrix, fit(source, target, "linear").forward.matrix)


def test_the_margin_needs_both_a_gain_and_more_than_chance():
    base = CandidateFit("linear", "ridge", 0.01, 0.50, 0.8)
    assert keeps_mlp(base, CandidateFit("mlp", "mlp", None, 0.56, 0.8, 5, gained=14, lost=2))
    assert not keeps_mlp(base, CandidateFit("mlp", "mlp", None, 0.505, 0.8, 5, gained=2, lost=1))  # below 0.01
    assert not keeps_mlp(base, CandidateFit("mlp", "mlp", None, 0.53, 0.8, 5, gained=40, lost=34))  # a coin toss


def test_mlp_fitting_is_deterministic():
    source, target = two_spaces(300, non_linear=True, seed=2)
    first, second = fit(source, target, "mlp"), fit(source, target, "mlp")
    assert first.forward.fit == second.forward.fit
    assert np.array_equal(first.forward.output_weight, second.forward.output_weight)
    assert np.array_equal(first.apply(source[:5]), second.apply(source[:5]))


def test_an_mlp_bridge_saves_and_loads_exactly(tmp_path):
    source, target = two_spaces(300, non_linear=True, seed=3)
    bridge = fit(source, target, "mlp")
    assert isinstance(bridge.forward, MlpMap) and isinstance(bridge.reverse, MlpMap)
    path = tmp_path / "bridge.npz"
    bridge.save(path)
    loaded = SpaceMap.load(path, source_fingerprint="clap", target_fingerprint="clip")
    assert isinstance(loaded.forward, MlpMap) and loaded.forward.fit == bridge.forward.fit
    assert loaded.reverse.fit == bridge.reverse.fit and loaded.forward.fit.requested == "mlp"
    queries = np.random.default_rng(4).standard_normal((7, 24))
    assert np.array_equal(loaded.apply(queries), bridge.apply(queries))
    assert np.array_equal(loaded.apply_reverse(target[:7]), bridge.apply_reverse(target[:7]))
    with np.load(path) as archive:
        assert json.loads(bytes(archive["meta"]).decode())["format_version"] == 2
    with pytest.raises(UsageError, match="24-d"):
        loaded.apply(target[:2])


def test_a_version_1_bridge_file_still_loads(tmp_path):
    """Written exactly as mmsearch wrote bridges before ``--map`` (format version 1, linear maps only)."""
    rng = np.random.default_rng(5)
    arrays, meta = {}, {"format_version": 1, "source_fingerprint": "clap-x", "target_fingerprint": "clip-y"}
    for name, (d_in, d_out) in (("forward", (16, 24)), ("reverse", (24, 16))):
        meta[f"{name}_fit"] = {"method": "ridge", "ridge_lambda": 0.01, "heldout_r_at_1": 0.75,
                               "heldout_mean_cosine": 0.6, "n_sentences": 100, "n_heldout": 20}
        arrays[f"{name}_matrix"] = rng.standard_normal((d_in, d_out)).astype(np.float32)
        arrays[f"{name}_source_mean"] = rng.standard_normal(d_in).astype(np.float32) * 0.1
        arrays[f"{name}_target_mean"] = rng.standard_normal(d_out).astype(np.float32) * 0.1
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8), **arrays}
    path = tmp_path / "bridge.npz"
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    loaded = SpaceMap.load(path, source_fingerprint="clap-x", target_fingerprint="clip-y")
    assert isinstance(loaded.forward, LinearMap) and isinstance(loaded.reverse, LinearMap)
    assert loaded.forward.fit == MapFit("ridge", 0.01, 0.75, 0.6, 100, 20)
    assert loaded.forward.fit.requested == "linear" and loaded.forward.fit.candidates == ()
    queries = rng.standard_normal((3, 16))
    expected = l2_normalise((l2_normalise(queries) - arrays["forward_source_mean"]) @ arrays["forward_matrix"]
                            + arrays["forward_target_mean"])
    assert np.allclose(loaded.apply(queries), expected, atol=1e-6)
    described = describe_fit(loaded.forward.fit)
    assert described["method"] == "ridge" and described["candidates"]["linear"]["heldout_r_at_1"] == 0.75


def test_an_unknown_map_is_a_usage_error_naming_the_option():
    source, target = two_spaces(100, non_linear=False, seed=6)
    with pytest.raises(UsageError, match="must be one of linear, mlp, auto") as caught:
        fit(source, target, "quadratic")
    assert caught.value.option == "map"


def test_cli_align_map_mlp_json_records_the_choice_in_the_store(tmp_path):
    from mmsearch_cli.app import app

    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(default_sentences()[:240]), encoding="utf-8")
    store = tmp_path / "store"
    runner = CliRunner()
    common = ["--store", str(store), "--model", TINY, "--audio-model", TINY, "--captions", str(captions)]
    result = runner.invoke(app, ["align", *common, "--map", "mlp", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {"audio_to_clip", "clip_to_audio"}
    for fit_ in summary.values():
        assert fit_["method"] == "mlp" and fit_["requested"] == "mlp" and fit_["sentences"] == 240
        assert set(fit_["candidates"]) == {"linear", "mlp"}
        assert fit_["candidates"]["linear"]["method"] in ("ridge", "procrustes")
        assert 0.0 <= fit_["candidates"]["mlp"]["heldout_r_at_1"] <= 1.0 and fit_["candidates"]["mlp"]["epochs"] >= 0
        assert fit_["heldout_r_at_1"] == fit_["candidates"]["mlp"]["heldout_r_at_1"]
    status = json.loads(runner.invoke(app, ["status", "--store", str(store), "--json"]).stdout)
    assert status["bridge"]["audio_to_clip"] == summary["audio_to_clip"]
    text = runner.invoke(app, ["align", *common, "--map", "linear"], catch_exceptions=False)
    assert text.exit_code == 0 and "audio_to_clip: " in text.stdout and "held-out R@1" in text.stdout
    bad = runner.invoke(app, ["align", *common, "--map", "quadratic"])
    assert bad.exit_code == 2 and "--map must be one of linear, mlp, auto, not 'quadratic'" in bad.stderr
    assert asdict(SpaceMap.load(store / "bridge.npz").forward.fit)["requested"] == "linear"
