"""Image-text matching with cross-attention: BLIP's ITM head (transformers' ``BlipForImageTextRetrieval``),
which re-ranks a two-tower search's first hits (``search.rerank``).

A two-tower model (CLIP) embeds the query and each file alone; here the text's every layer attends to the
image's patches, and a head reads whether the two match. That costs a model run per (query, candidate)
pair, so it only re-scores the first few hits. The score is the ITM head's probability of "match": the
softmax of its two logits, class 1.

Specs (``--rerank-model``):

- ``OWNER/NAME`` (or ``OWNER/NAME:hub``): a BLIP retrieval checkpoint on the Hugging Face hub, default
  ``Salesforce/blip-itm-base-coco`` (ViT-B/16 at 384 px and BERT-base, fine-tuned on COCO); from the local
  cache, else downloaded once; offline and not cached, a ModelLoadError within seconds.
- a directory written by ``save_pretrained`` (the model and its ``BlipProcessor``), loaded with no network.
- ``test-tiny:random`` (tiny, seeded random weights: loads and scores in well under a second; the scores
  carry no meaning) and ``blip-base:random`` (the sizes of blip-itm-base-coco with random weights: the same
  compute, for latency benchmarks). They use ``offline_tokenizer()``, a WordPiece vocabulary of the whole
  words in CLIP's BPE (shipped inside open_clip) plus single characters, with BERT's special tokens.
"""
from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..config import DEFAULT_RERANK_MODEL
from ..errors import ModelLoadError
from .fetch import from_hub, one_line

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

BUILTIN_ARCHS = ("test-tiny", "blip-base")
RANDOM_SEED = 0
TEXT_TOKENS = 64
"""Texts are cut to 64 tokens ([CLS] and [SEP] included): a query or a 48-word passage fits whole."""
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LOCAL_HINT = ("pass a saved model's folder ({opt:rerank_model} /path/to/dir), or add {opt:rerank_optional} to answer "
               "without re-ranking")


@dataclass(frozen=True)
class MatcherIdentity:
    spec: str
    """As the user wrote it, normalised (a folder made absolute)."""
    semantic: bool
    """False for random weights: the scores are well-formed but carry no meaning."""


class ImageTextMatcher:
    """P(match) of image-text pairs. Images go through the vision tower once (``image_states``), then each
    text attends to a state; so one query image scores many passages, and one text many images, for one
    vision pass per image. Batches of ``batch_size`` pairs."""

    def __init__(self, model, processor, identity: MatcherIdentity, device: str, batch_size: int | None = None):
        import torch

        self._torch = torch
        self.model = model.to(device).eval()
        self.processor = processor
        self.identity = identity
        self.device = device
        self.batch_size = batch_size or (64 if device.startswith("cuda") else 8)
        self._autocast = device.startswith("cuda")
        size = processor.image_processor.size
        self.image_size = int(size["height"] if "height" in size else size["shortest_edge"])

    def pixels(self, images: Sequence["Image.Image"]) -> np.ndarray:
        """RGB images -> the vision tower's (n, 3, S, S) float32 input, by the checkpoint's own processor."""
        return np.asarray(self.processor.image_processor(images=list(images), return_tensors="np")["pixel_values"],
                          np.float32)

    def image_states(self, pixels: np.ndarray) -> "torch.Tensor":
        """The vision tower's last hidden states (n, patches + 1, width), on the model's device."""
        torch = self._torch
        states = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self._autocast):
            for start in range(0, len(pixels), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(pixels[start:start + self.batch_size])).to(self.device)
                states.append(self.model.vision_model(pixel_values=batch).last_hidden_state)
        return torch.cat(states) if states else torch.empty(0)

    def match(self, texts: Sequence[str], states: "torch.Tensor") -> np.ndarray:
        """P(match) of pair i: ``texts[i]`` with ``states[i]``; one text is paired with every state, and one
        state with every text."""
        torch = self._torch
        n = max(len(texts), len(states))
        if n == 0:
            return np.zeros(0, np.float32)
        if len(texts) not in (1, n) or len(states) not in (1, n):
            raise ValueError(f"cannot pair {len(texts)} texts with {len(states)} images")
        tokens = self.tokenise(texts)
        out = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self._autocast):
            for start in range(0, n, self.batch_size):
                end = min(n, start + self.batch_size)
                ids, mask = (t[start:end] if len(texts) > 1 else t.expand(end - start, -1) for t in tokens)
                image = states[start:end] if len(states) > 1 else states.expand(end - start, -1, -1)
                hidden = self.model.text_encoder(
                    input_ids=ids, attention_mask=mask, encoder_hidden_states=image,
                    encoder_attention_mask=torch.ones(image.shape[:-1], dtype=torch.long, device=image.device),
                ).last_hidden_state
                logits = self.model.itm_head(hidden[:, 0, :]).float()
                out.append(torch.softmax(logits, dim=1)[:, 1].cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def tokenise(self, texts: Sequence[str]) -> tuple["torch.Tensor", "torch.Tensor"]:
        batch = self.processor.tokenizer(list(texts), padding=True, truncation=True, max_length=TEXT_TOKENS,
                                         return_tensors="pt")
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    def count_tokens(self, text: str) -> int:
        """Tokens the model would see for ``text``, special tokens included, before the cap."""
        return len(self.processor.tokenizer(text, truncation=False, verbose=False)["input_ids"])

    def save_pretrained(self, directory: Path | str) -> None:
        """Write the model and its processor so ``directory`` loads them back as a ``--rerank-model``."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)


def load_matcher(spec: str | None = None, *, device: str = "auto", batch_size: int | None = None) -> ImageTextMatcher:
    """An ``ImageTextMatcher`` from a spec (see the module's docstring; None: the default); every failure is
    a ModelLoadError."""
    spec = (spec or DEFAULT_RERANK_MODEL).strip()
    device = _pick_device(device)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    arch, _, weights = spec.partition(":")
    if weights == "random":
        if arch not in BUILTIN_ARCHS:
            raise ModelLoadError(spec, f"random weights need a built-in architecture: {', '.join(BUILTIN_ARCHS)}")
        model, processor = _random_model(arch)
        identity = MatcherIdentity(spec, semantic=False)
    elif _is_folder(spec):
        folder = Path(spec).expanduser().resolve()
        if not folder.is_dir():
            raise ModelLoadError(spec, f"{folder}: no such directory")
        try:
            model, processor = _from_pretrained(str(folder), local_files_only=True)
        except ModelLoadError:
            raise
        except Exception as error:
            raise ModelLoadError(spec, f"{folder} is not a saved BLIP image-text matching model "
                                       f"({one_line(error)})") from None
        identity = MatcherIdentity(str(folder), semantic=True)
    else:
        repo = spec[:-len(":hub")] if spec.endswith(":hub") else spec
        if not _HUB_REPO.match(repo):
            raise ModelLoadError(spec, "expected a hub repository (OWNER/NAME), a saved model's folder, or "
                                       f"{BUILTIN_ARCHS[0]}:random")
        model, processor = from_hub(spec, repo, lambda local_only: _from_pretrained(repo, local_files_only=local_only),
                                    _LOCAL_HINT)
        identity = MatcherIdentity(repo, semantic=True)
    log.info("re-ranking model %s on %s", identity.spec, device)
    return ImageTextMatcher(model, processor, identity, device, batch_size)


def _is_folder(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or os.sep in spec and Path(spec).expanduser().is_dir()


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _from_pretrained(source: str, *, local_files_only: bool):
    from transformers import AutoConfig, BlipForImageTextRetrieval, BlipProcessor

    config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
    if getattr(config, "model_type", None) != "blip":
        raise ModelLoadError(source, f"a {getattr(config, 'model_type', 'unknown')!r} model, not BLIP: re-ranking "
                                     "needs a BLIP image-text matching checkpoint (BlipForImageTextRetrieval)")
    model = BlipForImageTextRetrieval.from_pretrained(source, local_files_only=local_files_only)
    processor = BlipProcessor.from_pretrained(source, local_files_only=local_files_only)
    return model, processor


def builtin_config(arch: str, vocab_size: int):
    """The BlipConfig and image size of a built-in architecture."""
    from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig

    if arch == "blip-base":  # the sizes of Salesforce/blip-itm-base-coco (ViT-B/16 at 384 px, BERT-base)
        return BlipConfig(text_config=BlipTextConfig(vocab_size=vocab_size).to_dict(),
                          vision_config=BlipVisionConfig().to_dict()), 384
    vision = BlipVisionConfig(hidden_size=32, intermediate_size=37, projection_dim=32, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8, initializer_range=0.2)
    text = BlipTextConfig(vocab_size=vocab_size, hidden_size=32, encoder_hidden_size=32, intermediate_size=37,
                          projection_dim=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=TEXT_TOKENS,
                          initializer_range=0.2)
    return BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32,
                      image_text_hidden_size=16, initializer_range=0.2), 32


def _random_model(arch: str):
    import torch
    from transformers import BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    tokenizer = offline_tokenizer()
    config, image_size = builtin_config(arch, len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = BlipForImageTextRetrieval(config)
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CLIP_MERGES = 49152 - 256 - 2  # as open_clip's SimpleTokenizer
_WORD = re.compile(r"^[a-z]+$")


def offline_tokenizer():
    """A BERT-style WordPiece tokenizer built with no download: BERT's special tokens, the printable ASCII
    characters (and their ``##`` continuations), and the whole lower-case words of CLIP's BPE vocabulary
    shipped inside open_clip. Deterministic; common words are one token each, as with BERT's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    found = importlib.util.find_spec("open_clip")
    if found is None or found.origin is None:
        raise ModelLoadError("offline tokenizer", "open_clip is not installed (its BPE vocabulary is needed)")
    with gzip.open(Path(found.origin).parent / "bpe_simple_vocab_16e6.txt.gz") as handle:
        merges = handle.read().decode("utf-8").split("\n")[1:_CLIP_MERGES + 1]
    words = sorted({w[:-4] for w in ("".join(m.split()) for m in merges) if w.endswith("</w>") and _WORD.match(w[:-4])})
    characters = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab_list = [*_SPECIALS, *characters, *(f"##{c}" for c in characters), *(w for w in words if len(w) > 1)]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                             cls_token="[CLS]", mask_token="[MASK]", model_max_length=512)
