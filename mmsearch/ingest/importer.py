"""Bulk import of precomputed embeddings, as clip-retrieval writes them, into a store.

clip-retrieval's layout: ``img_emb/img_emb_0.npy`` (and ``text_emb/``) beside ``metadata/metadata_0.parquet``
with columns such as ``image_path``, ``url``, ``caption``. Any number of shards; a shard's metadata is
found by its number. Each row becomes one catalog item with one segment and its vector:

* path: the metadata's path column (``image_path``, ``audio_path``, ``path``, ``filepath``, ``file``,
  ``url``; the first present), else ``NPY-NAME#ROW``; text rows get ``#text`` appended so an image and
  its caption can live in one store;
* the segment's text: the ``caption`` / ``text`` / ``title`` column, when there is one.

Vectors are read memory-mapped and written in chunked transactions (bounded memory at 10M x 512),
L2-normalised; rows that are not finite or are all zero are skipped. The store records the model given
(``model``, without loading it) and refuses vectors of another dimension. At the end the index type is
re-chosen for the new collection size (``store.reselect.maybe_reselect``) and the index is brought up to
date from the stored vectors.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..encoders.base import ModelIdentity
from ..encoders.specs import fingerprint, parse_spec
from ..errors import DimensionMismatchError, PathNotFoundError, UsageError
from ..progress import NoProgress, Progress
from ..records import Modality, Segment
from ..store.catalog import Catalog
from ..store.folder import SPACE_OF, Store
from ..store.reselect import maybe_reselect
from ..store.rows import INDEXED, ItemRow

log = logging.getLogger(__name__)

CHUNK = 20_000
PATH_COLUMNS = ("image_path", "audio_path", "path", "filepath", "file", "url")
TEXT_COLUMNS = ("caption", "text", "title")
FOLDER_MODALITY = {"img_emb": Modality.IMAGE, "image_emb": Modality.IMAGE, "text_emb": Modality.TEXT,
                   "audio_emb": Modality.AUDIO}


@dataclass(frozen=True)
class Shard:
    vectors: Path
    metadata: Path | None = None


@dataclass(frozen=True)
class ImportChunk:
    """Rows ready for the catalog: vectors and, per row, a path and an optional text."""

    vectors: np.ndarray
    paths: Sequence[str]
    texts: Sequence[str | None] | None = None


@dataclass(frozen=True)
class ImportReport:
    modality: str
    rows: int
    added: int
    replaced: int
    skipped: int
    shards: int
    dim: int
    model: str
    seconds: float
    index: str
    """The index type after the import, with its parameters."""
    reason: str = ""


# -- finding shards ------------------------------------------------------------------------------------
def _shard_number(path: Path) -> tuple[int, str]:
    match = re.search(r"(\d+)$", path.stem)
    return (int(match.group(1)) if match else -1, path.name)


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes), key=_shard_number)


def find_shards(sources: Sequence[Path | str], metadata: Sequence[Path | str] | None = None,
                modality: Modality | None = None) -> tuple[list[Shard], Modality | None]:
    """The .npy shards named by ``sources`` (files, folders of .npy files, or a clip-retrieval output
    folder), each paired with its metadata file; and the modality the folder names imply, if any."""
    vector_files: list[Path] = []
    implied: Modality | None = None
    for source in map(Path, sources):
        if not source.exists():
            raise PathNotFoundError(source)
        if source.is_file():
            vector_files.append(source)
            continue
        found = _files(source, (".npy",))
        if not found:
            folders = {name: source / name for name in FOLDER_MODALITY if (source / name).is_dir()}
            wanted = [name for name in folders if modality is None or FOLDER_MODALITY[name] == modality]
            if len(wanted) != 1:
                raise UsageError(f"{source}: no .npy files here" if not wanted else
                                 f"{source}: holds {', '.join(sorted(wanted))}; choose one with {{opt:modality}}")
            found = _files(folders[wanted[0]], (".npy",))
            source = folders[wanted[0]]
        vector_files.extend(found)
        implied = implied or FOLDER_MODALITY.get(source.name)
    for path in vector_files:
        implied = implied or next((m for name, m in FOLDER_MODALITY.items() if path.stem.startswith(name)), None)
    meta_files = _metadata_files(metadata) if metadata else None
    shards = []
    for position, path in enumerate(vector_files):
        shards.append(Shard(path, _pair(path, position, meta_files, len(vector_files))))
    return shards, implied


def _metadata_files(metadata: Sequence[Path | str]) -> list[Path]:
    files: list[Path] = []
    for entry in map(Path, metadata):
        if not entry.exists():
            raise PathNotFoundError(entry)
        files.extend(_files(entry, (".parquet", ".csv")) if entry.is_dir() else [entry])
    return files


def _pair(vectors: Path, position: int, meta_files: list[Path] | None, count: int) -> Path | None:
    number = _shard_number(vectors)[0]
    if meta_files is not None:
        by_number = {_shard_number(m)[0]: m for m in meta_files}
        if number >= 0 and number in by_number and len(by_number) == len(meta_files):
            return by_number[number]
        if len(meta_files) != count:
            raise UsageError(f"{{opt:metadata}}: {len(meta_files)} files for {count} embedding files; give one per shard")
        return meta_files[position]
    sibling = vectors.parent.parent / "metadata"
    for suffix in (".parquet", ".csv"):
        candidate = sibling / f"metadata_{number}{suffix}"
        if number >= 0 and candidate.is_file():
            return candidate
    return None


# -- reading -------------------------------------------------------------------------------------------
def _open_vectors(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as exc:
        raise UsageError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:200]})") from exc
    if array.ndim != 2 or array.shape[1] < 1 or array.dtype.kind != "f":
        raise UsageError(f"{path}: expected a 2-D float array of embeddings, got {array.dtype} {array.shape}")
    return array


def _metadata_batches(path: Path, rows: int, chunk: int) -> Iterator[dict[str, list]]:
    """The metadata's path and text columns, ``chunk`` rows at a time."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.ParquetFile(path)
            names = table.schema_arrow.names
            batches = table.iter_batches(batch_size=chunk, columns=_wanted_columns(names))
        else:
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 24))
            names = reader.schema.names
            batches = reader
    except ImportError as exc:
        raise UsageError(f"{path}: reading metadata needs pyarrow (pip install 'mmsearch[import]')") from exc
    except Exception as exc:
        raise UsageError(f"{path}: unreadable metadata ({str(exc).splitlines()[0][:200]})") from exc
    path_column = next((c for c in PATH_COLUMNS if c in names), None)
    text_column = next((c for c in TEXT_COLUMNS if c in names), None)
    seen = 0
    pending: dict[str, list] = {"path": [], "text": []}
    for batch in batches:
        columns = batch.to_pydict()
        size = batch.num_rows
        pending["path"] += columns[path_column] if path_column else [None] * size
        pending["text"] += columns[text_column] if text_column else [None] * size
        seen += size
        while len(pending["path"]) >= chunk:
            yield {key: value[:chunk] for key, value in pending.items()}
            pending = {key: value[chunk:] for key, value in pending.items()}
    if pending["path"]:
        yield pending
    if rows >= 0 and seen != rows:
        raise UsageError(f"{path}: {seen} metadata rows for {rows} vectors")


def metadata_rows(path: Path) -> int:
    """Rows in a metadata file (parquet: from its footer; CSV: one streaming pass)."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        except ImportError as exc:
            raise UsageError(f"{path}: reading metadata needs pyarrow (pip install 'mmsearch[import]')") from exc
        except Exception as exc:
            raise UsageError(f"{path}: unreadable metadata ({str(exc).splitlines()[0][:200]})") from exc
    return sum(len(batch["path"]) for batch in _metadata_batches(path, -1, 1 << 16))


def _wanted_columns(names: Sequence[str]) -> list[str]:
    return [c for c in (next((c for c in PATH_COLUMNS if c in names), None),
                        next((c for c in TEXT_COLUMNS if c in names), None)) if c]


def shard_chunks(shard: Shard, modality: Modality, chunk: int = CHUNK) -> Iterator[ImportChunk]:
    """One shard as ``ImportChunk``s: memory-mapped vectors with their metadata."""
    array = _open_vectors(shard.vectors)
    meta = _metadata_batches(shard.metadata, len(array), chunk) if shard.metadata else None
    suffix = "#text" if modality == Modality.TEXT else ""
    for start in range(0, len(array), chunk):
        block = np.asarray(array[start:start + chunk], dtype=np.float32)
        rows = range(start, start + len(block))
        columns = next(meta, None) if meta is not None else {"path": [None] * len(block), "text": [None] * len(block)}
        if columns is None or len(columns["path"]) != len(block):
            raise UsageError(f"{shard.metadata}: fewer metadata rows than the {len(array)} vectors")
        paths = [f"{p}{suffix}" if p not in (None, "") else f"{shard.vectors.name}#{row}"
                 for p, row in zip(columns["path"], rows)]
        texts = [None if t is None else str(t) for t in columns["text"]]
        yield ImportChunk(block, paths, texts)
    if meta is not None:
        for _ in meta:  # metadata longer than the vectors: raises
            pass


# -- writing -------------------------------------------------------------------------------------------
def bind_import_model(store: Store, modality: Modality, model: str | None, dim: int, source: str) -> str:
    """Record (or check) the model whose vectors these are; returns its spec."""
    role = SPACE_OF[modality]
    recorded = store.model_for(role)
    if recorded is not None and int(recorded["dim"]) != dim:
        raise DimensionMismatchError(source, dim, int(recorded["dim"]), f"{role} ({recorded['spec']})")
    if model is None:
        if recorded is None:
            raise UsageError(f"{store.path}: a new store needs {{opt:model}} ARCH:WEIGHTS, the model that made these vectors")
        return recorded["spec"]
    spec = parse_spec(model)
    store.bind_model(role, ModelIdentity(str(spec), fingerprint(spec), dim, semantic=not spec.is_random))
    return str(spec) if recorded is None else recorded["spec"]


def write_rows(catalog: Catalog, modality: Modality, paths: Sequence[str], texts: Sequence[str | None],
               vectors: np.ndarray) -> tuple[int, int]:
    """One item (size 0, mtime 0, no content hash: a file mmsearch never read) with one segment and its
    vector per row, in one transaction; a path the catalog holds keeps its item id and has its segments
    replaced, and a path given twice keeps its last row. Returns (added, replaced)."""
    if not len(paths):
        return 0, 0
    latest: dict[str, int] = {}
    for row, path in enumerate(paths):
        latest[path] = row
    block = np.ascontiguousarray(vectors, dtype=np.float32)
    with catalog.transaction() as write:
        existing = write.item_ids_by_path(list(latest))
        if existing:
            write.drop_segments(list(existing.values()))
        item_ids = write.put_items([ItemRow(0, path, modality, 0, 0, None, INDEXED, None) for path in latest],
                                   existing=existing)
        write.add_segments_many([(item_id, modality, (Segment(0, texts[row]),), block[row:row + 1])
                                 for item_id, row in zip(item_ids, latest.values())])
    return len(latest) - len(existing), len(existing)


def import_chunks(store: Store, chunks: Iterable[ImportChunk], modality: Modality, *,
                  progress: Progress | None = None) -> tuple[int, int, int]:
    """Write chunks to the catalog, one transaction each; returns (added, replaced, skipped)."""
    added = replaced = skipped = 0
    for chunk in chunks:
        vectors = chunk.vectors
        norms = np.linalg.norm(vectors, axis=1)
        good = np.isfinite(norms) & (norms > 1e-12) & np.isfinite(vectors).all(axis=1)
        if not good.all():
            skipped += int((~good).sum())
            log.warning("%d rows skipped: not finite, or all zero", int((~good).sum()))
        keep = np.flatnonzero(good)
        unit = (vectors[keep] / norms[keep, None]).astype(np.float32)
        texts = chunk.texts or [None] * len(chunk.paths)
        new, old = write_rows(store.catalog, modality, [chunk.paths[i] for i in keep], [texts[i] for i in keep], unit)
        added, replaced = added + new, replaced + old
        if progress is not None:
            progress.advance(len(chunk.paths))
    return added, replaced, skipped


def import_vectors(store: Store, sources: Sequence[Path | str], *, metadata: Sequence[Path | str] | None = None,
                   modality: Modality | str | None = None, model: str | None = None,
                   memory_budget: int | str | None = None, chunk: int = CHUNK,
                   progress: Progress | None = None) -> ImportReport:
    """Import embedding shards into ``store`` (which must be writable); see the module docstring."""
    started = time.perf_counter()
    progress = progress or NoProgress()
    wanted = Modality(modality) if modality is not None else None
    shards, implied = find_shards(sources, metadata, wanted)
    if not shards:
        raise UsageError("no embedding files to import")
    modality = wanted or implied
    if modality is None:
        raise UsageError("cannot tell what these vectors are: give {opt:modality} image, text or audio")
    arrays = [_open_vectors(s.vectors) for s in shards]
    dims = {a.shape[1] for a in arrays}
    if len(dims) > 1:
        raise UsageError(f"embedding files disagree on the dimension: {sorted(dims)}")
    dim = dims.pop()
    total = sum(len(a) for a in arrays)
    for shard, array in zip(shards, arrays):  # refuse before writing anything
        if shard.metadata is not None and (found := metadata_rows(shard.metadata)) != len(array):
            raise UsageError(f"{shard.metadata}: {found} metadata rows for {len(array)} vectors in {shard.vectors.name}")
    del arrays
    store.acquire_writer()
    spec = bind_import_model(store, modality, model, dim, str(shards[0].vectors))
    progress.start(total, "importing", "vector")
    try:
        added, replaced, skipped = import_chunks(
            store, (c for shard in shards for c in shard_chunks(shard, modality, chunk)), modality, progress=progress)
    finally:
        progress.finish()
    choice = maybe_reselect(store, modality, budget=memory_budget, progress=progress)
    index = store.index(modality)  # reconciled: holds every stored vector
    store.save_indexes()
    recorded = store.index_choice(modality)
    return ImportReport(modality.value, total, added, replaced, skipped, len(shards), dim, spec,
                        round(time.perf_counter() - started, 3), index.describe() if index is not None else "-",
                        (choice or recorded).reason if (choice or recorded) else "")
