"""Building a store's index from its stored vectors: train on a sample, add everything, tune the search
parameters for recall on the store's own vectors, swap the file atomically, record the choice.

``maybe_reselect`` is what an indexing or import run calls at its end: it re-chooses the index type
when the collection has grown (or shrunk) several-fold since the index was built and rebuilds only when
the choice changed; ``reindex`` is ``mmsearch reindex``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from .index_selection import (GROWTH, TARGET_RECALL, IndexChoice, choice_info, choose_index, cpu_equivalent,
                              default_memory_budget, estimate_bytes, format_bytes, manual_choice, needs_reselect,
                              params_for, parse_memory_size, recorded_choice)
from .progress import NoProgress, Progress
from .records import Modality
from .vector_index import VectorIndex, create_index, faiss_gpu_count, index_class

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

TUNE_QUERIES = 200
TUNE_K = 10
BUDGET_KEY = "index.memory_budget"
LADDERS = {"nprobe": [2 ** i for i in range(0, 12)], "efSearch": [16, 32, 64, 128, 256, 512, 1024, 2048],
           "itopk_size": [32, 64, 128, 256, 512]}
RERANK_FEWER = (1, 2, 3, 5)
"""IVF-PQ re-ranks ``k * rerank`` candidates (10 by default); tuning tries these smaller factors once
``nprobe`` reaches the target and keeps the smallest that still does."""
TUNED = {"ivf-flat": "nprobe", "gpu-ivf": "nprobe", "ivf-pq": "nprobe", "hnsw": "efSearch", "cagra": "itopk_size"}


class StreamingExact:
    """Exact top-``k`` of fixed queries over vectors seen chunk by chunk (with ``query_ids``, a query's own
    id is skipped)."""

    def __init__(self, queries: np.ndarray, query_ids: np.ndarray | None, k: int):
        self.queries, self.k = np.ascontiguousarray(queries, np.float32), k
        self.query_ids = query_ids
        self.scores = np.full((len(queries), k), -np.inf, np.float32)
        self.ids = np.full((len(queries), k), -1, np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        scores = self.queries @ np.asarray(vectors, np.float32).T
        if self.query_ids is not None:
            scores[self.query_ids[:, None] == ids[None, :]] = -np.inf
        scores = np.hstack([self.scores, scores])
        every = np.hstack([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))])
        top = np.argpartition(-scores, min(self.k, scores.shape[1] - 1), axis=1)[:, :self.k]
        top_scores = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        self.scores = np.take_along_axis(top_scores, order, 1)
        self.ids = np.take_along_axis(np.take_along_axis(every, top, 1), order, 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of each query's true top-k (ids >= 0) that ``found``'s first k columns contain."""
    hits = total = 0
    for row, true_row in zip(found[:, :k], truth[:, :k]):
        true_set = set(true_row[true_row >= 0].tolist())
        hits += len(true_set.intersection(row.tolist()))
        total += len(true_set)
    return hits / total if total else 1.0


def _without_self(ids: np.ndarray, query_ids: np.ndarray | None, k: int) -> np.ndarray:
    if query_ids is None:
        return ids[:, :k]
    out = np.full((len(ids), k), -1, np.int64)
    for row, (found, own) in enumerate(zip(ids, query_ids)):
        kept = found[found != own][:k]
        out[row, :len(kept)] = kept
    return out


def tune(index: VectorIndex, queries: np.ndarray, query_ids: np.ndarray | None, truth: np.ndarray, *,
         k: int = TUNE_K, target: float = TARGET_RECALL) -> tuple[float, str]:
    """Set the index's search parameter to the smallest value reaching ``target`` recall@k against
    ``truth`` (the best value tried when none does); returns (recall, a note for the reason)."""
    name = TUNED.get(index.kind)
    if name is None or index.exact:
        return 1.0, ""
    limit = int(index.params.get("nlist", 1 << 30)) if name == "nprobe" else 1 << 30
    ladder = [value for value in LADDERS[name] if value <= min(limit, 1024 if name == "nprobe" else limit)] or [1]
    fetch = k + (query_ids is not None)

    def measure() -> float:
        return recall_at_k(_without_self(index.search(queries, fetch).ids, query_ids, k), truth, k)

    best = (-1.0, ladder[0])
    for value in ladder:
        index.set_param(name, value)
        recall = measure()
        if recall > best[0] + 1e-9:
            best = (recall, value)
        if recall >= target:
            break
    index.set_param(name, best[1])
    note = ""
    if best[0] >= target and index.kind == "ivf-pq" and index.source is not None:
        # as few candidates as reach the target: each is a stored vector read from the catalog, from disk
        # when it is not in the page cache
        original = int(index.params["rerank"])
        for rerank in (value for value in RERANK_FEWER if value < original):
            index.set_param("rerank", rerank)
            recall = measure()
            if recall >= target:
                best = (recall, best[1])
                note = f", rerank={rerank}"
                break
        else:
            index.set_param("rerank", original)
    if best[0] < target and index.kind == "ivf-pq":
        for rerank in (20, 40):
            index.set_param("rerank", rerank)
            recall = measure()
            if recall > best[0]:
                best = (recall, best[1])
            else:
                index.set_param("rerank", rerank // 2)
                break
            if recall >= target:
                break
    return best[0], (f"; {name}={best[1]}{note} tuned for recall@{k} = {best[0]:.3f} (target {target}) on "
                     f"{len(queries)} held-out stored vectors vs exact search")


def _training_size(index: VectorIndex, n: int) -> int:
    nlist = int(index.params.get("nlist", 1))
    return int(min(n, max(65_536, 40 * nlist)))


def build_from_store(store: "Store", modality: Modality, choice: IndexChoice, *, target: float = TARGET_RECALL,
                     progress: Progress | None = None) -> tuple[VectorIndex, IndexChoice]:
    """A new index of ``choice``'s type over every stored vector of ``modality``, trained and tuned
    (``progress`` counts the vectors added)."""
    started = time.perf_counter()
    progress = progress or NoProgress()
    dim = store.dim(modality)
    kind = choice.kind
    if not index_class(kind).available():
        kind = cpu_equivalent(kind)
        log.warning("%s index cannot run on this machine: building %s instead", choice.kind, kind)
    source = store.vector_source(modality)
    index = create_index(kind, dim, choice.params, source=source)
    ids = store.catalog.segment_ids(modality)
    rng = np.random.default_rng(0)
    if index.trainable and len(ids):
        sample = np.sort(rng.choice(ids, size=_training_size(index, len(ids)), replace=False))
        index.train(source(sample)[1])
        log.info("%s index trained on %d vectors in %.1f s", kind, len(sample), time.perf_counter() - started)
    exact = None
    if not index.exact and len(ids) > 20:  # held-out queries: added only after tuning
        query_ids, queries = source(np.sort(rng.choice(ids, size=min(TUNE_QUERIES, len(ids) // 10), replace=False)))
        exact = StreamingExact(queries, None, TUNE_K)
    progress.start(len(ids), f"building the {modality.value} index ({kind})", "vector")
    try:
        for chunk_ids, vectors in store.catalog.iter_vectors(modality, dim, chunk=50_000):
            count = len(chunk_ids)
            if exact is not None:
                keep = ~np.isin(chunk_ids, query_ids)
                chunk_ids, vectors = chunk_ids[keep], vectors[keep]
                exact.update(chunk_ids, vectors)
            index.add(chunk_ids, vectors)
            progress.advance(count)
    finally:
        progress.finish()
    log.info("%s index: %d vectors added after %.1f s; tuning", kind, len(index), time.perf_counter() - started)
    reason = choice.reason
    if exact is not None:
        _, note = tune(index, queries, None, exact.ids, target=target)
        index.add(query_ids, queries)
        reason += note
    log.info("%s index of %d vectors built in %.1f s", kind, len(index), time.perf_counter() - started)
    final = choice.with_(kind=kind, params=dict(index.params), reason=reason, n_vectors=len(ids),
                         estimated_bytes=estimate_bytes(kind, len(ids), dim, index.params))
    return index, final


def _machine() -> dict[str, Any]:
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except Exception:  # a broken torch install must not stop a CPU index from being chosen
        cuda = False
    return {"faiss_gpus": faiss_gpu_count(), "torch_cuda": cuda}


def _budget(store: "Store", budget: int | str | None) -> int:
    if budget is not None:
        value = parse_memory_size(budget)
        store.catalog.set_info(**{BUDGET_KEY: str(value)})
        return value
    recorded = store.catalog.info().get(BUDGET_KEY)
    return int(recorded) if recorded else default_memory_budget()


def _install(store: "Store", modality: Modality, choice: IndexChoice, progress: Progress | None) -> IndexChoice:
    index, final = build_from_store(store, modality, choice, progress=progress)
    store.replace_index(modality, index)
    store.catalog.set_info(**choice_info(final, modality.value))
    return final


def _reselection(store: "Store", modality: Modality, n: int, recorded: IndexChoice | None, *,
                 budget: int | str | None, growth: float) -> tuple[IndexChoice, bool] | None:
    """The choice for ``n`` vectors when ``recorded`` is due for re-selection, and whether it means a
    rebuild (an exact type that stays exact only needs its record updated); None when not due."""
    if not n or not needs_reselect(recorded, n, growth):
        return None
    dim = store.dim(modality)
    if dim is None:
        return None
    limit = _budget(store, budget)
    if recorded is not None and recorded.mode == "manual":
        choice = manual_choice(recorded.kind, n, dim, limit)
    else:
        choice = choose_index(n, dim, limit, **_machine())
    current = recorded.kind if recorded is not None else "flat"
    rebuild = not (choice.kind == current and not index_class(choice.kind).trainable and choice.kind != "hnsw")
    return choice, rebuild


def maybe_reselect(store: "Store", modality: Modality | str, *, budget: int | str | None = None,
                   growth: float = GROWTH, progress: Progress | None = None) -> IndexChoice | None:
    """Re-choose ``modality``'s index type when none is recorded or the collection has grown or shrunk
    ``growth``-fold since it was chosen; rebuild from stored vectors only when the type or its build
    parameters change. Returns the new choice, or None when nothing changed."""
    modality = Modality(modality)
    recorded = recorded_choice(store.catalog.info(), modality.value)
    n = store.vector_count(modality) if store.dim(modality) is not None else 0
    planned = _reselection(store, modality, n, recorded, budget=budget, growth=growth)
    if planned is None:
        return None
    choice, rebuild = planned
    if not rebuild:
        store.catalog.set_info(**choice_info(choice, modality.value))  # same exact type: nothing to rebuild
        log.info("%s index stays %s at %d vectors", modality.value, choice.kind, n)
        return choice
    log.info("%s index: %d vectors (was %s): rebuilding as %s", modality.value, n,
             recorded.n_vectors if recorded else "never chosen", choice.kind)
    return _install(store, modality, choice, progress)


class BackgroundReselect:
    """Index re-selection while a run keeps adding vectors (what ``Indexer.run`` uses).

    After each commit the run calls ``check`` with the index's size. When the collection has grown
    ``growth``-fold since its index type was chosen, the new choice is built from the stored vectors on
    a background thread (training, adding, tuning; SQLite readers do not block the run's writes) while
    the run goes on adding to the current index. A later ``check`` (or ``finish``) on the run's thread
    swaps it in: it is reconciled with the catalog (vectors committed since the build read them are
    added, deleted ones removed), its file replaces the old one atomically, and the choice is recorded.
    A failed build is logged and leaves the current index in place (no second try in the background
    during the run; the run's end re-selects as usual). ``notes`` says what happened."""

    def __init__(self, store: "Store", *, budget: int | str | None = None, growth: float = GROWTH):
        self.store, self.budget, self.growth = store, budget, growth
        self.notes: list[str] = []
        self._recorded: dict[Modality, IndexChoice | None] = {}
        self._running: dict[Modality, tuple[threading.Thread, dict[str, Any]]] = {}
        self._failed: set[Modality] = set()

    def check(self, modality: Modality, n: int) -> None:
        """Swap in finished builds; start one for ``modality`` if it holds ``n`` vectors and is due."""
        self._swap_finished()
        if modality in self._running or modality in self._failed:
            return
        if modality not in self._recorded:
            self._recorded[modality] = recorded_choice(self.store.catalog.info(), modality.value)
        recorded = self._recorded[modality]
        planned = _reselection(self.store, modality, n, recorded, budget=self.budget, growth=self.growth)
        if planned is None:
            return
        choice, rebuild = planned
        if not rebuild:
            self.store.catalog.set_info(**choice_info(choice, modality.value))
            self._recorded[modality] = choice
            return
        log.info("%s index: %d vectors (was %s): building %s in the background", modality.value, n,
                 recorded.n_vectors if recorded else "never chosen", choice.kind)
        outcome: dict[str, Any] = {"from": n}

        def build() -> None:
            try:
                outcome["built"] = build_from_store(self.store, modality, choice)
            except Exception as exc:  # the run goes on with the index it has; the end of the run tries again
                log.warning("background build of the %s index (%s) failed: %s", modality.value, choice.kind, exc)
                outcome["error"] = exc

        thread = threading.Thread(target=build, name=f"mmsearch-reselect-{modality.value}", daemon=True)
        self._running[modality] = (thread, outcome)
        thread.start()

    def finish(self) -> None:
        """Wait for builds still running and swap them in."""
        for thread, _ in list(self._running.values()):
            thread.join()
        self._swap_finished()

    def _swap_finished(self) -> None:
        for modality, (thread, outcome) in list(self._running.items()):
            if thread.is_alive():
                continue
            del self._running[modality]
            if "built" not in outcome:
                self._failed.add(modality)
                self.notes.append(f"{modality.value} index: the background rebuild failed ({outcome['error']}); "
                                  f"kept the current one")
                continue
            index, final = outcome["built"]
            added, removed = self.store.reconcile(modality, index)
            final = final.with_(n_vectors=len(index))
            self.store.replace_index(modality, index)
            self.store.catalog.set_info(**choice_info(final, modality.value))
            self._recorded[modality] = final
            self.notes.append(f"{modality.value} index re-chosen in the background: {final.summary()}, built from "
                              f"{outcome['from']:,} vectors while indexing went on (+{added:,} -{removed:,} "
                              f"caught up at the swap)")
            log.info(self.notes[-1])


def reindex(store: "Store", modality: Modality | str, kind: str = "auto", *,
            budget: int | str | None = None, progress: Progress | None = None) -> IndexChoice | None:
    """Rebuild ``modality``'s index as ``kind`` ('auto': chosen for the collection) from stored vectors."""
    modality = Modality(modality)
    dim = store.dim(modality)
    n = store.vector_count(modality) if dim is not None else 0
    if not n:
        return None
    limit = _budget(store, budget)
    if kind == "auto":
        choice = choose_index(n, dim, limit, **_machine())
    else:
        index_class(kind).check_available()
        choice = manual_choice(kind, n, dim, limit)
    return _install(store, modality, choice, progress)


def describe_choice(choice: IndexChoice) -> str:
    return f"{choice.summary()}: {choice.reason}"


__all__ = ["BackgroundReselect", "StreamingExact", "build_from_store", "describe_choice", "maybe_reselect",
           "recall_at_k", "reindex", "tune", "params_for", "format_bytes"]
