"""Where and in what precision torch models run: a GPU with fp16 autocast when torch sees one, else the
CPU in float32. On a CPU ``--precision auto`` then times the image tower's candidates once per machine
and model (``encoders.precision``): CPU flags said bf16 where bf16 measured slower."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Runtime:
    device: str
    """'cpu' or 'cuda'."""
    precision: str
    """'fp32', 'bf16' or 'fp16' (the autocast dtype)."""

    def autocast(self):
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device, dtype=dtype)


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UsageError(f"{{opt:device}} must be auto, cpu or cuda, not {device!r}")
    if precision in ("onnx", "int8") and device == "cuda":
        raise UsageError(f"{{opt:precision}} {precision} runs the image tower with onnxruntime on the CPU: "
                         f"use it with {{opt:device}} cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("{opt:device} cuda: torch sees no CUDA GPU on this machine")
    if precision in ("auto", "onnx", "int8"):  # the last two: the text tower (and the image tower until chosen)
        precision = "fp16" if device == "cuda" else "fp32"
    return Runtime(device, precision)


def _device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def default_batch_size(device: str = "auto") -> int:
    """Inputs per model call when --batch-size is not given: 32 on a CPU; 256 on a GPU, where ViT-B-32
    ran 18,000 images/s at 256 and 12,700 at 128 on an H100 (benchmarks/RESULTS.md)."""
    return 256 if _device(device) == "cuda" else 32


def default_workers(device: str = "auto") -> int:
    """Decoding processes when --workers is not given. On a CPU up to 4, leaving the other cores to the
    model's own threads. With a GPU every core but two (the process feeding the GPU, and the rest of the
    machine): processes share no GIL, unlike the decoding threads of before, of which more than 8 only
    slowed each other down (benchmarks/RESULTS.md)."""
    cores = os.cpu_count() or 1
    if _device(device) == "cuda":
        return max(1, cores - 2)
    return max(1, min(4, cores))
