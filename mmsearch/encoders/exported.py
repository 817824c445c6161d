"""A model's text tower exported to ONNX, answering queries without torch or open_clip.

An export is a folder in the store (``exports/clip-text/``) written at index time by ``encoders.export``:

* ``export.json``: what the export is (format, the model's spec and fingerprint, context length, the
  special token ids) and the names of the files below; written last, so it is the export's commit point;
* ``model-<id>.onnx``: the text tower after its token embedding (inputs ``ids`` (n, length) int64 and
  ``embedded`` (n, length, width) float32; output unit vectors), its graph optimised once at export. With
  ``dynamic_length`` the ids are cut after the batch's longest text (a short query runs a short sequence:
  ViT-B-32's tower takes ~10 ms instead of ~55 for the full 77-token context); older exports take all 77;
* ``embedding-<id>.npy``: the token embedding table, read memory-mapped (a query touches ~10 of its rows,
  where loading it into the graph cost a third of the session's load time);
* ``tokenizer-<id>.json``: open_clip's BPE vocabulary and merges as a Hugging Face ``tokenizers`` file.

Query time needs only numpy, onnxruntime, tokenizers and ftfy. Anything wrong with an export (missing,
damaged, made for another model, an unknown format) raises ``ExportUnusable`` with the reason, and the
caller falls back to the torch model.
"""
from __future__ import annotations

import html
import json
import logging
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import ModelIdentity, TextEncoding, l2_normalise

log = logging.getLogger(__name__)

EXPORTS = "exports"
"""The store's sub-folder that holds one folder per exported tower."""
CLIP_TEXT = "clip-text"
FORMAT = 1
MIN_COSINE = 0.9999
"""An export whose vectors are further than this from the torch model's (cosine) is not used."""


class ExportUnusable(Exception):
    """An export that cannot answer for the store's model; ``reason`` says why, in a few words."""

    def __init__(self, folder: Path, reason: str):
        self.folder, self.reason = Path(folder), reason
        super().__init__(f"{self.folder}: {reason}")


@dataclass(frozen=True)
class ExportRecord:
    """The contents of ``export.json``."""

    format: int
    tower: str
    spec: str
    fingerprint: str
    dim: int
    context_length: int
    sot_id: int
    eot_id: int
    model: str
    embedding: str
    tokenizer: str
    min_cosine: float
    """The lowest cosine to the torch model on the export's check sentences."""
    checked: int
    """How many sentences the export was checked on (tokens and vectors)."""
    dynamic_length: bool = False
    """The graph takes sequences of any length up to ``context_length`` (else exactly that length)."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Bytes of each file when the export was committed: a file of another size is damaged (empty in
    exports made before they were recorded)."""

    @classmethod
    def read(cls, folder: Path) -> "ExportRecord":
        return read_record(cls, folder, FORMAT)

    def files(self) -> tuple[str, str, str]:
        return self.model, self.embedding, self.tokenizer


def read_record(cls, folder: Path, format: int):
    """The dataclass ``cls`` read from ``folder``'s ``export.json``, for the fields this mmsearch knows (a
    record written by a later one, with fields added in the same format, still reads); ``ExportUnusable``
    when it is missing, unreadable or in another format."""
    path = Path(folder) / "export.json"
    if not path.is_file():
        raise ExportUnusable(folder, "was never made")
    names = {item.name for item in fields(cls)}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = cls(**{key: value for key, value in data.items() if key in names})
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ExportUnusable(folder, f"has an unreadable export.json ({str(exc).splitlines()[0][:120]})") from None
    if record.format != format:
        raise ExportUnusable(folder, f"is in format {record.format}, this mmsearch reads {format}")
    return record


def export_folder(store_folder: Path, tower: str = CLIP_TEXT) -> Path:
    return Path(store_folder) / EXPORTS / tower


def check_export(store_folder: Path, identity: ModelIdentity, tower: str = CLIP_TEXT) -> ExportRecord:
    """The record of ``tower``'s export in a store when it was made for the model ``identity`` names and
    its files are there with their committed sizes (without loading them); else ``ExportUnusable`` says why."""
    folder = export_folder(store_folder, tower)
    record = ExportRecord.read(folder)
    if record.fingerprint != identity.fingerprint:
        raise ExportUnusable(folder, f"was made for {record.spec!r}, not the store's model {identity.spec!r}")
    problem = damaged_files(folder, record.files(), record.sizes)
    if problem:
        raise ExportUnusable(folder, problem)
    return record


def damaged_files(folder: Path, names: Sequence[str], sizes: dict[str, int]) -> str:
    """What is wrong with an export's files ('' when nothing): missing, or not the size they were
    committed with (truncated or overwritten; the next index run makes them again)."""
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        return f"is missing {', '.join(missing)}"
    changed = [name for name in names if name in sizes and (folder / name).stat().st_size != sizes[name]]
    if changed:
        return f"has a damaged {', '.join(changed)} (not the size it was committed with)"
    return ""


def summary(exc: Exception) -> str:
    """An error as ``Type: its first line``, short enough for a note."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


WARM_AFTER = 3
"""Queries after which a ``WarmingSession`` loads its prepacked session."""


def open_session(path: Path, *, prepack: bool = True):
    """An onnxruntime CPU session on a graph optimised at export (so not optimised again here), its weights
    prepacked for the matrix kernels unless ``prepack`` is False (see ``WarmingSession``)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.disable_prepacking", "0" if prepack else "1")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class WarmingSession:
    """An onnxruntime session for a process's first queries, and a faster one for the rest. Prepacking the
    weights (laying them out for the matrix kernels) costs a session 50-90 ms more to load and halves a
    short query (ViT-B-32's text tower on two AVX2 cores: 18 -> 8 ms): a one-query process (the CLI) does
    without it; a process that has asked ``WARM_AFTER`` queries (the Python API, a server) loads the
    prepacked session on a thread and uses it from then on (unless ``warm`` is False: an export's own checks,
    whose encoder is dropped when they end)."""

    def __init__(self, path: Path, *, warm: bool = True):
        self.path, self.warm = path, warm
        self._session = open_session(path, prepack=False)
        self._runs = 0
        self.warming: threading.Thread | None = None
        """The thread loading the prepacked session, once started."""
        self.prepacked = False

    def run(self, outputs, feed):
        self._runs += 1
        if self._runs == WARM_AFTER and self.warm:
            self.warming = threading.Thread(target=self._prepack, name="mmsearch-prepack")
            self.warming.start()  # not a daemon: a process ending meanwhile waits for it (well under a second)
        return self._session.run(outputs, feed)

    def _prepack(self) -> None:
        try:
            self._session, self.prepacked = open_session(self.path), True
        except Exception as exc:  # the first session keeps answering
            log.info("%s: no prepacked session (%s)", self.path, summary(exc))


def load_files(folder: Path, record: ExportRecord, *, warm: bool = True):
    """An export's ``tokenizers`` tokenizer, token embedding table (memory-mapped) and onnxruntime session
    (a ``WarmingSession``, ``warm`` or not); ``ExportUnusable`` when any of them cannot be loaded."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / record.tokenizer))
        embedding = np.load(folder / record.embedding, mmap_mode="r")
        session = WarmingSession(folder / record.model, warm=warm)
    except Exception as exc:  # a missing or damaged file, whatever the library says about it
        raise ExportUnusable(folder, f"cannot be loaded ({summary(exc)})") from None
    if embedding.ndim != 2 or embedding.dtype != np.float32:
        raise ExportUnusable(folder, f"has a token embedding of shape {embedding.shape}")
    return tokenizer, embedding, session


def trim(ids: np.ndarray) -> np.ndarray:
    """(n, context) ids cut after the last token of the longest text (the rest is padding)."""
    length = int(np.max(np.nonzero(ids.any(axis=0))[0], initial=0)) + 1
    return ids[:, :length]


def clean_text(text: str) -> str:
    """open_clip's text cleaning ('lower'): fix mojibake (ftfy), unescape HTML twice, collapse whitespace,
    lower-case. Done here in Python, exactly as open_clip does, before the BPE. ftfy leaves printable ASCII
    without '&' as it is, so such a text (most queries) skips it, and its import (50 ms)."""
    if not (text.isascii() and text.isprintable() and "&" not in text):
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class ExportedTextEncoder:
    """``encode_texts`` (and ``identity``, ``context_length``) of a text tower exported to ONNX."""

    def __init__(self, folder: Path, record: ExportRecord, identity: ModelIdentity, *, warm: bool = True):
        self.folder, self.record, self.identity = Path(folder), record, identity
        self.context_length = record.context_length
        self._tokenizer, self._embedding, self._session = load_files(self.folder, record, warm=warm)

    @classmethod
    def open(cls, store_folder: Path, identity: ModelIdentity, tower: str = CLIP_TEXT) -> "ExportedTextEncoder":
        """The export of ``tower`` in a store, if it was made for the model ``identity`` names."""
        record = check_export(store_folder, identity, tower)
        return cls(export_folder(store_folder, tower), record, identity)

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, tuple[bool, ...]]:
        """(n, context) int64 ids as open_clip makes them: start, BPE tokens, end, zeros; a text too long
        keeps its first tokens and ends with the end token. And, per text, whether it was cut."""
        encoded = self._tokenizer.encode_batch([clean_text(text) for text in texts], add_special_tokens=False)
        ids = np.zeros((len(texts), self.context_length), np.int64)
        truncated = []
        for row, tokens in enumerate(encoded):
            sequence = [self.record.sot_id, *tokens.ids, self.record.eot_id]
            truncated.append(len(sequence) > self.context_length)
            if truncated[-1]:
                sequence = sequence[:self.context_length]
                sequence[-1] = self.record.eot_id
            ids[row, :len(sequence)] = sequence
        return ids, tuple(truncated)

    def encode_texts(self, texts: Sequence[str]) -> TextEncoding:
        texts = list(texts)
        if not texts:
            return TextEncoding(np.zeros((0, self.identity.dim), np.float32), ())
        ids, truncated = self.token_ids(texts)
        if self.record.dynamic_length:
            ids = trim(ids)
        try:
            embedded = np.ascontiguousarray(self._embedding[ids], dtype=np.float32)
            vectors = self._session.run(None, {"ids": ids, "embedded": embedded})[0]
        except Exception as exc:  # a graph that loads but does not run, a truncated embedding file...
            raise ExportUnusable(self.folder, f"failed to run ({summary(exc)})") from None
        return TextEncoding(l2_normalise(vectors), truncated)
