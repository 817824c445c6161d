"""Which encoder embeds each part of a query: the store's exported towers (onnxruntime, no torch) where
they are usable, else the torch models.

Three exports can answer: the image model's text tower (``clip-text``) and image tower (``clip-image``),
and the audio model's text tower (``clap-text``). Each is opened on first use and kept; one that is
missing, damaged or made for another model, or that loads but fails to run, is given up for the
engine's life, with a note saying why the first time. ``mode`` is the ``query_encoder`` setting: 'auto'
(exports where usable), 'onnx' (an unusable export is an error), 'torch' (never the exports). An audio
file in a query is always embedded by the torch audio model (its audio tower is not exported).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..encoders.base import ModelIdentity
from ..encoders.clap_exported import CLAP_TEXT, ExportedClapTextEncoder
from ..encoders.exported import CLIP_TEXT, ExportedTextEncoder, ExportUnusable, check_export
from ..encoders.image_exported import CLIP_IMAGE, ExportedClip, ExportedImageEncoder, check_image_export
from ..errors import UsageError

_OPENERS = {CLIP_TEXT: ExportedTextEncoder.open, CLIP_IMAGE: ExportedImageEncoder.open,
            CLAP_TEXT: ExportedClapTextEncoder.open}
_SAYS = {CLIP_TEXT: "text queries use the torch model: the exported text tower",
         CLIP_IMAGE: "image queries use the torch model: the exported image tower",
         CLAP_TEXT: "text queries use the torch audio model: its exported text tower"}


class QueryTowers:
    """``clip(query, notes)`` and ``clap(query, notes)``: what embeds a query in each model space."""

    def __init__(self, store_folder: Path, identity: Callable[[str], ModelIdentity | None], mode: str,
                 torch_clip: Callable[[], Any], torch_clap: Callable[[], Any]):
        self.store_folder, self._identity, self.mode = Path(store_folder), identity, mode
        self._torch = {"clip": torch_clip, "clap": torch_clap}
        self._opened: dict[str, Any] = {}
        """Tower name -> its exported encoder, or the ``ExportUnusable`` that says why it is not used."""

    def clip(self, query, notes: list[str]):
        """The image model's encoders for the query's text and image: the exports, or the torch model if one
        needed is unusable. A query with neither (an audio file alone) embeds nothing here; the text export
        stands for the space, so that torch is not loaded for it."""
        wanted = [tower for tower, part in ((CLIP_TEXT, query.text), (CLIP_IMAGE, query.image)) if part is not None]
        wanted = wanted or [CLIP_TEXT]
        found = [self._exported(tower, "clip", notes) for tower in wanted] if self.mode != "torch" else [None]
        if any(encoder is None for encoder in found):
            return self._torch["clip"]()
        return ExportedClip(*found) if len(found) == 2 else found[0]

    def clap(self, query, notes: list[str]):
        """The audio model's encoder for a query's text: its exported text tower unless the query holds an
        audio file (the torch model embeds audio) or the export is unusable."""
        if query.audio is not None or self.mode == "torch":
            return self._torch["clap"]()
        return self._exported(CLAP_TEXT, "clap", notes) or self._torch["clap"]()

    def _exported(self, tower: str, role: str, notes: list[str]):
        if tower not in self._opened:
            try:
                identity = self._identity(role)
                if identity is None:
                    raise ExportUnusable(self.store_folder, "has no model recorded")
                self._opened[tower] = _OPENERS[tower](self.store_folder, identity)
            except ExportUnusable as exc:
                if self.mode == "onnx":
                    raise UsageError(f"{{opt:query_encoder}} onnx: {exc}") from None
                self.give_up(exc, notes, tower, " (an index run exports it)")
        found = self._opened[tower]
        return None if isinstance(found, ExportUnusable) else found

    def give_up(self, why: ExportUnusable, notes: list[str], tower: str | None = None, hint: str = "") -> None:
        """Use the torch model instead of ``tower`` (by default: the tower whose folder raised ``why``) from
        now on, and say why."""
        tower = tower or why.folder.name
        self._opened[tower] = why
        notes.append(f"{_SAYS.get(tower, _SAYS[CLIP_TEXT])} {why.reason}{hint}")


def describe_export(store_folder: Path, identity: ModelIdentity | None, tower: str) -> str:
    """What will embed queries in place of ``tower`` (for ``status``): its export, or torch and why."""
    if identity is None:
        return "-"
    part = "image tower" if tower == CLIP_IMAGE else "text tower"
    try:
        if tower == CLIP_IMAGE:
            record = check_image_export(store_folder, identity)
            return f"onnx (image tower exported, cosine to the model >= {record.min_cosine:.7f})"
        text = check_export(store_folder, identity, tower)
    except ExportUnusable as exc:
        return f"torch (the exported {part} {exc.reason})"
    return (f"onnx (text tower exported, cosine to the model >= {text.min_cosine:.7f}, "
            f"tokens checked on {text.checked:,} sentences)")
