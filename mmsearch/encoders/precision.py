"""How the image tower runs on a CPU, chosen by measurement rather than by CPU flags.

``--precision auto`` on a CPU times the candidates on a batch of fixed images (the indexing batch, at most
``MEASURE_BATCH``) through the real model: torch in float32 (the reference), torch with bf16 autocast, and
the store's ONNX export of the image tower in float32 (onnxruntime). It keeps the fastest whose vectors
stay within ``LOSSLESS_COSINE`` of float32 torch (float32 torch unless beaten by more than ``MARGIN``), and
caches the verdict per machine and model (``cache_path()``), so the timing runs once (about half a minute
for ViT-B-32 on two cores). A candidate whose first batch takes over ``TOO_SLOW`` times the fastest
lossless first batch is not timed further (bf16 emulated on a CPU without native bf16 arithmetic).

Explicit choices skip the measurement: ``fp32`` and ``bf16`` (torch), ``onnx`` (the float32 export) and
``int8`` (the export with its matrix multiplications quantised: faster, lossy, its cosine to float32
recorded). On a GPU ``auto`` stays fp16 autocast.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_path
from ..errors import UsageError

log = logging.getLogger(__name__)

LOSSLESS_COSINE = 0.999
MEASURE_BATCH = 32
"""At most this many images per timed call (the indexing batch when smaller): which runtime wins depends
on the batch (ViT-B-32 on 2 AVX2 cores: onnxruntime ahead at 16, torch ahead at 32)."""
TIMED_CALLS = 3
TOO_SLOW = 3.0
MARGIN = 1.03
"""Another candidate replaces float32 torch only when it is faster by more than this factor: closer
figures are within the noise of a few timed calls."""
CPU_CANDIDATES = ("fp32", "bf16", "onnx")


@dataclass(frozen=True)
class Measured:
    name: str
    images_per_s: float | None
    """None: its first batch was over ``TOO_SLOW`` times the fastest, so it was not timed further."""
    cosine: float
    """Lowest cosine of its vectors to float32 torch's on the measured images."""


@dataclass(frozen=True)
class Verdict:
    chosen: str
    measured: tuple[Measured, ...]
    batch: int
    machine: str
    when: str

    def describe(self) -> str:
        parts = ", ".join(f"{m.name} {m.images_per_s:.1f}" if m.images_per_s else f"{m.name} too slow"
                          for m in sorted(self.measured, key=lambda m: -(m.images_per_s or 0)))
        return (f"{self.chosen} (measured on this machine {self.when}: {parts} images/s at batch {self.batch}; "
                f"kept the fastest within cosine {LOSSLESS_COSINE} of fp32)")

    @classmethod
    def from_json(cls, data: dict) -> "Verdict":
        return cls(**{**data, "measured": tuple(Measured(**m) for m in data["measured"])})


def machine_key() -> str:
    """What the timings depend on: the CPU (model, vector extensions, cores) and the libraries' versions."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    extensions = sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))
    versions = []
    for name in ("torch", "onnxruntime"):  # from the installed metadata: ``status`` must not import torch
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    return f"{model} | {' '.join(extensions)} | {os.cpu_count()} cores | {', '.join(versions)}"


def cache_path() -> Path:
    """``$MMSEARCH_CACHE_DIR/precision.json``, else under ``$XDG_CACHE_HOME`` (``~/.cache``)/mmsearch."""
    base = os.environ.get("MMSEARCH_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmsearch"
    return Path(base) / "precision.json"


def _key(fingerprint: str, machine: str) -> str:
    return hashlib.sha256(f"{machine}\n{fingerprint}".encode()).hexdigest()[:24]


def cached_verdict(fingerprint: str, machine: str | None = None) -> Verdict | None:
    try:
        entries = json.loads(cache_path().read_text(encoding="utf-8"))
        return Verdict.from_json(entries[_key(fingerprint, machine or machine_key())])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_image_runtime(identity) -> str:
    """What ``--precision auto`` runs the image tower of ``identity``'s model with on this machine (for
    ``status``): the cached verdict, or that it is not measured yet."""
    if identity is None:
        return "-"
    verdict = cached_verdict(identity.fingerprint)
    return verdict.describe() if verdict else "not measured on this machine yet (the next index run times it)"


def save_verdict(fingerprint: str, verdict: Verdict) -> None:
    """Add the verdict to the cache (kept best-effort: a cache that cannot be written means timing again)."""
    path = cache_path()
    try:
        entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        entries = {}
    entries[_key(fingerprint, verdict.machine)] = asdict(verdict)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    except OSError as exc:
        log.warning("cannot cache the precision verdict in %s: %s", path, exc)


def measure(runners: dict[str, Callable[[np.ndarray], np.ndarray]], pixels: np.ndarray, machine: str) -> Verdict:
    """Time each runner (name -> pixels -> unit vectors) on ``pixels``; the first is the reference. Keep
    the fastest whose lowest cosine to the reference is at least ``LOSSLESS_COSINE`` if it beats the
    reference by more than ``MARGIN``, else the reference."""
    names = list(runners)
    reference = runners[names[0]](pixels)  # also warms the reference up
    measured, fastest_first = [], None
    for name in names:
        started = time.perf_counter()
        vectors = runners[name](pixels)  # the first call pays one-time costs: a warm-up, and the cosine check
        first = time.perf_counter() - started
        cosine = float(np.min(np.sum(vectors * reference, axis=1)))
        if fastest_first is not None and first > TOO_SLOW * fastest_first:
            measured.append(Measured(name, None, round(cosine, 6)))
            continue
        if cosine >= LOSSLESS_COSINE:  # only a candidate that may be kept sets the pace
            fastest_first = first if fastest_first is None else min(first, fastest_first)
        started = time.perf_counter()
        for _ in range(TIMED_CALLS):
            runners[name](pixels)
        per_second = TIMED_CALLS * len(pixels) / (time.perf_counter() - started)
        measured.append(Measured(name, round(per_second, 2), round(cosine, 6)))
    reference = measured[0]  # always timed: it sets the pace first
    fastest = max((m for m in measured if m.images_per_s and m.cosine >= LOSSLESS_COSINE), key=lambda m: m.images_per_s)
    chosen = fastest.name if fastest.images_per_s > MARGIN * reference.images_per_s else reference.name
    return Verdict(chosen, tuple(measured), len(pixels), machine, time.strftime("%Y-%m-%d"))


def prepare_image_runtime(encoder, store_folder: Path, precision: str, batch_size: int) -> str:
    """Set how ``encoder`` (a ``ClipEncoder``) runs its image tower for an index run, exporting it into
    the store first where the choice needs it; returns the choice in words (for the index report)."""
    if not hasattr(encoder, "run_image_tower"):
        return f"{type(encoder).__name__}'s own"
    if encoder.runtime_choice is not None and encoder.runtime_choice[0] == precision:
        return encoder.runtime_choice[1]  # chosen already (a benchmark prepares it before its timing)
    said = _prepare(encoder, store_folder, precision, batch_size)
    encoder.runtime_choice = (precision, said)
    return said


def _prepare(encoder, store_folder: Path, precision: str, batch_size: int) -> str:
    from .exported import ExportUnusable
    from .image_export import add_int8, check_images, ensure_image_export, torch_vectors
    from .image_exported import ExportedImageEncoder, image_export_folder

    if encoder.runtime.device != "cpu" or precision in ("fp32", "bf16", "fp16"):
        return encoder.runtime.precision
    identity, folder = encoder.identity, image_export_folder(store_folder)
    machine = machine_key()
    verdict = cached_verdict(identity.fingerprint, machine) if precision == "auto" else None
    if verdict is not None and verdict.chosen in ("fp32", "bf16"):
        encoder.run_image_tower(precision=verdict.chosen)
        return verdict.describe()
    try:
        record = ensure_image_export(encoder, store_folder)
        if precision == "int8" and not (record.int8 and (folder / record.int8).is_file()):
            record = add_int8(encoder, store_folder, record)
        exported = ExportedImageEncoder(folder, record, identity, "int8" if precision == "int8" else "fp32")
    except ExportUnusable as exc:
        if precision != "auto":
            raise UsageError(f"{{opt:precision}} {precision}: the exported image tower {exc.reason}") from None
        return f"fp32 (the image tower could not be exported to time onnxruntime: {exc.reason})"
    if precision != "auto":
        encoder.run_image_tower(exported=exported)
        if precision == "int8":
            return f"int8 (onnxruntime, cosine to fp32 >= {record.int8_min_cosine:.4f})"
        return "onnx (onnxruntime, float32)"
    if verdict is None:
        pixels = check_images(encoder.image_size, min(max(batch_size, 4), MEASURE_BATCH))
        log.info("timing fp32, bf16 and onnx image towers on this machine (once per machine and model)")
        verdict = measure({"fp32": lambda batch: torch_vectors(encoder, batch),
                           "bf16": lambda batch: torch_vectors(encoder, batch, "bf16"),
                           "onnx": exported.encode_images}, pixels, machine)
        save_verdict(identity.fingerprint, verdict)
    if verdict.chosen == "onnx":
        encoder.run_image_tower(exported=exported)
    else:
        encoder.run_image_tower(precision=verdict.chosen)
    return verdict.describe()
