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

DEVICE_RESIZE_MAX_PIXELS = 4_000_000
"""With the model on a GPU, images up to this many pixels are resized there; larger ones are resized in
the decoding thread (JPEGs over it are decoded by Pillow in draft mode, at about the model's size)."""
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
        self._pixel_steps, self._normalise = _split_preprocess(preprocess)
        self._short_side_resize = _short_side_resize(self._pixel_steps, self.image_size)
        self._thread_state = threading.local()
        self._image_tower = None
        """An exported image tower (``image_exported.ExportedImageEncoder``) run instead of torch's, once
        ``--precision`` chose it (``encoders.precision.prepare_image_runtime``)."""
        self.runtime_choice: tuple[str, str] | None = None
        """(the --precision asked for, what it chose in words), once chosen."""
        self.device_preprocess = runtime.device == "cuda" and self._pixel_steps is not None \
            and os.environ.get("MMSEARCH_GPU_PREPROCESS", "1") != "0"
        """Query images resized and cropped on the GPU (MMSEARCH_GPU_PREPROCESS=0: Pillow and the CPU, as
        without a GPU); the indexer's decoding processes make their images' pixels on the CPU."""

    @property
    def pixel_recipe(self) -> tuple[int, str, int] | None:
        """(short side, resampling, crop size) when the model's preprocessing is Resize + CenterCrop + ToTensor
        + Normalize (open_clip's default): decoding processes then make its (3, S, S) uint8 input with Pillow,
        exactly as ``preprocess`` would, and the normalisation runs batched in ``encode_images``. None otherwise."""
        if self._pixel_steps is None or self._short_side_resize is None:
            return None
        return (*self._short_side_resize, self.image_size)

    def preprocess(self, image):
        """One image's model input from a PIL image or (C,H,W) uint8 pixels: what a query image goes through,
        and what the indexer's decoding processes reproduce with Pillow when ``pixel_recipe`` allows.

        When the model's preprocessing ends in ToTensor + Normalize (open_clip's always does) the input is
        8-bit (C,H,W) pixels at the model's size, and those two steps run batched on the model's device in
        ``encode_images``: a quarter of the bytes to stack and copy, no float work here. With the model on
        a GPU (``device_preprocess``) the resize and crop run there too, by the same transforms on tensors,
        and the input is already on the GPU; images over ``DEVICE_RESIZE_MAX_PIXELS`` are resized here."""
        import torch

        if self._pixel_steps is None:
            if torch.is_tensor(image):
                from PIL import Image

                image = Image.fromarray(image.permute(1, 2, 0).numpy())
            return self._preprocess(image)
        if not self.device_preprocess:
            return self._to_model_size(self._host_pixels(image))
        if self.runtime.device != "cuda":  # the same steps on another device (how the tests run them)
            return self._to_model_size(self._host_pixels(image, on_device=True))
        # Each decoding thread has a CUDA stream of its own: its copies and resizes run beside the model's
        # work instead of queueing behind it, and the result is complete when it is handed over. Its memory
        # goes back to this stream's pool only once the batch holding it is freed, which is after
        # encode_images has waited for the model (the .cpu() of its result), so it is never reused early.
        stream = getattr(self._thread_state, "stream", None)
        if stream is None:
            stream = self._thread_state.stream = torch.cuda.Stream(device=self.runtime.device)
        with torch.cuda.stream(stream):
            pixels = self._to_model_size(self._host_pixels(image, on_device=True))
        stream.synchronize()
        return pixels

    def _host_pixels(self, image, *, on_device: bool = False):
        """(C,H,W) uint8 pixels of a PIL image or a decoded tensor; on the model's device if ``on_device``.
        PIL images are resized here first unless they go to the device and are not over the size limit."""
        import torch

        if torch.is_tensor(image):
            return image.to(self.runtime.device, non_blocking=True) if on_device else image
        if not on_device or image.width * image.height > DEVICE_RESIZE_MAX_PIXELS:
            image = self._pixel_steps(image)
        pixels = torch.from_numpy(np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8))
        if on_device:  # (H,W,C) rows are copied as they are and turned around there
            pixels = pixels.to(self.runtime.device, non_blocking=True)
        return pixels.permute(2, 0, 1)

    def _to_model_size(self, pixels):
        if tuple(pixels.shape[1:]) == (self.image_size, self.image_size):
            return pixels
        if self._short_side_resize is None:
            return self._pixel_steps(pixels)
        return _resize_and_crop(pixels, *self._short_side_resize)

    def run_image_tower(self, *, exported=None, precision: str | None = None) -> None:
        """Run the image tower through ``exported`` (onnxruntime) or in torch at ``precision`` from now on."""
        self._image_tower = exported
        if precision is not None:
            self.runtime = Runtime(self.runtime.device, precision)

    @property
    def image_runtime(self) -> str:
        """What runs the image tower: 'onnx' or 'int8' (onnxruntime), else torch's precision."""
        return self._image_tower.variant.replace("fp32", "onnx") if self._image_tower else self.runtime.precision

    def encode_images(self, pixels) -> np.ndarray:
        import torch

        if self._image_tower is not None and pixels.dtype == torch.uint8:
            return self._image_tower.encode_images(pixels.cpu())
        with torch.inference_mode():
            pixels = pixels.to(self.runtime.device, non_blocking=True)
            if pixels.dtype == torch.uint8:  # what ToTensor + Normalize do, in the same order
                mean, std = self._normalise
                pixels = pixels.float().div_(255).sub_(mean.to(pixels.device)).div_(std.to(pixels.device))
            with self.runtime.autocast():
                features = self.model.encode_image(pixels)
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


def _split_preprocess(preprocess):
    """(the steps before ToTensor, (mean, std) as (C,1,1) tensors) when ``preprocess`` ends in
    ToTensor + Normalize (open_clip's always do), else (None, None)."""
    import torch
    from torchvision import transforms

    steps = list(getattr(preprocess, "transforms", ()))
    if len(steps) < 2 or type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor") \
            or not isinstance(steps[-1], transforms.Normalize):
        return None, None
    normalise = steps[-1]
    mean = torch.as_tensor(normalise.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(normalise.std, dtype=torch.float32).view(-1, 1, 1)
    return transforms.Compose(steps[:-2]), (mean, std)


def _short_side_resize(steps, image_size: int) -> tuple[int, str] | None:
    """(side, mode) when ``steps`` are Resize(short side -> side, antialiased) + CenterCrop(image_size)
    + an RGB conversion, as open_clip's default preprocessing is; None for any other pipeline."""
    from torchvision import transforms

    parts = list(getattr(steps, "transforms", ())) if steps is not None else []
    if len(parts) != 3 or not isinstance(parts[0], transforms.Resize) or not isinstance(parts[1], transforms.CenterCrop):
        return None
    resize, crop = parts[0], parts[1]
    size = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    mode = {transforms.InterpolationMode.BICUBIC: "bicubic",
            transforms.InterpolationMode.BILINEAR: "bilinear"}.get(resize.interpolation)
    if size is None or mode is None or resize.max_size is not None or resize.antialias is False \
            or tuple(crop.size) != (image_size, image_size):
        return None
    return int(size), mode


def _resize_and_crop(pixels, side: int, mode: str):
    """What torchvision's Resize(side) + CenterCrop do to (C,H,W) uint8 pixels, in a few tensor calls
    (its wrappers cost more Python per image than the GPU work): the short side to ``side``, the long
    side scaled as it scales them, antialiased, clamped and rounded back to uint8, then the centre."""
    import torch

    _, height, width = pixels.shape
    if height <= width:
        size = (side, int(side * width / height))
    else:
        size = (int(side * height / width), side)
    resized = torch.nn.functional.interpolate(pixels[None].float(), size=size, mode=mode, antialias=True,
                                              align_corners=False)[0]
    top, left = int(round((size[0] - side) / 2.0)), int(round((size[1] - side) / 2.0))
    return resized[:, top:top + side, left:left + side].clamp_(0, 255).round_().to(torch.uint8)


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
    hint = (f"download it on a machine with internet, or give a local checkpoint: {{opt:model}} "
            f"{spec.arch}:/path/to/open_clip_model.safetensors")
    path, cfg = open_clip_weights(open_clip, spec.arch, spec.weights, hint)
    preprocess = dict(image_mean=cfg.get("mean"), image_std=cfg.get("std"),
                      image_interpolation=cfg.get("interpolation"), image_resize_mode=cfg.get("resize_mode"),
                      force_quick_gelu=bool(cfg.get("quick_gelu", False)))
    return path, preprocess
