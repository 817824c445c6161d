"""Index types that search on a GPU: FAISS GPU Flat / IVF, CAGRA, and exact search through torch.

Each keeps a CPU index as its master (what is saved, what filtered searches and removals use) and a
replica on the device for unfiltered searches. Adds go to both; a removal is applied to the master at
once and hidden in the replica's results (over-fetch, then drop) until enough have piled up that the
replica is rebuilt from the master. ``torch-flat`` removes from its replica directly (a masked copy is
cheap for a dense matrix).

The FAISS GPU types are offered only where ``faiss.get_num_gpus() > 0`` (and, for CAGRA, where the
installed FAISS was built with it); ``torch-flat`` runs wherever torch does and picks CUDA when torch
sees one, which is how exact search reaches a GPU that the installed FAISS cannot use.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from .ann import IVFFlatIndex
from .backend import Neighbours
from .exact import exact_top_k, padded
from .faiss_base import VectorIndex, _faiss

log = logging.getLogger(__name__)

def faiss_gpu_count() -> int:
    """GPUs the installed FAISS can use (0 for a CPU-only build)."""
    get = getattr(_faiss(), "get_num_gpus", None)
    return int(get()) if get else 0


STALE_FRACTION = 0.1
"""The replica is rebuilt once removals (or, for CAGRA, additions since its build) pass this share."""
GPU_MAX_K = 2048
"""FAISS GPU k-selection limit (k and nprobe)."""
TORCH_SCORE_ELEMENTS = 1 << 30
"""``torch-flat`` on a GPU computes at most this many scores at once (queries x vectors; 2 GiB in
float16, fewer where an eighth of the free GPU memory is less) and scans the vectors in blocks of that
size: at 10M x 512 the fastest block measured on an H100 (benchmarks/bench_gpu_search.py)."""
CPU_SCORE_ELEMENTS = 1 << 25
"""The same on a CPU (128 MiB of float32 scores)."""


class _Replicated(VectorIndex):
    def __init__(self, dim: int, params: Mapping[str, Any] | None = None, *, faiss_index=None, source=None):
        self._replica = None
        self._stale = np.empty(0, np.int64)
        super().__init__(dim, params, faiss_index=faiss_index, source=source)
        if self.is_trained and self._index.ntotal:
            self._refresh()

    # -- device hooks --------------------------------------------------------------------------------
    def _make_replica(self):
        raise NotImplementedError

    def _replica_add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._replica.add_with_ids(vectors, ids)

    def _replica_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._replica.search(queries, k)

    # -- shared --------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        self._replica = self._make_replica() if self._index.ntotal or self.is_trained else None
        self._stale = np.empty(0, np.int64)

    def _train(self, vectors: np.ndarray) -> None:
        super()._train(vectors)
        self._refresh()

    def _native_add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        super()._native_add(ids, vectors)
        if self._replica is None:
            self._refresh()
        else:
            self._replica_add(ids, vectors)

    def _native_remove(self, ids: np.ndarray) -> int:
        removed = super()._native_remove(ids)
        if removed:
            self._stale = np.union1d(self._stale, ids)
            if len(self._stale) > STALE_FRACTION * max(1, self._index.ntotal):
                self._refresh()
        return removed

    def _search(self, queries: np.ndarray, k: int, allowed, fraction: float) -> Neighbours:
        if allowed is not None or self._replica is None or k > GPU_MAX_K:
            return super()._search(queries, k, allowed, fraction)  # the CPU master, with an IDSelector
        fetch = int(min(GPU_MAX_K, k + len(self._stale), self._index.ntotal + len(self._stale)))
        scores, ids = self._replica_search(queries, fetch)
        if len(self._stale):
            dead = np.isin(ids, self._stale)
            order = np.argsort(dead, axis=1, kind="stable")  # live results first, in rank order
            scores = np.where(dead, -np.inf, scores)
            ids = np.where(dead, -1, ids)
            scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return padded(Neighbours(np.ascontiguousarray(scores[:, :k], np.float32), np.ascontiguousarray(ids[:, :k])), k)

    @property
    def on_gpu(self) -> bool:
        return self._replica is not None

    def _resources(self):
        if getattr(self, "_gpu_resources", None) is None:
            self._gpu_resources = _faiss().StandardGpuResources()
        return self._gpu_resources


def _clone_to_gpu(index):
    """A GPU copy of a replicated index's CPU master, with its ``float16`` and ``device`` parameters."""
    faiss = _faiss()
    options = faiss.GpuClonerOptions()
    options.useFloat16 = bool(index.params["float16"])
    return faiss.index_cpu_to_gpu(index._resources(), int(index.params["device"]), index._index, options)


class GpuFlatIndex(_Replicated):
    """Exact search on a FAISS GPU; ``float16=True`` halves the GPU memory at a small cost in precision."""

    kind = "gpu-flat"
    defaults: Mapping[str, Any] = {"float16": False, "device": 0}
    needs = "a GPU that FAISS can use"

    @classmethod
    def available(cls) -> bool:
        return faiss_gpu_count() > 0

    def _make_replica(self):
        return _clone_to_gpu(self)


class GpuIVFIndex(_Replicated, IVFFlatIndex):
    """IVF-Flat searched on a FAISS GPU (trained and saved through its CPU master)."""

    kind = "gpu-ivf"
    defaults: Mapping[str, Any] = {"nlist": 1024, "nprobe": 16, "float16": False, "device": 0}
    needs = "a GPU that FAISS can use"

    @classmethod
    def available(cls) -> bool:
        return faiss_gpu_count() > 0

    def _make_replica(self):
        faiss = _faiss()
        replica = _clone_to_gpu(self)
        faiss.GpuParameterSpace().set_index_parameter(replica, "nprobe", min(GPU_MAX_K, int(self.params["nprobe"])))
        return replica

    def _apply_params(self) -> None:
        super()._apply_params()
        if getattr(self, "_replica", None) is not None:
            _faiss().GpuParameterSpace().set_index_parameter(
                self._replica, "nprobe", min(GPU_MAX_K, int(self.params["nprobe"])))


class CagraIndex(_Replicated):
    """A CAGRA graph (FAISS + cuVS) over a snapshot of the master's vectors; vectors added since the
    snapshot are searched exactly and merged, and the graph is rebuilt (lazily, at the next search)
    once they pass ``STALE_FRACTION``."""

    kind = "cagra"
    exact = False
    defaults: Mapping[str, Any] = {"graph_degree": 64, "intermediate_graph_degree": 128, "itopk_size": 64,
                                   "device": 0}
    needs = "a GPU and a FAISS build with CAGRA (cuVS)"

    @classmethod
    def available(cls) -> bool:
        return faiss_gpu_count() > 0 and hasattr(_faiss(), "GpuIndexCagra")

    def _make_replica(self):
        self._delta: list[np.ndarray] = []
        if self._index.ntotal < 4 * int(self.params["graph_degree"]):
            return None  # too small for a graph: the exact master answers
        faiss = _faiss()
        self._snapshot = self._held_ids()
        vectors = np.ascontiguousarray(self.vectors_of(self._snapshot)[1])
        config = faiss.GpuIndexCagraConfig()
        config.graph_degree = int(self.params["graph_degree"])
        config.intermediate_graph_degree = int(self.params["intermediate_graph_degree"])
        config.device = int(self.params["device"])
        graph = faiss.GpuIndexCagra(self._resources(), self.dim, faiss.METRIC_INNER_PRODUCT, config)
        graph.train(vectors)
        return graph

    def _native_add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        VectorIndex._native_add(self, ids, vectors)
        if self._replica is not None:
            self._delta.append(ids)
            if sum(map(len, self._delta)) > STALE_FRACTION * len(self._snapshot):
                self._replica = None  # rebuilt at the next search

    def _search(self, queries: np.ndarray, k: int, allowed, fraction: float) -> Neighbours:
        if self._replica is None and allowed is None:
            self._refresh()
        return super()._search(queries, k, allowed, fraction)

    def _replica_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        params = faiss.SearchParametersCagra() if hasattr(faiss, "SearchParametersCagra") else None
        if params is not None:
            params.itopk_size = max(int(self.params["itopk_size"]), k)
        scores, positions = self._replica.search(queries, min(k, len(self._snapshot)), params=params)
        ids = np.where(positions >= 0, self._snapshot[np.clip(positions, 0, None)], -1)
        if self._delta:
            delta_ids, delta_vectors = self.vectors_of(np.concatenate(self._delta))
            if len(delta_ids):
                extra = exact_top_k(queries, delta_vectors, delta_ids, k)
                scores, ids = np.hstack([scores, extra.scores]), np.hstack([ids, extra.ids])
                order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
                scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return scores, ids


def _tensor(array: np.ndarray):
    """A tensor over ``array`` without copying it; read-only arrays (the catalog's, a caller's) are fine
    since the tensor is only read, so torch's warning about them is not shown."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _score_elements(replica) -> int:
    import torch

    if replica.device.type != "cuda":
        return CPU_SCORE_ELEMENTS
    free, _ = torch.cuda.mem_get_info(replica.device)
    return max(1 << 20, min(TORCH_SCORE_ELEMENTS, free // (8 * replica.element_size())))


TOPK_GROUP = 512
"""``torch-flat`` finds a block's top-k through the maxima of groups of this many scores (see ``_top_k``)."""


def _top_k(scores, k: int):
    """Exact row-wise top-k of a (queries, n) score matrix, faster than ``torch.topk`` on long rows.

    Each row is cut into groups of ``TOPK_GROUP``; only the k groups with the highest maxima can hold
    the row's k best scores (a group holding one of them has a maximum at least as high, and the
    maxima of other groups are all distinct scores), so a top-k over the group maxima, then over the
    scores of those k groups, gives the answer: two short selections and one pass of max instead of a
    selection over the whole row."""
    import torch

    rows, n = scores.shape
    k = min(k, n)
    group = TOPK_GROUP
    usable = n - n % group
    if usable < 4 * k * group:  # short rows: the plain selection is as fast
        top = torch.topk(scores, k, dim=1)
        return top.values, top.indices
    grouped = scores[:, :usable].view(rows, usable // group, group)
    best_groups = torch.topk(grouped.amax(dim=2), k, dim=1).indices  # (rows, k)
    candidates = torch.gather(grouped, 1, best_groups[:, :, None].expand(-1, -1, group)).reshape(rows, k * group)
    positions = (best_groups[:, :, None] * group + torch.arange(group, device=scores.device)).reshape(rows, k * group)
    if usable < n:  # the tail that fills no whole group is kept as candidates
        candidates = torch.cat([candidates, scores[:, usable:]], 1)
        tail = torch.arange(usable, n, device=scores.device).expand(rows, -1)
        positions = torch.cat([positions, tail], 1)
    top = torch.topk(candidates, k, dim=1)
    return top.values, torch.gather(positions, 1, top.indices)


class TorchFlatIndex(_Replicated):
    """Exact search through torch: one matrix product and a top-k, float16 on a GPU (float32 on a CPU,
    where it returns exactly what ``flat`` does)."""

    kind = "torch-flat"
    defaults: Mapping[str, Any] = {"device": "auto", "dtype": "auto"}

    def _device_and_dtype(self):
        import torch

        device = self.params["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.params["dtype"]
        if dtype == "auto":
            dtype = "float16" if str(device).startswith("cuda") else "float32"
        return torch.device(device), getattr(torch, dtype)

    def _make_replica(self):
        device, dtype = self._device_and_dtype()
        ids = self._held_ids()
        _, vectors = self.vectors_of(ids)
        self._replica_ids = ids
        self._spare = None
        return _tensor(np.ascontiguousarray(vectors, np.float32)).to(device=device, dtype=dtype)

    def _replica_add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append in place; the buffers double when full, so adding a batch at a time stays linear."""
        import torch

        held, count = self._replica.shape[0], len(ids)
        if self._spare is None or held + count > self._spare[0].shape[0]:
            capacity = max(held + count, 2 * held, 1024)
            rows = torch.empty((capacity, self.dim), device=self._replica.device, dtype=self._replica.dtype)
            rows[:held] = self._replica
            spare_ids = np.empty(capacity, np.int64)
            spare_ids[:held] = self._replica_ids
            self._spare = (rows, spare_ids)
        rows, spare_ids = self._spare
        rows[held:held + count] = _tensor(vectors).to(device=rows.device, dtype=rows.dtype)
        spare_ids[held:held + count] = ids
        self._replica, self._replica_ids = rows[:held + count], spare_ids[:held + count]

    def _native_remove(self, ids: np.ndarray) -> int:
        import torch

        removed = VectorIndex._native_remove(self, ids)
        if removed and self._replica is not None:
            keep = ~np.isin(self._replica_ids, ids)
            self._replica = self._replica[torch.from_numpy(keep).to(self._replica.device)]
            self._replica_ids = self._replica_ids[keep]
            self._spare = None
        return removed

    def _replica_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores for a block of vectors at a time (at most ``TORCH_SCORE_ELEMENTS``), each block's top-k
        merged into the running top-k: memory stays bounded whatever the batch and the index size."""
        import torch

        rows = int(self._replica.shape[0])
        block = max(k, _score_elements(self._replica) // max(1, len(queries)))
        with torch.inference_mode():
            batch = _tensor(queries).to(device=self._replica.device, dtype=self._replica.dtype)
            best_scores = best_positions = None
            for start in range(0, rows, block):
                scores = batch @ self._replica[start:start + block].T
                if scores.device.type == "cpu" and scores.dtype != torch.float32:
                    scores = scores.float()
                values, positions = _top_k(scores, k)
                positions += start
                if best_scores is not None:
                    values, positions = torch.cat([best_scores, values], 1), torch.cat([best_positions, positions], 1)
                    top = torch.topk(values, k, dim=1)
                    values, positions = top.values, torch.gather(positions, 1, top.indices)
                best_scores, best_positions = values, positions
            scores, positions = best_scores.float().cpu().numpy(), best_positions.cpu().numpy()
        return scores, self._replica_ids[positions]

    @property
    def on_gpu(self) -> bool:
        return self._replica is not None and self._replica.device.type == "cuda"
