"""The image-text matching model that re-ranks hits: BLIP's ITM head, loaded from a saved folder exactly as
a downloaded checkpoint is, built in as test-tiny:random, and refused with one clear line otherwise."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import fails_fast
from mmsearch.errors import ModelLoadError


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 56, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def tiny():
    from mmsearch.encoders.matching import load_matcher

    return load_matcher("test-tiny:random")


@pytest.fixture(scope="module")
def saved_blip(tmp_path_factory):
    """A BLIP retrieval checkpoint made from a tiny random BlipConfig (the sizes of transformers' own BLIP
    tests) and a BERT tokenizer, written by save_pretrained: what a downloaded checkpoint's folder holds."""
    import torch
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    from mmsearch.encoders.matching import offline_tokenizer

    tokenizer = offline_tokenizer()
    config = BlipConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "encoder_hidden_size": 32,
                     "intermediate_size": 37, "projection_dim": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 512, "initializer_range": 0.2},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "projection_dim": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 30, "patch_size": 2, "initializer_range": 0.2},
        projection_dim=32, image_text_hidden_size=16, initializer_range=0.2)
    torch.manual_seed(3)
    model = BlipForImageTextRetrieval(config).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 30, "width": 30}),
                              tokenizer=tokenizer)
    folder = tmp_path_factory.mktemp("blip-itm")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor


def reference(model, processor, texts, pictures) -> np.ndarray:
    """transformers' own forward with the ITM head, as its documentation shows it."""
    import torch

    inputs = processor(images=pictures, text=texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs, use_itm_head=True).itm_score
    return torch.softmax(logits, dim=1)[:, 1].numpy()


def test_saved_checkpoint_loads_by_path_and_scores_as_transformers_does(saved_blip):
    from mmsearch.encoders.matching import load_matcher

    folder, model, processor = saved_blip
    matcher = load_matcher(str(folder))
    assert matcher.image_size == 30 and matcher.identity.spec == str(folder) and matcher.identity.semantic
    pictures = images(5)
    states = matcher.image_states(matcher.pixels(pictures))
    one_text = matcher.match(["a dog running on the beach"], states)
    assert one_text == pytest.approx(reference(model, processor, ["a dog running on the beach"] * 5, pictures), abs=1e-5)
    texts = ["a dog", "two red buses in the rain", "a bowl of soup", "snow", "a man on a horse"]
    one_image = matcher.match(texts, states[:1])
    assert one_image == pytest.approx(reference(model, processor, texts, pictures[:1] * 5), abs=1e-5)
    assert len(set(np.round(one_text, 5))) == 5 and ((one_text > 0) & (one_text < 1)).all()


def test_pairs_are_batched_without_changing_scores(saved_blip):
    from mmsearch.encoders.matching import load_matcher

    folder, _, _ = saved_blip
    whole, batched = load_matcher(str(folder), batch_size=64), load_matcher(str(folder), batch_size=2)
    pictures = images(7, seed=1)
    expected = whole.match(["a cat"], whole.image_states(whole.pixels(pictures)))
    assert batched.match(["a cat"], batched.image_states(batched.pixels(pictures))) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="cannot pair 2 texts with 7 images"):
        whole.match(["a", "b"], whole.image_states(whole.pixels(pictures)))


def test_builtin_tiny_model_is_seeded_and_offline(tiny):
    from mmsearch.encoders.matching import load_matcher

    again = load_matcher("test-tiny:random")
    pictures = images(3)
    first = tiny.match(["a harbour at night"], tiny.image_states(tiny.pixels(pictures)))
    assert again.match(["a harbour at night"], again.image_states(again.pixels(pictures))) == pytest.approx(first)
    assert not tiny.identity.semantic


def test_builtin_tiny_model_round_trips_through_save_pretrained(tiny, tmp_path):
    from mmsearch.encoders.matching import load_matcher

    tiny.save_pretrained(tmp_path / "saved")
    loaded = load_matcher(str(tmp_path / "saved"))
    pictures = images(4, seed=2)
    assert loaded.match(["lanterns"], loaded.image_states(loaded.pixels(pictures))) == \
        pytest.approx(tiny.match(["lanterns"], tiny.image_states(tiny.pixels(pictures))), abs=1e-6)


def test_offline_tokenizer_reads_common_words_whole(tiny):
    tokens = tiny.processor.tokenizer.tokenize("A dog running on the beach, 12!")
    assert tokens == ["a", "dog", "running", "on", "the", "beach", ",", "1", "##2", "!"]
    assert tiny.count_tokens("a dog") == 4  # [CLS] a dog [SEP]


def test_hub_model_offline_fails_fast_with_one_clear_line(connections, monkeypatch):
    from mmsearch.encoders.matching import load_matcher

    monkeypatch.delenv("HF_HUB_OFFLINE")  # the probe of the (closed) hub port is what is timed
    with pytest.raises(ModelLoadError) as caught:
        load_matcher("Salesforce/blip-itm-base-coco")
    message = str(caught.value)
    assert fails_fast(connections) and "\n" not in message
    assert "Salesforce/blip-itm-base-coco" in message and "rerank_model" in message and "rerank_optional" in message


@pytest.mark.parametrize("spec, reason", [
    ("clap-htsat:random", "random weights need a built-in architecture: test-tiny, blip-base"),
    ("not a model", "expected a hub repository (OWNER/NAME)"),
    ("./missing-folder", "no such directory"),
])
def test_bad_specs_are_refused(spec, reason):
    from mmsearch.encoders.matching import load_matcher

    with pytest.raises(ModelLoadError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        load_matcher(spec)


def test_folder_that_is_not_a_blip_model_is_refused(tmp_path):
    from mmsearch.encoders.matching import load_matcher

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="is not a saved BLIP image-text matching model"):
        load_matcher(str(tmp_path / "empty"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="a 'bert' model, not BLIP"):
        load_matcher(str(tmp_path / "bert"))
