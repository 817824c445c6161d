"""Index types by name: ``create_index(kind, dim, params)``, and ``open_index(path)``, which reads a
FAISS file and its JSON sidecar back into the right class."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import UsageError
from .ann import HNSWIndex, IVFFlatIndex, IVFPQIndex
from .backend import VectorSource
from .faiss_base import SIDECAR_FORMAT, VectorIndex, _faiss, configure_faiss, sidecar_path
from .gpu import CagraIndex, GpuFlatIndex, GpuIVFIndex, TorchFlatIndex

log = logging.getLogger(__name__)

CLASSES: Mapping[str, type[VectorIndex]] = {
    "flat": VectorIndex, "ivf-flat": IVFFlatIndex, "ivf-pq": IVFPQIndex, "hnsw": HNSWIndex,
    "gpu-flat": GpuFlatIndex, "gpu-ivf": GpuIVFIndex, "cagra": CagraIndex, "torch-flat": TorchFlatIndex,
}
KINDS = tuple(CLASSES)
CPU_KINDS = ("flat", "ivf-flat", "ivf-pq", "hnsw")


def index_class(kind: str) -> type[VectorIndex]:
    if kind not in CLASSES:
        raise UsageError(f"{{opt:index_type}} must be auto or one of {', '.join(KINDS)}, not {kind!r}")
    return CLASSES[kind]


def create_index(kind: str, dim: int, params: Mapping[str, Any] | None = None, *,
                 source: VectorSource | None = None) -> VectorIndex:
    """A new, empty index of ``kind``; raises ``UsageError`` for an unknown kind or one this machine
    cannot run (GPU types without a GPU)."""
    cls = index_class(kind)
    cls.check_available()
    return cls(dim, params, source=source)


def infer_kind(faiss_index) -> str:
    """The CPU type of a FAISS structure read from disk."""
    faiss = _faiss()
    index = faiss.downcast_index(faiss_index)
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivf-pq"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf-flat"
    if isinstance(index, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSW):
            return "hnsw"
        if isinstance(inner, faiss.IndexFlat):
            return "flat"
    raise ValueError(f"unsupported FAISS index {type(index).__name__}")


FILE_FAMILY = {"flat": "flat", "gpu-flat": "flat", "torch-flat": "flat", "cagra": "flat",
               "ivf-flat": "ivf-flat", "gpu-ivf": "ivf-flat", "ivf-pq": "ivf-pq", "hnsw": "hnsw"}
"""Which CPU structure each type writes to disk."""
CPU_FALLBACK = {"gpu-flat": "flat", "gpu-ivf": "ivf-flat", "cagra": "flat", "torch-flat": "flat"}


def open_index(path: Path, *, source: VectorSource | None = None, read_only: bool = False) -> VectorIndex:
    """Read an index file and its sidecar back into the right class (a GPU type falls back to its CPU
    equivalent on a machine that cannot run it). ``read_only``: for searching alone; the file is
    memory-mapped where its type allows (``read_only`` is then set on the index, which refuses changes)."""
    faiss = _faiss()
    configure_faiss()
    path = Path(path)
    meta = _read_sidecar(path)
    # the CPU types map their file (checked by the backend contract tests): a 2 GB IVF file opens in 0.02 s, not 1.3
    mapped = read_only and bool(meta) and meta.get("kind") in CPU_KINDS
    structure = faiss.read_index(str(path), faiss.IO_FLAG_MMAP) if mapped else faiss.read_index(str(path))
    kind = infer_kind(structure)
    params = native_params(structure, kind)
    tombstones = np.empty(0, np.int64)
    if meta and FILE_FAMILY.get(meta.get("kind")) == kind and meta.get("ntotal") == structure.ntotal \
            and meta.get("bytes") == path.stat().st_size:
        kind = meta["kind"]
        params = {**params, **meta.get("params", {})}
        tombstones = np.asarray(meta.get("tombstones", []), dtype=np.int64)
    elif meta:
        log.warning("%s: sidecar does not match the index file; using the file alone", sidecar_path(path))
    cls = index_class(kind)
    if not cls.available():
        log.warning("%s: %s index cannot run here; searching it as %s", path, kind, CPU_FALLBACK[kind])
        cls = index_class(CPU_FALLBACK[kind])
    index = cls(int(structure.d), params, faiss_index=structure, source=source)
    index._tombstones = np.unique(tombstones)
    index.read_only = mapped
    return index


def native_params(structure, kind: str) -> dict[str, Any]:
    """Parameters recoverable from the FAISS structure itself (FAISS writes nprobe and efSearch too)."""
    faiss = _faiss()
    index = faiss.downcast_index(structure)
    if kind in ("ivf-flat", "ivf-pq"):
        params: dict[str, Any] = {"nlist": int(index.nlist), "nprobe": int(index.nprobe)}
        if kind == "ivf-pq":
            params.update(m=int(index.pq.M), nbits=int(index.pq.nbits))
        return params
    if kind == "hnsw":
        hnsw = faiss.downcast_index(index.index).hnsw
        return {"M": int(hnsw.nb_neighbors(1)), "efConstruction": int(hnsw.efConstruction),
                "efSearch": int(hnsw.efSearch)}
    return {}


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s): ignored", side, exc)
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == SIDECAR_FORMAT else None
