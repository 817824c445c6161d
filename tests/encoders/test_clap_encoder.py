"""The CLAP encoder, offline: built-in random models, save/load round trip, fast failures."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import fails_fast

from mmsearch.encoders.base import ModelIdentity, TextEncoding
from mmsearch.encoders.clap import TEXT_CONTEXT, ClapEncoder, load_audio_encoder, offline_tokenizer
from mmsearch.errors import ModelLoadError

RATE = 48_000


def tones(*freqs: float, seconds: float = 10.0) -> list[np.ndarray]:
    t = np.arange(round(seconds * RATE)) / RATE
    return [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in freqs]


@pytest.fixture(scope="module")
def tiny() -> ClapEncoder:
    return load_audio_encoder("test-tiny:random", device="cpu")


def test_tiny_random_loads_the_same_model_again_and_describes_itself(tiny):
    again = load_audio_encoder("test-tiny:random", device="cpu")
    assert again.identity == tiny.identity
    assert tiny.identity == ModelIdentity("test-tiny:random", "test-tiny:random:seed0", 32, semantic=False)
    assert tiny.sample_rate == 48_000 and tiny.window_seconds == 10.0


def test_audio_vectors_are_normalised_deterministic_and_self_nearest(tiny):
    windows = tones(110, 440, 1760, 5000) + [np.random.default_rng(0).standard_normal(10 * RATE).astype(np.float32) * 0.05]
    vectors = tiny.encode_audio(windows)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = tiny.encode_audio(windows[::-1])[::-1]  # other batch order, same vectors
    assert np.allclose(vectors, again, atol=1e-5)
    single = tiny.encode_audio(windows[2:3])
    similarity = single @ vectors.T
    assert int(np.argmax(similarity)) == 2
    assert similarity[0, 2] == pytest.approx(1.0, abs=1e-5)


def test_short_windows_are_accepted(tiny):
    (short,) = tones(440, seconds=0.05)
    vectors = tiny.encode_audio([short, short])
    assert vectors.shape == (2, 32) and np.allclose(vectors[0], vectors[1])
    assert tiny.encode_audio([]).shape == (0, 32)


def test_text_vectors_and_truncation_flags(tiny):
    long_text = "a dog barking in the rain " * 30
    encoding = tiny.encode_texts(["a dog barking", "heavy rain on a tin roof", long_text])
    assert isinstance(encoding, TextEncoding)
    assert encoding.vectors.shape == (3, 32)
    assert np.allclose(np.linalg.norm(encoding.vectors, axis=1), 1.0, atol=1e-5)
    assert encoding.truncated == (False, False, True)
    assert tiny.count_tokens(long_text) > TEXT_CONTEXT
    alone = tiny.encode_texts(["a dog barking"]).vectors  # padding in a batch does not change a vector
    assert np.allclose(alone[0], encoding.vectors[0], atol=1e-5)


def test_offline_tokenizer_is_clip_bpe_with_roberta_specials():
    tokenizer = offline_tokenizer()
    ids = tokenizer("A dog barking!")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 1 not in ids  # <s> ... </s>, pad id 1 never inside a text
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["a</w>", "dog</w>", "barking</w>", "!</w>"]
    assert tokenizer.pad_token_id == 1


def test_saved_directory_loads_like_a_real_checkpoint_with_identical_vectors(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "tiny")
    loaded = load_audio_encoder(f"test-tiny:{tmp_path / 'tiny'}", device="cpu")
    assert loaded.identity.spec == f"test-tiny:{(tmp_path / 'tiny').resolve()}"
    assert loaded.identity.fingerprint.startswith("test-tiny:sha256:")
    assert loaded.identity.dim == 32
    windows = tones(220, 3000)
    assert np.array_equal(loaded.encode_audio(windows), tiny.encode_audio(windows))
    texts = ["a cat purring", "a train passing at high speed"]
    assert np.array_equal(loaded.encode_texts(texts).vectors, tiny.encode_texts(texts).vectors)
    # the fingerprint follows the weights: the same directory loads to the same fingerprint
    assert load_audio_encoder(f"test-tiny:{tmp_path / 'tiny'}", device="cpu").identity == loaded.identity


def test_random_weights_are_the_same_in_another_process(tiny):
    script = (
        "import numpy as np\n"
        "from mmsearch.encoders.clap import load_audio_encoder\n"
        "e = load_audio_encoder('test-tiny:random', device='cpu')\n"
        "t = np.arange(480000) / 48000\n"
        "v = e.encode_audio([(0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)])\n"
        "print(' '.join(f'{x:.5f}' for x in v[0]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    other = np.array([float(x) for x in result.stdout.split()])
    assert np.allclose(other, tiny.encode_audio(tones(440))[0], atol=1e-4)


@pytest.mark.parametrize(
    "spec,reason",
    [
        ("nobody/no-such-clap-model:hub", "pass a local directory"),
        ("laion/clap-htsat-unfused:hub", "pass a local directory"),
        ("test-tiny:v9", "unknown weights"),
        ("resnet:random", "built-in architecture"),
        ("test-tiny:/no/such/dir/anywhere", "no such directory"),
        ("just-a-name", "ARCH:WEIGHTS"),
    ],
)
def test_unloadable_specs_fail_fast_with_model_load_error(spec, reason, monkeypatch, tmp_path, connections):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache, whatever this machine holds
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelLoadError) as caught:
        load_audio_encoder(spec, device="cpu")
    assert fails_fast(connections)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_directory_without_a_model_is_a_model_load_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError):
        load_audio_encoder(f"test-tiny:{tmp_path}", device="cpu")


def test_torchaudio_features_match_transformers_extractor():
    import numpy as np

    from mmsearch.encoders.clap_features import ClapMelFeatures

    extractor = load_audio_encoder("test-tiny:random").feature_extractor
    rng = np.random.default_rng(3)
    waves = [0.1 * rng.standard_normal(extractor.nb_max_samples).astype(np.float32),
             0.1 * rng.standard_normal(12_345).astype(np.float32)]  # short: repeat-padded
    for fused in (False, True):
        expected = extractor(waves, sampling_rate=extractor.sampling_rate,
                             truncation="fusion" if fused else "rand_trunc", return_tensors="np")["input_features"]
        ours = ClapMelFeatures(extractor, fused=fused)(waves).numpy()
        assert ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, atol=0.05)
