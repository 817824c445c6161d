"""open_clip image+text encoder, loaded from a hub tag, a local checkpoint, or seeded random weights."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelLoadError
from .base import ModelIdentity, TextEncoding, l2_normalise
from .fetch import open_clip_weights
from .runtime import Runtime, resolve_runtime
from .specs import RANDOM_SEED, ModelSpec, fingerprint, parse_spec

log = logging.getLogger(__name__)

BUILTIN_CONFIGS = Path(__file__).parent / "configs"
"""Architectures shipped with mmsearch (``test-tiny``), registered with open_clip when first asked for."""


def _open_clip():
    # Fail fast when offline: huggingface_hub otherwise waits 10 s per metadata request.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "15")
    import open_clip

    return open_clip


_register_lock = threading.Lock()


def _ensure_arch_known(open_clip, arch: str) -> None:
    if arch in open_clip.list_models() or arch.startswith(("hf-hub:", "local-dir:")):
        return
    if (BUILTIN_CONFIGS / f"{arch}.json").is_file():
        with _register_lock:
            open_clip.add_model_config(BUILTIN_CONFIGS)
        return
    raise ModelLoadError(arch, "unknown open_clip architecture (see `python -c \"import open_clip; print(open_clip.list_models())\"`)")


class ClipEncoder:
    """An open_clip model; implements ``ImageTextEncoder``."""

    def __init__(self, model, preprocess, tokenizer, identity: ModelIdentity, runtime: Runtime):
        self.model = model
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self.identity = identity
        self.runtime = runtime
        self.context_length = int(getattr(tokenizer, "context_length", 77))
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    def preprocess(self, image):
        return self._preprocess(image)

    def encode_images(self, pixels) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.runtime.autocast():
            features = self.model.encode_image(pixels.to(self.runtime.device, non_blocking=True))
        return l2_normalise(features.float().cpu().numpy())

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text)) + 2 if hasattr(self._tokenizer, "encode") else 0

    def encode_texts(self, texts: Sequence[str]) -> TextEncoding:
        import torch

        texts = list(texts)
        truncated = tuple(self.count_tokens(text) > self.context_length for text in texts)
        tokens = self._tokenizer(texts)
        with torch.inference_mode(), self.runtime.autocast():
            features = self.model.encode_text(tokens.to(self.runtime.device))
        return TextEncoding(l2_normalise(features.float().cpu().numpy()), truncated)


def load_clip(spec_text: str, *, device: str = "auto", precision: str = "auto") -> ClipEncoder:
    """Build the model for ``ARCH:WEIGHTS``; every failure becomes a one-line ``ModelLoadError``."""
    spec = parse_spec(spec_text, default_weights="random" if spec_text.startswith("test-tiny") else None)
    runtime = resolve_runtime(device, precision)
    open_clip = _open_clip()
    import torch

    _ensure_arch_known(open_clip, spec.arch)
    pretrained, preprocess_cfg = _pretrained_argument(open_clip, spec)
    try:
        with torch.random.fork_rng(devices=[]), _quiet_root_logger():
            torch.manual_seed(RANDOM_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch, pretrained=pretrained, device=runtime.device,
                load_weights=pretrained is not None, **preprocess_cfg)
    except Exception as exc:  # open_clip raises RuntimeError for format and key errors alike
        raise ModelLoadError(str(spec), f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
    model.eval()
    tokenizer = open_clip.get_tokenizer(spec.arch)
    dim = int(model.text_projection.shape[1] if getattr(model, "text_projection", None) is not None
              else model.visual.output_dim)
    identity = ModelIdentity(str(spec), fingerprint(spec), dim, semantic=not spec.is_random)
    log.info("loaded %s (%d-d) on %s, %s", spec, dim, runtime.device, runtime.precision)
    return ClipEncoder(model, preprocess, tokenizer, identity, runtime)


@contextlib.contextmanager
def _quiet_root_logger():
    """open_clip logs routine notes (e.g. 'initialized randomly') as root-logger warnings."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _pretrained_argument(open_clip, spec: ModelSpec) -> tuple[str | None, dict]:
    """What to pass open_clip as ``pretrained`` (None: random init) and the tag's preprocessing."""
    if spec.is_random:
        return None, {}
    local = spec.local_path
    if local is not None:
        return str(local), {}
    tags = open_clip.list_pretrained_tags_by_model(spec.arch)
    if spec.weights not in tags:
        known = ", ".join(tags) if tags else "none: give a local checkpoint file or 'random'"
        looks_like_path = os.sep in spec.weights or spec.weights.endswith((".pt", ".pth", ".bin", ".safetensors"))
        what = "no such checkpoint file" if looks_like_path else f"unknown weights tag (known tags: {known})"
        raise ModelLoadError(str(spec), what)
    hint = f"download it on a machine with internet, or give a local checkpoint: --model {spec.arch}:/path/to/open_clip_model.safetensors"
    path, cfg = open_clip_weights(open_clip, spec.arch, spec.weights, hint)
    preprocess = dict(image_mean=cfg.get("mean"), image_std=cfg.get("std"),
                      image_interpolation=cfg.get("interpolation"), image_resize_mode=cfg.get("resize_mode"),
                      force_quick_gelu=bool(cfg.get("quick_gelu", False)))
    return path, preprocess
