"""The audio model's (CLAP's) text tower exported to ONNX: the audio side of text queries without torch or
transformers.

An export is a folder in the store (``exports/clap-text/``) written at index time by ``encoders.clap_export``,
laid out as the image model's (see ``exported``; the same ``ExportRecord``, its ``sot_id``/``eot_id`` are
RoBERTa's ``<s>``/``</s>``):

* ``model-<id>.onnx``: RoBERTa after its word embedding, with its pooler, CLAP's text projection and L2
  normalisation (inputs ``ids`` and ``mask`` (n, length) int64 and ``embedded`` (n, length, width) float32,
  ``length`` free: a batch is as long as its longest text, as transformers pads it, so a short query is cheap);
* ``embedding-<id>.npy``: the word embedding table, read memory-mapped;
* ``tokenizer-<id>.json``: the model's own fast tokenizer with its truncation (77 tokens) and padding set
  in it, so that ``tokenizers`` alone gives transformers' ids and attention mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .base import ModelIdentity, TextEncoding, l2_normalise
from .exported import ExportRecord, ExportUnusable, check_export, export_folder, load_files, summary

CLAP_TEXT = "clap-text"


class ExportedClapTextEncoder:
    """``encode_texts`` (and ``identity``) of CLAP's exported text tower, as ``ClapEncoder.encode_texts``."""

    def __init__(self, folder: Path, record: ExportRecord, identity: ModelIdentity, *, warm: bool = True):
        self.folder, self.record, self.identity = Path(folder), record, identity
        self._tokenizer, self._embedding, self._session = load_files(self.folder, record, warm=warm)

    @classmethod
    def open(cls, store_folder: Path, identity: ModelIdentity) -> "ExportedClapTextEncoder":
        """The store's export, if it was made for the audio model ``identity`` names."""
        record = check_export(store_folder, identity, CLAP_TEXT)
        return cls(export_folder(store_folder, CLAP_TEXT), record, identity)

    def tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, tuple[bool, ...]]:
        """(n, length) int64 ids and attention mask as the model's tokenizer makes them (padding to the
        longest text, cut to the context), and, per text, whether it was cut."""
        encoded = self._tokenizer.encode_batch(list(texts))
        ids = np.array([tokens.ids for tokens in encoded], np.int64)
        mask = np.array([tokens.attention_mask for tokens in encoded], np.int64)
        return ids, mask, tuple(bool(tokens.overflowing) for tokens in encoded)

    def encode_texts(self, texts: Sequence[str]) -> TextEncoding:
        texts = list(texts)
        if not texts:
            return TextEncoding(np.zeros((0, self.identity.dim), np.float32), ())
        ids, mask, truncated = self.tokens(texts)
        try:
            embedded = np.ascontiguousarray(self._embedding[ids], dtype=np.float32)
            vectors = self._session.run(None, {"ids": ids, "mask": mask, "embedded": embedded})[0]
        except Exception as exc:  # a graph that loads but does not run, a truncated embedding file...
            raise ExportUnusable(self.folder, f"failed to run ({summary(exc)})") from None
        return TextEncoding(l2_normalise(vectors), truncated)
