"""Check a store for anything its catalog, its stored vectors and its index files disagree on, and
repair what can be repaired from what the store still holds.

The catalog is the truth: an index file is derived data (rebuilt from the stored vectors), and a
catalog row that lost its vector is dropped so that the next ``mmsearch index`` embeds the file again.
Findings are errors (the store answers wrongly or loses data until repaired) or warnings (harmless
lag or leftovers that opening the store copes with, e.g. an index file saved before the last commits).
Every catalog read is one snapshot; a repair holds the store's writer lock and one write transaction.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from ..atomic import leftover_temp_files
from ..encoders.clap_exported import CLAP_TEXT, ExportedClapTextEncoder
from ..encoders.exported import CLIP_TEXT, EXPORTS, ExportedTextEncoder, ExportUnusable
from ..encoders.image_exported import CLIP_IMAGE, ExportedImageEncoder
from ..errors import MMSearchError
from ..index.factory import open_index
from ..index.faiss_base import sidecar_path
from ..records import INDEX_MODALITIES, Modality
from .backends import open_milvus, uses_milvus
from .folder import LOCK_NAME, Store, previous_path, shadow_path
from .reads import CatalogReader

log = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"
SAMPLE_CHECK = 64
"""Index vectors compared with the stored ones, per modality (catches an index that holds other vectors)."""
_UNREPAIRABLE = frozenset({"reembed-leftover", "no-model-recorded", "catalog-integrity", "export-unusable",
                           "backend-unreachable"})


@dataclass(frozen=True)
class Finding:
    code: str
    """Stable identifier, e.g. ``segments-without-vectors``, ``index-behind``."""
    severity: str
    """``error`` or ``warning``."""
    message: str
    count: int = 1
    modality: str | None = None
    repaired: bool = False


@dataclass(frozen=True)
class VerifyReport:
    store: str
    findings: tuple[Finding, ...]
    checked: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per modality: files, segments, vectors in the catalog and ids in the index file."""
    repair: bool = False
    writer_active: bool = False
    """Another process held the writer lock (findings of type warning may be its work in progress)."""

    @property
    def problems(self) -> tuple[Finding, ...]:
        """Errors still standing (not repaired)."""
        return tuple(f for f in self.findings if f.severity == ERROR and not f.repaired)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Doomed:
    """What a repair deletes from the catalog, gathered before the write transaction."""

    segments: set[int] = field(default_factory=set)
    vectors: set[int] = field(default_factory=set)
    items: set[int] = field(default_factory=set)
    modalities: set[Modality] = field(default_factory=set)


def verify_store(store: Store, *, repair: bool = False) -> VerifyReport:
    """Check ``store``; with ``repair`` (which takes the writer lock, or raises StoreLockedError) fix what
    was found: catalog rows without their vectors are dropped, index files rebuilt or re-saved, temp files
    removed."""
    if repair:
        store.acquire_writer()
    writer_active = not repair and _writer_active(store)
    findings: list[Finding] = []
    doomed = _Doomed()
    with store.catalog.snapshot() as read:
        findings += _check_catalog(store, read, doomed)
        checked = _counts(read)
    rebuild: set[Modality] = set(doomed.modalities)
    resave: set[Modality] = set()
    for modality in INDEX_MODALITIES:
        found, action = _check_index_file(store, modality, checked.setdefault(modality.value, {}))
        findings += found
        if action == "rebuild":
            rebuild.add(modality)
        elif action == "resave":
            resave.add(modality)
    findings += _check_leftovers(store)
    findings += _check_export(store, checked)
    if repair:
        findings = _repair(store, findings, doomed, rebuild, resave)
    for finding in findings:
        log.info("%s %s: %s", finding.severity, finding.code, finding.message)
    return VerifyReport(str(store.path), tuple(findings), checked, repair, writer_active)


def rebuild_indexes(store: Store) -> dict[str, int]:
    """Rebuild every index file from the stored vectors (takes the writer lock); returns vectors per modality."""
    store.acquire_writer()
    built: dict[str, int] = {}
    for modality in INDEX_MODALITIES:
        if store.dim(modality) is None:
            _remove_index_file(store, modality)
            continue
        index = store.rebuild_index(modality)
        built[modality.value] = len(index) if index is not None else 0
    return built


# -- catalog ---------------------------------------------------------------------------------------------
def _check_catalog(store: Store, read: CatalogReader, doomed: _Doomed) -> list[Finding]:
    findings: list[Finding] = []
    integrity = read.integrity_problems()
    if integrity:
        findings.append(Finding("catalog-integrity", ERROR, "SQLite reports damage: " + "; ".join(integrity[:3])
                                + " (restore the store from a backup or re-index into a new store)"))

    def doom_segments(ids: list[int], code: str, message: str) -> None:
        if ids:
            findings.append(Finding(code, ERROR, message.format(n=len(ids)), len(ids)))
            doomed.segments.update(ids)
            doomed.vectors.update(ids)
            doomed.modalities |= read.modalities_of_segments(ids)

    for modality in INDEX_MODALITIES:
        dim = store.dim(modality)
        count, _ = read.segment_count(modality)
        if dim is None:
            if count:
                findings.append(Finding("no-model-recorded", ERROR, f"{count} {modality.value} segments but no model "
                                        f"recorded for them (re-index into a new store)", count, modality.value))
            continue
        doom_segments(read.vectors_of_wrong_size(modality, dim), "vector-wrong-size",
                      f"{{n}} stored {modality.value} vectors are not {dim}-dimensional")

    doom_segments(read.segments_without_item(), "segments-without-item", "{n} segments belong to no file")
    doom_segments(read.segments_of_failed_items(), "segments-of-failed-file",
                  "{n} segments belong to files recorded as failed")
    doom_segments(read.segments_without_vectors(), "segments-without-vectors", "{n} segments have no stored vector")

    stray = read.vectors_without_segments()
    if stray:
        findings.append(Finding("vectors-without-segments", ERROR, f"{len(stray)} stored vectors belong to no segment",
                                len(stray)))
        doomed.vectors.update(stray)

    unknown = read.items_in_unknown_state()
    if unknown:
        findings.append(Finding("item-unknown-state", ERROR, f"{len(unknown)} files have an unknown state "
                                "(dropped by a repair: the next index run retries them)", len(unknown)))
        doomed.items.update(unknown)
    # indexed files left with no segment once the doomed ones are gone
    already = [i for i in read.indexed_items_without_segments(doomed.segments) if i not in doomed.items]
    if already:
        findings.append(Finding("indexed-without-segments", ERROR, f"{len(already)} files are recorded as indexed but "
                                "have no vectors (dropped by a repair: the next index run embeds them)", len(already)))
        doomed.items.update(already)
    return findings


def _counts(read: CatalogReader) -> dict[str, dict[str, int]]:
    files, segs = read.counts()
    vecs = read.vector_counts()
    return {m.value: {"files": files.get(m.value, 0), "segments": segs.get(m.value, 0), "vectors": vecs.get(m.value, 0)}
            for m in Modality}


# -- index files -----------------------------------------------------------------------------------------
def _check_index_file(store: Store, modality: Modality, counts: dict[str, int]) -> tuple[list[Finding], str | None]:
    """Findings for one modality's index file and what a repair should do: 'rebuild', 'resave' or None."""
    if uses_milvus(store):
        return _check_collection(store, modality, counts)
    name = modality.value
    path = store.index_path(modality)
    dim = store.dim(modality)
    wanted_count = counts.get("segments", 0)
    if not path.is_file():
        counts["index"] = 0
        if dim is not None and wanted_count:
            return [Finding("index-missing", WARNING, f"{path.name} is missing; it is rebuilt from the {wanted_count} "
                            "stored vectors when the store is opened", wanted_count, name)], "rebuild"
        return [], None
    if dim is None:
        return [Finding("index-orphan", WARNING, f"{path.name} exists but the store records no {name} model",
                        modality=name)], "rebuild"
    try:
        index = open_index(path)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return [Finding("index-unreadable", ERROR, f"{path.name} cannot be read ({reason})", modality=name)], "rebuild"
    if index.dim != dim:
        return [Finding("index-dim-mismatch", ERROR, f"{path.name} holds {index.dim}-dimensional vectors, the store's "
                        f"model makes {dim}", modality=name)], "rebuild"
    found, action, _ = _check_held(store, modality, index, counts, path.name,
                                   "done in memory whenever the store is opened; a repair saves it")
    return found, action


def _check_collection(store: Store, modality: Modality, counts: dict[str, int]) -> tuple[list[Finding], str | None]:
    """``_check_index_file`` for a store whose vectors are in Milvus: the collection against the catalog,
    and a sample of the files' attributes it holds (what filters run on inside Milvus)."""
    dim = store.dim(modality)
    counts["index"] = 0
    if dim is None:
        return [], None
    try:
        index = open_milvus(store, modality, dim, create=False)
    except MMSearchError as exc:
        return [Finding("backend-unreachable", ERROR, str(exc), modality=modality.value)], None
    if index is None:
        if not counts.get("segments"):
            return [], None
        return [Finding("index-missing", WARNING, f"no Milvus collection for the {counts['segments']} stored "
                        f"{modality.value} vectors; uploaded when a writer opens the store", counts["segments"],
                        modality.value)], "rebuild"
    try:
        label = f"Milvus collection {index.name}"
        found, action, sample = _check_held(store, modality, index, counts, label,
                                            "caught up whenever a writer opens the store; a repair does it now")
        if action == "rebuild":
            return found, action
        held = index.attributes_of(sample)
        wanted = {row[0]: (row[2], int(row[3]), row[4]) for row in store.catalog.segment_files(sample)}
        stale = sum(1 for seg_id, (path, mtime, _, kind) in held.items() if wanted.get(seg_id, (path, mtime, kind))
                    != (path, mtime, kind))
        if stale:
            found.append(Finding("index-attributes-stale", ERROR, f"{label}: {stale} of {len(held)} sampled vectors "
                                 "carry another path or modification time than their file's (filters go wrong)",
                                 stale, modality.value))
            return found, "rebuild"
        return found, action
    finally:
        index.close()


def _check_held(store: Store, modality: Modality, index, counts: dict[str, int], label: str,
                catching_up: str) -> tuple[list[Finding], str | None, np.ndarray]:
    """The ids and a sample of the vectors an index holds, against the catalog's; also the sampled ids
    (held and stored both), for further checks of the same vectors."""
    name, dim = modality.value, store.dim(modality)
    held_all = np.asarray(index.ids(), dtype=np.int64)
    held, times = np.unique(held_all, return_counts=True)
    counts["index"] = int(len(held))
    if (times > 1).any():
        doubled = int((times > 1).sum())
        return [Finding("index-duplicate-ids", ERROR, f"{label} holds {doubled} ids more than once",
                        doubled, name)], "rebuild", np.empty(0, np.int64)
    with store.catalog.snapshot() as read:
        wanted = read.segment_ids(modality)
        stale = np.setdiff1d(held, wanted, assume_unique=True)
        missing = np.setdiff1d(wanted, held, assume_unique=True)
        common = np.intersect1d(held, wanted, assume_unique=True)
        sample = common if len(common) <= SAMPLE_CHECK else \
            np.sort(np.random.default_rng(0).choice(common, SAMPLE_CHECK, replace=False))
        stored = read.vectors_for(sample.tolist(), dim) if len(sample) else {}
    differ = _differing(index, stored)
    if differ:
        return [Finding("index-vectors-differ", ERROR, f"{label}: {differ} of {len(stored)} sampled vectors differ "
                        "from the stored ones", differ, name)], "rebuild", sample
    if len(stale) or len(missing):
        return [Finding("index-behind", WARNING, f"{label} lags the catalog: {len(missing)} vectors to add, "
                        f"{len(stale)} to remove ({catching_up})",
                        int(len(missing) + len(stale)), name)], "resave", sample
    return [], None, sample


def _differing(index, stored: dict[int, np.ndarray]) -> int:
    if not stored:
        return 0
    ids = np.fromiter(stored.keys(), dtype=np.int64, count=len(stored))
    try:
        found = index.vectors_of(ids)
    except Exception:  # an index type that cannot give vectors back: nothing to compare
        return 0
    if found is None:
        return 0
    got_ids, got = found
    differ = len(ids) - len(got_ids)
    for seg_id, vector in zip(np.asarray(got_ids).tolist(), np.asarray(got, dtype=np.float32)):
        if not np.allclose(vector, stored[int(seg_id)], atol=1e-3):
            differ += 1
    return differ


def _remove_index_file(store: Store, modality: Modality) -> None:
    path = store.index_path(modality)
    for target in (path, sidecar_path(path)):
        if target.exists():
            target.unlink()


# -- the exported towers ---------------------------------------------------------------------------------
def _check_export(store: Store, checked: dict[str, dict[str, int]]) -> list[Finding]:
    """A store answers text and image queries without torch through its exported towers: the image model's
    text and image towers when it has image or text vectors, the audio model's text tower when it has audio
    vectors. One that is missing, damaged or made for another model means torch is loaded (a warning: the
    next index run exports it again)."""
    findings = []
    for role, tower, modalities, encoder, model in (
            ("clip", CLIP_TEXT, ("image", "text"), ExportedTextEncoder, "model"),
            ("clip", CLIP_IMAGE, ("image", "text"), ExportedImageEncoder, "model"),
            ("clap", CLAP_TEXT, ("audio",), ExportedClapTextEncoder, "audio model")):
        identity = store.model_identity(role)
        if identity is None or not any(checked.get(m, {}).get("segments") for m in modalities):
            continue
        try:
            encoder.open(store.path, identity)
        except ExportUnusable as exc:
            findings.append(Finding("export-unusable", WARNING, f"{EXPORTS}/{tower} {exc.reason}: {'image' if tower == CLIP_IMAGE else 'text'} queries load "
                                    f"the torch {model} until the next index run exports it",
                                    modality="audio" if role == "clap" else None))
    return findings


# -- leftovers -------------------------------------------------------------------------------------------
def _temp_files(store: Store) -> list[Path]:
    return leftover_temp_files(store.path)


def _check_leftovers(store: Store) -> list[Finding]:
    findings = []
    temps = _temp_files(store)
    if temps:
        findings.append(Finding("temp-files", WARNING, f"{len(temps)} temporary files left by an interrupted save "
                                f"({', '.join(p.name for p in temps[:3])}{'...' if len(temps) > 3 else ''})", len(temps)))
    leftovers = ((shadow_path(store.path), "an interrupted re-embedding: running the same re-embedding again "
                                           "resumes it; or delete it"),
                 (previous_path(store.path), "the store as it was before a re-embedding switched it; safe to delete"))
    for shadow, what in leftovers:
        if shadow.exists():
            findings.append(Finding("reembed-leftover", WARNING, f"{shadow} is {what}"))
    return findings


def _writer_active(store: Store) -> bool:
    lock_path = store.path / LOCK_NAME
    if not lock_path.exists():
        return False
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


# -- repair ----------------------------------------------------------------------------------------------
def _repair(store: Store, findings: list[Finding], doomed: _Doomed, rebuild: set[Modality],
            resave: set[Modality]) -> list[Finding]:
    if doomed.segments or doomed.vectors or doomed.items:
        with store.catalog.transaction() as write:
            write.delete_segments(doomed.segments)
            write.delete_vectors(doomed.vectors - doomed.segments)
            write.delete_items(sorted(doomed.items))
    for modality in INDEX_MODALITIES:
        if modality in rebuild:
            if store.dim(modality) is None:
                _remove_index_file(store, modality)
            else:
                store.rebuild_index(modality)
        elif modality in resave:
            index = store.index(modality)
            if index is not None and uses_milvus(store):
                store.reconcile(modality, index)  # the server's collection drifts while loaded; a file does not
                store.save_indexes()
            elif index is not None:
                index.save(store.index_path(modality))
    for temp in _temp_files(store):
        temp.unlink(missing_ok=True)
    return [f if f.code in _UNREPAIRABLE else replace(f, repaired=True) for f in findings]

