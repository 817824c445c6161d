"""When and how a store's index type is re-chosen: at the end of an index or import run, in the
background of a long index run, and on request (``reindex``).

The choice itself is a pure function (``index.selection``) and the building is the index package's
(``index.builder``); this module decides when a collection is due (it has grown or shrunk ``GROWTH``-fold
since its index was chosen), builds from the store's own vectors, swaps the file atomically and records
the choice in the catalog.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from ..index.builder import build_index
from ..index.factory import index_class
from ..index.gpu import faiss_gpu_count
from ..index.selection import (GROWTH, IndexChoice, choose_index, default_memory_budget, manual_choice,
                               needs_reselect, parse_memory_size)
from ..progress import Progress
from ..records import Modality
from .backends import install_milvus, uses_milvus
from .folder import Store

log = logging.getLogger(__name__)

BUDGET_KEY = "index.memory_budget"


def _machine() -> dict[str, Any]:
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except Exception:  # a broken torch install must not stop a CPU index from being chosen
        cuda = False
    return {"faiss_gpus": faiss_gpu_count(), "torch_cuda": cuda}


def _budget(store: Store, budget: int | str | None) -> int:
    if budget is not None:
        value = parse_memory_size(budget)
        store.catalog.set_info(**{BUDGET_KEY: str(value)})
        return value
    recorded = store.catalog.info().get(BUDGET_KEY)
    return int(recorded) if recorded else default_memory_budget()


def _install(store: Store, modality: Modality, choice: IndexChoice, progress: Progress | None) -> IndexChoice:
    if uses_milvus(store):  # the server re-creates its index over the vectors it holds
        return install_milvus(store, modality, choice)
    index, final = build_index(store.stored_vectors(modality), choice, progress=progress, label=modality.value)
    store.replace_index(modality, index)
    store.record_choice(modality, final)
    return final


def _reselection(store: Store, modality: Modality, n: int, recorded: IndexChoice | None, *,
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
        choice = choose_index(n, dim, limit, **({} if uses_milvus(store) else _machine()))  # Milvus: CPU types
    current = recorded.kind if recorded is not None else "flat"
    rebuild = not (choice.kind == current and not index_class(choice.kind).trainable and choice.kind != "hnsw")
    return choice, rebuild


def maybe_reselect(store: Store, modality: Modality | str, *, budget: int | str | None = None,
                   growth: float = GROWTH, progress: Progress | None = None) -> IndexChoice | None:
    """Re-choose ``modality``'s index type when none is recorded or the collection has grown or shrunk
    ``growth``-fold since it was chosen; rebuild from stored vectors only when the type or its build
    parameters change. Returns the new choice, or None when nothing changed."""
    modality = Modality(modality)
    recorded = store.index_choice(modality)
    n = store.vector_count(modality) if store.dim(modality) is not None else 0
    planned = _reselection(store, modality, n, recorded, budget=budget, growth=growth)
    if planned is None:
        return None
    choice, rebuild = planned
    if not rebuild:
        store.record_choice(modality, choice)  # same exact type: nothing to rebuild
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

    def __init__(self, store: Store, *, budget: int | str | None = None, growth: float = GROWTH):
        self.store, self.budget, self.growth = store, budget, growth
        self.notes: list[str] = []
        self._recorded: dict[Modality, IndexChoice | None] = {}
        self._running: dict[Modality, tuple[threading.Thread, dict[str, Any]]] = {}
        self._failed: set[Modality] = set()

    def check(self, modality: Modality, n: int) -> None:
        """Swap in finished builds; start one for ``modality`` if it holds ``n`` vectors and is due."""
        self._swap_finished()
        if modality in self._running or modality in self._failed or uses_milvus(self.store):
            return  # Milvus: re-chosen at the end of the run (the server rebuilds its index in place)
        if modality not in self._recorded:
            self._recorded[modality] = self.store.index_choice(modality)
        recorded = self._recorded[modality]
        planned = _reselection(self.store, modality, n, recorded, budget=self.budget, growth=self.growth)
        if planned is None:
            return
        choice, rebuild = planned
        if not rebuild:
            self.store.record_choice(modality, choice)
            self._recorded[modality] = choice
            return
        log.info("%s index: %d vectors (was %s): building %s in the background", modality.value, n,
                 recorded.n_vectors if recorded else "never chosen", choice.kind)
        outcome: dict[str, Any] = {"from": n}

        def build() -> None:
            try:
                outcome["built"] = build_index(self.store.stored_vectors(modality), choice)
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
            self.store.record_choice(modality, final)
            self._recorded[modality] = final
            self.notes.append(f"{modality.value} index re-chosen in the background: {final.summary()}, built from "
                              f"{outcome['from']:,} vectors while indexing went on (+{added:,} -{removed:,} "
                              f"caught up at the swap)")
            log.info(self.notes[-1])


def reindex(store: Store, modality: Modality | str, kind: str = "auto", *,
            budget: int | str | None = None, progress: Progress | None = None) -> IndexChoice | None:
    """Rebuild ``modality``'s index as ``kind`` ('auto': chosen for the collection) from stored vectors."""
    modality = Modality(modality)
    dim = store.dim(modality)
    n = store.vector_count(modality) if dim is not None else 0
    if not n:
        return None
    limit = _budget(store, budget)
    if kind == "auto":
        choice = choose_index(n, dim, limit, **({} if uses_milvus(store) else _machine()))
    else:
        if not uses_milvus(store):
            index_class(kind).check_available()
        choice = manual_choice(kind, n, dim, limit)
    return _install(store, modality, choice, progress)
