"""Re-embed a store with another model without ever putting its current vectors at risk.

The new vectors are built in a shadow store beside the old one (``<store>.reembed-tmp``) while the old
store stays searchable and locked against other writers. Only when the shadow run has finished are the
two folders swapped, atomically where the OS can (Linux ``renameat2(RENAME_EXCHANGE)``), else by two
renames with ``<store>.previous`` kept until the second one has succeeded. A crash before the swap leaves
the old store untouched; running the same command again resumes the shadow run (committed batches are
kept, as in any index run). The old store is deleted once the switch is complete.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..config import Settings
from ..errors import MMSearchError, ModelMismatchError, PathNotFoundError, StoreCorruptError
from ..progress import Progress
from ..records import IndexReport
from ..store.folder import CATALOG_NAME, Store, previous_path, shadow_path
from .discovery import is_under, normalise_root

log = logging.getLogger(__name__)

EngineFactory = Callable[..., object]
"""``Engine.open``-like: ``factory(settings, create=True)`` -> an engine with ``index(paths, progress=)``,
``clip_spec()``, ``clap_spec()``, ``close()``."""


@dataclass(frozen=True)
class ReembedReport:
    store: str
    old_models: dict[str, str]
    """role ('clip', 'clap') -> the spec the old vectors were made with."""
    new_models: dict[str, str]
    report: IndexReport
    """The shadow run's report (files, segments embedded, failures)."""
    carried: int
    """Files of the old store outside the given paths that were re-embedded too."""
    dropped: int
    """Files of the old store that no longer exist (not carried over)."""
    resumed: bool
    """A shadow store left by an interrupted --reembed was continued."""
    atomic_swap: bool


def reembed(settings: Settings, paths: Sequence[Path | str], *, open_engine: EngineFactory,
            progress: Progress | None = None) -> ReembedReport:
    """Re-embed everything the store at ``settings.store`` holds, plus ``paths``, with ``settings``' models
    (each defaults to the store's own), then switch the store over to the new vectors."""
    target = Path(os.path.abspath(Path(settings.store).expanduser()))
    for path in paths:
        normalise_root(path)
    finish_interrupted_switch(target)
    old = Store.open(target)
    try:
        old.acquire_writer()
        old_models = {role: info["spec"] for role in ("clip", "clap") if (info := old.model_for(role)) is not None}
        given = [normalise_root(p) for p in paths]
        carried, dropped = _old_files(old, given)
        shadow_settings = settings.with_(store=shadow_path(target),
                                         model=settings.model or old_models.get("clip"),
                                         audio_model=settings.audio_model or old_models.get("clap"))
        resumed = _prepare_shadow(shadow_settings, open_engine)
        report = _index_shadow(shadow_settings, open_engine, [*given, *carried], progress)
        new_models = _models_of(shadow_path(target))
        old.catalog.close()  # nothing more to read; the writer lock is kept until the switch is done
        atomic = _switch(target)
    finally:
        old.close()
    _remove_store_folder(previous_path(target))
    log.info("%s re-embedded: %s -> %s", target, old_models, new_models)
    return ReembedReport(str(target), old_models, new_models, report, len(carried), dropped, resumed, atomic)


def _old_files(old: Store, given: list[Path]) -> tuple[list[Path], int]:
    """Files the old store holds outside ``given`` that still exist, and how many are gone."""
    roots = {str(p) for p in given}
    carried, dropped = [], 0
    for path_text in sorted(old.catalog.all_items()):
        if is_under(path_text, roots):
            continue
        path = Path(path_text)
        if path.is_file():
            carried.append(path)
        else:
            dropped += 1
    return carried, dropped


def _prepare_shadow(settings: Settings, open_engine: EngineFactory) -> bool:
    """Keep a shadow store left by an interrupted run if it was made with the same models; else start over."""
    shadow = Path(settings.store)
    if not shadow.exists():
        return False
    try:
        engine = open_engine(settings, create=False)
    except MMSearchError as exc:
        log.info("discarding %s: %s", shadow, exc)
        _remove_store_folder(shadow)
        return False
    try:
        engine.clip_spec()
        engine.clap_spec()
        return True
    except ModelMismatchError as exc:
        log.info("discarding %s: %s", shadow, exc)
        engine.close()
        engine = None
        _remove_store_folder(shadow)
        return False
    finally:
        if engine is not None:
            engine.close()


def _index_shadow(settings: Settings, open_engine: EngineFactory, roots: list[Path],
                  progress: Progress | None) -> IndexReport:
    """One index run into the shadow store; a carried file that vanished meanwhile is left out, not fatal."""
    roots = list(roots)
    while True:
        engine = open_engine(settings, create=True)
        try:
            return engine.index(roots, progress=progress)
        except PathNotFoundError as exc:
            if exc.path not in roots:
                raise
            roots.remove(exc.path)
        finally:
            engine.close()


def _models_of(store_path: Path) -> dict[str, str]:
    with Store.open(store_path) as store:
        return {role: info["spec"] for role in ("clip", "clap") if (info := store.model_for(role)) is not None}


# -- the switch -----------------------------------------------------------------------------------------
def _switch(target: Path) -> bool:
    """Put the shadow store in ``target``'s place; returns whether it was one atomic exchange."""
    shadow, previous = shadow_path(target), previous_path(target)
    _remove_store_folder(previous)  # a leftover of an earlier switch
    if _exchange(shadow, target):
        os.rename(shadow, previous)  # shadow now holds the old store
        return True
    os.rename(target, previous)
    os.rename(shadow, target)
    return False


def finish_interrupted_switch(target: Path) -> str | None:
    """Complete or undo a switch cut short between its two renames (only possible without an atomic
    exchange); returns what was done, or None when there was nothing to do."""
    target = Path(target)
    shadow, previous = shadow_path(target), previous_path(target)
    if (target / CATALOG_NAME).exists() or not previous.exists():
        return None
    if (shadow / CATALOG_NAME).exists():  # the shadow is complete: it is only ever renamed once it is
        os.rename(shadow, target)
        _remove_store_folder(previous)
        return "finished"
    os.rename(previous, target)
    return "undone"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where the OS cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _remove_store_folder(path: Path) -> None:
    """Delete a leftover store folder; refuses anything that does not look like an mmsearch store."""
    if not path.exists():
        return
    if path.is_dir() and ((path / CATALOG_NAME).exists() or not any(path.iterdir())):
        shutil.rmtree(path)
        return
    raise StoreCorruptError(path, "expected an mmsearch store folder here; not deleting it")
