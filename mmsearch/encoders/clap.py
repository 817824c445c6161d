"""Audio + text encoder around LAION's HTSAT CLAP (transformers' ClapModel).

Specs are ``ARCH:WEIGHTS``:

- ``laion/clap-htsat-unfused:hub``: a Hugging Face hub repository, from the local cache, else
  downloaded once. Offline and not cached, it fails in seconds with ModelLoadError.
- ``ARCH:/path/to/dir``: a directory written by ``save_pretrained`` (model, tokenizer and feature
  extractor), loaded with no network. ``ARCH`` is a label; the fingerprint hashes the weights.
- ``test-tiny:random`` / ``clap-htsat:random``: built-in configurations with seeded random weights
  (tests and throughput benchmarks; the vectors carry no meaning). ``clap-htsat`` has the sizes of
  laion/clap-htsat-unfused; ``test-tiny`` loads and encodes in well under a second.

Random models cannot download RoBERTa's tokenizer, so they use ``offline_tokenizer()``: the CLIP
byte-level BPE that ships inside the open_clip package (fixed vocabulary and merges, deterministic),
rebuilt as a ``tokenizers`` model with RoBERTa's special ids (``<s>``=0, ``<pad>``=1, ``</s>``=2) so
the RoBERTa text tower's position ids work. ``save_pretrained`` stores it beside the weights.
Texts are cut to 77 tokens, as LAION trained CLAP.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelLoadError, UsageError
from .base import ModelIdentity, TextEncoding, l2_normalise
from .clap_features import ClapMelFeatures
from .fetch import from_hub, one_line

log = logging.getLogger(__name__)

TEXT_CONTEXT = 77
RANDOM_SEED = 0
BUILTIN_ARCHS = ("test-tiny", "clap-htsat")
_LOCAL_DIR_HINT = "pass a local directory: {opt:audio_model} ARCH:/path/to/dir"


class ClapEncoder:
    """Audio windows and texts -> one shared space of L2-normalised float32 vectors."""

    def __init__(self, model, feature_extractor, tokenizer, identity: ModelIdentity, device: str):
        import torch

        self.model = model.to(device).eval()
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.window_seconds = float(feature_extractor.max_length_s)
        self._autocast = device.startswith("cuda")
        self._torch = torch
        fused = bool(getattr(model.config.audio_config, "enable_fusion", False))
        self._features = ClapMelFeatures(feature_extractor, fused=fused, device=device)

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    def encode_audio(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 windows at ``sample_rate`` -> (N, dim). Shorter windows are repeat-padded as by
        transformers' feature extractor; longer ones are cut to ``window_seconds`` (no random crop)."""
        if len(windows) == 0:
            return np.zeros((0, self.identity.dim), dtype=np.float32)
        limit = self.window_samples
        waves = [np.asarray(w, dtype=np.float32).reshape(-1)[:limit] for w in windows]
        if any(w.size == 0 for w in waves):
            raise UsageError("an audio window has no samples")
        features = self._features(waves)
        torch = self._torch
        is_longer = torch.zeros((len(waves), 1), dtype=torch.bool)  # no random fusion choice: deterministic
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self._autocast):
            output = self.model.get_audio_features(
                input_features=features,
                is_longer=is_longer.to(self.device),
            )
        return l2_normalise(output.pooler_output.float().cpu().numpy())

    def encode_texts(self, texts: Sequence[str]) -> TextEncoding:
        if len(texts) == 0:
            return TextEncoding(np.zeros((0, self.identity.dim), dtype=np.float32), ())
        texts = list(texts)
        truncated = tuple(self.count_tokens(text) > TEXT_CONTEXT for text in texts)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=TEXT_CONTEXT, return_tensors="pt")
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self._autocast):
            output = self.model.get_text_features(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
            )
        return TextEncoding(l2_normalise(output.pooler_output.float().cpu().numpy()), truncated)

    def count_tokens(self, text: str) -> int:
        """Tokens the model would see for ``text``, special tokens included, before the 77 cap."""
        return len(self.tokenizer(text, truncation=False, verbose=False)["input_ids"])

    def save_pretrained(self, directory: Path | str) -> None:
        """Write model, tokenizer and feature extractor so ``ARCH:directory`` loads them back."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.feature_extractor.save_pretrained(directory)


def load_audio_encoder(spec: str, *, device: str = "auto") -> ClapEncoder:
    """Build a ClapEncoder from ``ARCH:WEIGHTS``; every failure is a ModelLoadError."""
    arch, sep, weights = spec.strip().partition(":")
    if not sep or not arch or not weights:
        raise ModelLoadError(spec, "expected ARCH:WEIGHTS, e.g. laion/clap-htsat-unfused:hub or test-tiny:random")
    device = _pick_device(device)
    _quiet_transformers()
    if weights == "random":
        if arch not in BUILTIN_ARCHS:
            raise ModelLoadError(spec, f"random weights need a built-in architecture: {', '.join(BUILTIN_ARCHS)}")
        model, feature_extractor, tokenizer = _random_model(arch)
        identity_fingerprint, semantic = f"{arch}:random:seed{RANDOM_SEED}", False
    elif weights == "hub":
        if arch in BUILTIN_ARCHS or "/" not in arch:
            raise ModelLoadError(spec, f"'{arch}' is not a hub repository id (owner/name); {_LOCAL_DIR_HINT}")
        model, feature_extractor, tokenizer = _hub_model(spec, arch)
        identity_fingerprint, semantic = f"{arch}:hub", True
    elif os.sep in weights or weights.startswith((".", "~")) or Path(weights).expanduser().is_dir():
        directory = Path(weights).expanduser().resolve()
        if not directory.is_dir():
            raise ModelLoadError(spec, f"{directory}: no such directory")
        model, feature_extractor, tokenizer = _local_model(spec, directory)
        identity_fingerprint, semantic = f"{arch}:sha256:{_weights_digest(spec, directory)}", arch not in BUILTIN_ARCHS
        weights = str(directory)
    else:
        raise ModelLoadError(spec, f"unknown weights '{weights}': use hub, random or a local directory")
    identity = ModelIdentity(
        spec=f"{arch}:{weights}",
        fingerprint=identity_fingerprint,
        dim=int(model.config.projection_dim),
        semantic=semantic,
    )
    log.info("audio model %s on %s (dim %d)", identity.spec, device, identity.dim)
    return ClapEncoder(model, feature_extractor, tokenizer, identity, device)


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def builtin_config(arch: str):
    """ClapConfig + feature-extractor settings for a built-in architecture."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    if arch == "clap-htsat":  # the sizes of laion/clap-htsat-unfused (HTSAT-tiny + RoBERTa-base)
        return ClapConfig(text_config=ClapTextConfig(), audio_config=ClapAudioConfig(), projection_dim=512), 64
    if arch == "test-tiny":
        # HTSAT constraints: spec_size * (spec_size // num_mel_bins) >= 1001 mel frames (10 s at hop 480);
        # grid spec_size/patch_size = 32, then 16: both multiples of window_size; hidden_size equals
        # patch_embeds_hidden_size * 2**(len(depths) - 1); the last grid (16) divisible by freq_ratio (8).
        audio = ClapAudioConfig(
            num_mel_bins=16, spec_size=128, window_size=8, patch_size=4, patch_stride=(4, 4),
            patch_embeds_hidden_size=16, hidden_size=32, depths=(1, 1), num_attention_heads=(1, 2),
            num_hidden_layers=2, mlp_ratio=2.0,
        )
        text = ClapTextConfig(
            vocab_size=_offline_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=TEXT_CONTEXT + 3,
        )
        return ClapConfig(text_config=text, audio_config=audio, projection_dim=32), 16
    raise ModelLoadError(f"{arch}:random", f"unknown architecture; built-in ones are {', '.join(BUILTIN_ARCHS)}")


def _random_model(arch: str):
    import torch
    from transformers import ClapFeatureExtractor, ClapModel

    config, mel_bins = builtin_config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = ClapModel(config)
    feature_extractor = ClapFeatureExtractor(
        feature_size=mel_bins, sampling_rate=48_000, hop_length=480, max_length_s=10, fft_window_size=1024,
        frequency_min=50, frequency_max=14_000, truncation="rand_trunc", padding="repeatpad",
    )
    return model, feature_extractor, offline_tokenizer()


def _hub_model(spec: str, repo: str):
    """From the local cache first; the network only when the hub answers a quick probe."""
    return from_hub(spec, repo, lambda local_only: _from_pretrained(repo, local_files_only=local_only), _LOCAL_DIR_HINT)


def _local_model(spec: str, directory: Path):
    try:
        return _from_pretrained(str(directory), local_files_only=True)
    except Exception as error:
        raise ModelLoadError(spec, f"{directory} is not a saved CLAP model ({one_line(error)})") from None


def _from_pretrained(source: str, *, local_files_only: bool):
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    model = ClapModel.from_pretrained(source, local_files_only=local_files_only)
    feature_extractor = ClapFeatureExtractor.from_pretrained(source, local_files_only=local_files_only)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    return model, feature_extractor, tokenizer


def _weights_digest(spec: str, directory: Path) -> str:
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("pytorch_model*.bin"))
    if not files:
        raise ModelLoadError(spec, f"{directory} has no model weights (*.safetensors or pytorch_model*.bin)")
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# --- the offline tokenizer: CLIP's BPE (shipped in open_clip) with RoBERTa's special ids -------------

_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_CLIP_MERGES = 49152 - 256 - 2  # as open_clip's SimpleTokenizer


def _bytes_to_unicode() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def _offline_vocab_size() -> int:
    return len(_SPECIALS) + 2 * 256 + _CLIP_MERGES


def offline_tokenizer():
    """CLIP BPE from open_clip's bundled merges, as a PreTrainedTokenizerFast with RoBERTa special ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise ModelLoadError("offline tokenizer", "open_clip is not installed (its BPE vocabulary is needed)")
    with gzip.open(Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz") as handle:
        lines = handle.read().decode("utf-8").split("\n")[1 : _CLIP_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = [*_SPECIALS, *symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token="<unk>", fuse_unk=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=TEXT_CONTEXT,
    )
