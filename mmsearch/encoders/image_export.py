"""Exporting the store's open_clip image tower to ONNX (see ``image_exported`` for what is written and why).

Done by the store's writer with the torch model loaded: at the start of an index run when the indexer
may use it, else at its end (for image queries). Each graph is checked before it is committed: its
vectors against the torch model's in float32 on ``CHECK_IMAGES`` fixed images, in a batch and one at a
time. The float32 graph must reach cosine ``MIN_COSINE``; the int8 graph (made only when asked for) must
reach ``INT8_MIN_COSINE`` and its figure is recorded and reported. A graph failing a check is not
written, and the torch model keeps the job.
"""
from __future__ import annotations

import json
import logging
import secrets
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .export import optimise_graph
from .exported import MIN_COSINE, ExportUnusable
from .image_exported import (IMAGE_FORMAT, ExportedImageEncoder, ImageExportRecord, check_image_export,
                             image_export_folder)

log = logging.getLogger(__name__)

INT8_MIN_COSINE = 0.99
"""The int8 graph is refused below this cosine to float32 torch (it is an explicit, lossy choice)."""
CHECK_IMAGES = 12


def check_images(size: int, count: int = CHECK_IMAGES) -> np.ndarray:
    """(count, 3, size, size) uint8 images, the same on every machine: smooth gradients, bars and discs
    under noise, a flat grey, a black and a white frame (a graph that mishandles a range shows there)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    images = []
    for i in range(count - 3):
        base = np.stack([np.sin(x * (i + 1) * 3 + c) * np.cos(y * (i + 2) * 2 - c) for c in range(3)])
        disc = ((x - rng.random()) ** 2 + (y - rng.random()) ** 2 < rng.uniform(0.02, 0.1)).astype(float)
        image = 127.5 + 100 * base + 60 * disc * rng.choice([-1, 1], size=(3, 1, 1)) + rng.normal(0, 12, (3, size, size))
        images.append(np.clip(image, 0, 255))
    images += [np.full((3, size, size), 128.0), np.zeros((3, size, size)), np.full((3, size, size), 255.0)]
    return np.stack(images).round().astype(np.uint8)


def exportable(encoder) -> str:
    """Why ``encoder``'s image tower cannot be exported ('' when it can)."""
    if getattr(encoder, "model", None) is None or not hasattr(encoder.model, "encode_image"):
        return f"{type(encoder).__name__} is not an open_clip model"
    if getattr(encoder, "_normalise", None) is None or getattr(encoder, "_short_side_resize", None) is None:
        return "its image preprocessing is not Resize + CenterCrop + Normalize"
    return ""


def _export_graph(encoder, path: Path) -> None:
    import copy

    import torch

    mean, std = (t.reshape(1, 3, 1, 1).float() for t in encoder._normalise)
    model = copy.deepcopy(encoder.model).to("cpu", torch.float32).eval()

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, pixels):  # what encode_images does to uint8 pixels: ToTensor + Normalize, the tower
            pixels = (pixels.float() / 255 - self.mean) / self.std
            return torch.nn.functional.normalize(self.model.encode_image(pixels), dim=-1)

    size = encoder.image_size
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX form
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about Python values: the checks below judge the graph
            torch.onnx.export(ImageTower().eval(), (torch.zeros((2, 3, size, size), dtype=torch.uint8),), str(path),
                              input_names=["pixels"], output_names=["vectors"],
                              dynamic_axes={"pixels": {0: "batch"}, "vectors": {0: "batch"}},
                              opset_version=18, dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def torch_vectors(encoder, pixels: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """The torch model's vectors for uint8 pixels in ``precision`` (fp32: no autocast, whatever precision
    the encoder runs in; bf16: bf16 autocast on the CPU)."""
    import contextlib

    import torch

    from .base import l2_normalise

    mean, std = encoder._normalise
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), cast:
        model = encoder.model
        device = next(model.parameters()).device
        batch = (torch.from_numpy(pixels).float().div(255) - mean) / std
        features = model.encode_image(batch.to(device))
    return l2_normalise(features.float().cpu().numpy())


def lowest_cosine(encoder: ExportedImageEncoder, reference: np.ndarray, pixels: np.ndarray) -> float:
    """The lowest cosine to ``reference`` of the export's vectors, in one batch and one image at a time."""
    batched = encoder.encode_images(pixels)
    single = np.vstack([encoder.encode_images(pixels[i:i + 1]) for i in range(0, len(pixels), 4)])
    return float(min(np.min(np.sum(batched * reference, axis=1)),
                     np.min(np.sum(single * reference[::4], axis=1))))


def export_clip_image(encoder, store_folder: Path) -> ImageExportRecord:
    """Export ``encoder``'s image tower in float32 into the store, check it and commit it; returns its
    record. ``ExportUnusable`` (nothing committed) when it cannot be exported or fails its check."""
    folder = image_export_folder(store_folder)
    why_not = exportable(encoder)
    if why_not:
        raise ExportUnusable(folder, why_not)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"model-{secrets.token_hex(4)}.onnx"
    raw = folder / f".{name}.raw"
    try:
        _export_graph(encoder, raw)
        with atomic_path(folder / name) as tmp:
            optimise_graph(raw, tmp)
    finally:
        raw.unlink(missing_ok=True)
    side, mode = encoder._short_side_resize
    identity = encoder.identity
    record = ImageExportRecord(IMAGE_FORMAT, identity.spec, identity.fingerprint, identity.dim, encoder.image_size,
                               side, mode, name, min_cosine=0.0)
    lowest = _checked(encoder, folder, record, "fp32", MIN_COSINE, "exported image vectors differ from the model's")
    record = _commit(folder, replace(record, min_cosine=round(lowest, 7)))
    log.info("exported the image tower of %s to %s (min cosine %.7f)", record.spec, folder, record.min_cosine)
    return record


def ensure_image_export(encoder, store_folder: Path) -> ImageExportRecord:
    """The store's image-tower export for ``encoder``'s model: the one there when usable, else a new one."""
    try:
        return check_image_export(store_folder, encoder.identity)
    except ExportUnusable:
        return export_clip_image(encoder, store_folder)


def add_int8(encoder, store_folder: Path, record: ImageExportRecord) -> ImageExportRecord:
    """Quantise the float32 graph's matrix multiplications to int8 (weights per channel, activations per
    batch: onnxruntime's dynamic quantisation), check its cosine to torch and commit it beside it."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = image_export_folder(store_folder)
    name = f"int8-{secrets.token_hex(4)}.onnx"
    raw = folder / f".{name}.raw"
    root = logging.getLogger()
    was_disabled, root.disabled = root.disabled, True  # it logs advice on pre-processing at the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # 7-bit weights (reduce_range): with 8 the int8 kernels of CPUs without VNNI saturate (ViT-B-32:
            # cosine 0.983 to float32, 0.9996 with 7). The float32 graph holds onnxruntime's fused operators,
            # whose outputs shape inference cannot type: they are float32.
            quantize_dynamic(str(folder / record.model), str(raw), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        with atomic_path(folder / name) as tmp:
            optimise_graph(raw, tmp)
    finally:
        root.disabled = was_disabled
        raw.unlink(missing_ok=True)
    made = replace(record, int8=name)
    lowest = _checked(encoder, folder, made, "int8", INT8_MIN_COSINE, "its int8 graph is too far from float32")
    made = _commit(folder, replace(made, int8_min_cosine=round(lowest, 5)))
    log.info("quantised the image tower of %s to int8 (min cosine to float32 %.5f)", made.spec, lowest)
    return made


def _checked(encoder, folder: Path, record: ImageExportRecord, variant: str, floor: float, failure: str) -> float:
    """The lowest cosine of ``variant``'s vectors to float32 torch's on the check images; below ``floor``
    its file is removed and ``ExportUnusable`` says ``failure``."""
    pixels = check_images(encoder.image_size)
    try:
        lowest = lowest_cosine(ExportedImageEncoder(folder, record, encoder.identity, variant),
                               torch_vectors(encoder, pixels), pixels)
        if lowest < floor:
            raise ExportUnusable(folder, f"{failure} (cosine {lowest:.6f} < {floor})")
    except ExportUnusable:
        (folder / record.file(variant)).unlink(missing_ok=True)
        raise
    return lowest


def _commit(folder: Path, record: ImageExportRecord) -> ImageExportRecord:
    """Write ``export.json`` (the commit point) with the graphs' sizes, then remove files no record names."""
    names = [name for name in (record.model, record.int8) if name]
    record = replace(record, sizes={name: (folder / name).stat().st_size for name in names})
    with atomic_path(folder / "export.json") as tmp:
        tmp.write_text(json.dumps(asdict(record), indent=1), encoding="utf-8")
    for path in folder.iterdir():
        if path.is_file() and path.name not in (record.model, record.int8, "export.json"):
            path.unlink(missing_ok=True)
    return record
