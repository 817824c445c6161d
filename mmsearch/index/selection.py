"""Which index type a collection should use, and why: a pure function of its size, dimension, memory
budget and the machine's GPUs (in the spirit of autofaiss), plus how a choice is recorded in a store.

* below ``FLAT_MAX`` vectors: exact search (``flat``) - a scan is fast enough and is always right;
* up to ``HNSW_MAX``: ``hnsw``, the lowest latency at high recall while its graph builds quickly;
* while full float32 vectors fit in half the budget: ``ivf-flat`` (nlist ~ 4 sqrt(N), at most ``MAX_NLIST``);
* beyond: ``ivf-pq`` with the largest code size ``m`` that fits, re-ranked from the stored vectors.
* with a GPU: exact search on it (``gpu-flat``, or ``torch-flat`` when FAISS has no GPU support) while
  the vectors fit, else ``gpu-ivf``.

Search-time parameters (``nprobe``, ``efSearch``) are then tuned on the store's own vectors by
``index.builder``; the choice is re-made when the collection has grown (or shrunk) ``GROWTH``
times since the index was built.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..errors import UsageError
from .factory import CPU_KINDS, KINDS

GiB = 1 << 30
DEFAULT_BUDGET = 8 * GiB
FLAT_MAX = 150_000
HNSW_MAX = 500_000
GROWTH = 4.0
TARGET_RECALL = 0.95
HNSW_M = 32
MAX_NLIST = 4096
"""The most inverted lists auto-selection gives an IVF type. Each vector added (and each query) is first
compared with every list centroid, so the centroids cost the build ``nlist * dim`` multiply-adds per
vector: on two cores, 29,000 vectors/s are assigned to 4,096 lists (about 6 min for 10M), a quarter of
that to 16,384 (an HNSW graph over 16,384 centroids added ~10,000/s, after 24 min of training). Beyond
4,096 the lists grow instead; a query scans ~50 ns per PQ code, and ``nprobe`` is tuned on the store."""
PQ_M_CANDIDATES = (128, 96, 64, 48, 32, 24, 16, 12, 8, 4, 2, 1)
"""PQ code sizes (bytes per vector) tried largest first, at most dim/4 (4 dimensions per byte). Finer codes
need fewer candidates re-ranked from the stored vectors, which are random reads from the catalog: on
500k of the benchmark's vectors, recall@10 0.96 needs 3x re-ranking at m=64 and 2x at m=128."""

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20,
          "g": 10**9, "gb": 10**9, "gib": 1 << 30, "t": 10**12, "tb": 10**12, "tib": 1 << 40}


@dataclass(frozen=True)
class IndexChoice:
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    """Why, in words a user can check: sizes, the budget, the rule that applied (and tuned recall)."""
    n_vectors: int = 0
    """Collection size the index was chosen (and trained) for."""
    memory_budget: int = DEFAULT_BUDGET
    estimated_bytes: int = 0
    mode: str = "auto"
    """'auto': re-chosen as the collection changes; 'manual': the type given to `mmsearch reindex` is kept."""

    def with_(self, **changes: Any) -> "IndexChoice":
        return replace(self, **changes)

    def summary(self) -> str:
        shown = ", ".join(f"{key}={value}" for key, value in self.params.items())
        return f"{self.kind}{f' ({shown})' if shown else ''}"


def parse_memory_size(text: str | int) -> int:
    """'8GiB', '512 MiB', '8G', '1.5e9' -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _UNITS:
        raise UsageError(f"{{opt:memory_budget}} {text!r}: expected a size such as 8GiB, 512MiB or 2G")
    value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise UsageError(f"{{opt:memory_budget}} {text!r}: must be more than 0")
    return value


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def default_memory_budget() -> int:
    """8 GiB, or half the machine's memory where that is less."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return min(DEFAULT_BUDGET, int(line.split()[1]) * 1024 // 2)
    except OSError:
        pass
    return DEFAULT_BUDGET


def nlist_for(n: int) -> int:
    """The power of two nearest 4 sqrt(N), at most ``MAX_NLIST``, with at least 39 vectors per list to
    train on."""
    if n < 2 * 39:
        return 1
    nlist = min(MAX_NLIST, 2 ** round(math.log2(4 * math.sqrt(n))))
    while nlist > 1 and n // nlist < 39:
        nlist //= 2
    return int(nlist)


def estimate_bytes(kind: str, n: int, dim: int, params: Mapping[str, Any]) -> int:
    """Resident bytes of an index of ``n`` vectors (FAISS structures; ids included)."""
    full = n * (4 * dim + 8)
    if kind in ("flat", "torch-flat", "gpu-flat", "cagra"):
        return full
    if kind in ("ivf-flat", "gpu-ivf"):
        return full + int(params.get("nlist", 1)) * 4 * dim
    if kind == "ivf-pq":
        code = math.ceil(int(params.get("m", 1)) * int(params.get("nbits", 8)) / 8)
        return n * (code + 8) + int(params.get("nlist", 1)) * 4 * dim + 256 * 4 * dim
    if kind == "hnsw":
        return full + int(n * int(params.get("M", HNSW_M)) * 2 * 4 * 1.05)
    raise UsageError(f"unknown index type {kind!r}")


def params_for(kind: str, n: int, dim: int, budget: int) -> dict[str, Any]:
    """Sensible build parameters of ``kind`` for ``n`` vectors (search parameters get tuned later)."""
    if kind == "gpu-ivf":
        nlist = nlist_for(n)
        return {"nlist": nlist, "nprobe": max(1, min(nlist, 16))}
    if kind == "ivf-flat":
        nlist = nlist_for(n)
        return {"nlist": nlist, "nprobe": max(1, min(nlist, 16))}
    if kind == "ivf-pq":
        nlist = nlist_for(n)
        return {"nlist": nlist, "nprobe": max(1, min(nlist, 16)), "m": pq_m_for(n, dim, nlist, budget),
                "nbits": 8, "rerank": 10}
    if kind == "hnsw":
        return {"M": HNSW_M, "efConstruction": 80, "efSearch": 64}
    if kind == "gpu-flat":
        return {"float16": n * dim * 4 > 2 * GiB}
    return {}


def pq_m_for(n: int, dim: int, nlist: int, budget: int) -> int:
    """The largest PQ code size (bytes per vector, dividing ``dim``, at most dim/4) that fits half the budget."""
    candidates = [m for m in PQ_M_CANDIDATES if dim % m == 0 and m <= max(1, dim // 4)] or [1]
    for m in candidates:
        if estimate_bytes("ivf-pq", n, dim, {"m": m, "nlist": nlist}) <= budget // 2:
            return m
    return candidates[-1]


def choose_index(n: int, dim: int, budget: int = DEFAULT_BUDGET, *, faiss_gpus: int = 0,
                 torch_cuda: bool = False) -> IndexChoice:
    """The index type for ``n`` vectors of ``dim`` within ``budget`` bytes, with the reason."""
    half = budget // 2
    size = f"{n:,} vectors x {dim}"
    full = estimate_bytes("flat", n, dim, {})

    def pick(kind: str, why: str) -> IndexChoice:
        params = params_for(kind, n, dim, budget)
        est = estimate_bytes(kind, n, dim, params)
        return IndexChoice(kind, params, f"{size}: {why}; about {format_bytes(est)} of a "
                                         f"{format_bytes(budget)} budget", n, budget, est)

    if faiss_gpus > 0 and full <= half:
        return pick("gpu-flat", "exact search on the GPU (FAISS) while the vectors fit")
    if faiss_gpus > 0 and n > FLAT_MAX and estimate_bytes("gpu-ivf", n, dim, {"nlist": nlist_for(n)}) <= half:
        return pick("gpu-ivf", "IVF on the GPU (FAISS)")
    if torch_cuda and full <= half:
        return pick("torch-flat", "exact search on the GPU through torch (this FAISS has no GPU support)")
    if n < FLAT_MAX and full <= half:
        return pick("flat", f"below {FLAT_MAX:,} vectors exact search is fast enough, and exact")
    if n < HNSW_MAX and estimate_bytes("hnsw", n, dim, {"M": HNSW_M}) <= half:
        return pick("hnsw", f"{FLAT_MAX:,}-{HNSW_MAX:,} vectors: an HNSW graph (M={HNSW_M}) gives the lowest "
                            f"latency at high recall and builds quickly at this size")
    if estimate_bytes("ivf-flat", n, dim, {"nlist": nlist_for(n)}) <= half:
        return pick("ivf-flat", f"full vectors fit in half the budget: IVF-Flat with nlist ~ 4 sqrt(N) "
                                f"(at most {MAX_NLIST:,}) = {nlist_for(n)}")
    choice = pick("ivf-pq", f"full vectors ({format_bytes(full)}) exceed half the budget: IVF-PQ with "
                            f"nlist ~ 4 sqrt(N) (at most {MAX_NLIST:,}) = {nlist_for(n)} and the largest PQ code "
                            f"that fits, re-ranked from the stored vectors")
    if choice.estimated_bytes > half:
        choice = choice.with_(reason=choice.reason + " (over half the budget even at the smallest code: "
                                                     "raise the memory budget)")
    return choice


def manual_choice(kind: str, n: int, dim: int, budget: int) -> IndexChoice:
    """The index type a user asked for, with build parameters sized for ``n``."""
    if kind not in KINDS:
        raise UsageError(f"{{opt:index_type}} must be auto or one of {', '.join(KINDS)}, not {kind!r}")
    params = params_for(kind, n, dim, budget)
    est = estimate_bytes(kind, n, dim, params)
    return IndexChoice(kind, params, f"{n:,} vectors x {dim}: {kind} as asked (kept as the "
                                     f"collection changes); about {format_bytes(est)}", n, budget, est, mode="manual")


def needs_reselect(recorded: IndexChoice | None, n: int, growth: float = GROWTH) -> bool:
    """True when no choice is recorded or the collection is ``growth`` times larger or smaller than the
    size the index was chosen for."""
    if recorded is None:
        return n > 0
    base = max(1, recorded.n_vectors)
    return n >= growth * base or n * growth <= base


# -- recording in the catalog's info table ------------------------------------------------------------
def _prefix(modality: str) -> str:
    return f"index.{modality}."


def choice_info(choice: IndexChoice, modality: str) -> dict[str, str]:
    p = _prefix(modality)
    return {p + "kind": choice.kind, p + "params": json.dumps(dict(choice.params), sort_keys=True),
            p + "reason": choice.reason, p + "trained_size": str(choice.n_vectors), p + "mode": choice.mode,
            p + "budget": str(choice.memory_budget), p + "estimated_bytes": str(choice.estimated_bytes)}


def recorded_choice(info: Mapping[str, str], modality: str) -> IndexChoice | None:
    p = _prefix(modality)
    if p + "kind" not in info:
        return None
    try:
        params = json.loads(info.get(p + "params", "{}"))
    except ValueError:
        params = {}
    return IndexChoice(info[p + "kind"], params, info.get(p + "reason", ""), int(info.get(p + "trained_size", 0)),
                       int(info.get(p + "budget", DEFAULT_BUDGET)), int(info.get(p + "estimated_bytes", 0)),
                       info.get(p + "mode", "auto"))


def cpu_equivalent(kind: str) -> str:
    return kind if kind in CPU_KINDS else {"gpu-ivf": "ivf-flat"}.get(kind, "flat")
