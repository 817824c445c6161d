"""Making sure a store has the exported towers that answer its queries without torch.

Three towers can be exported (``export``, ``image_export``, ``clap_export``): the image model's text and
image towers, wanted when the store has image or text vectors, and the audio model's text tower, wanted
when it has audio vectors. Each one missing, damaged or made for another model is exported again.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ModelLoadError
from .base import ModelIdentity
from .clap_exported import CLAP_TEXT
from .exported import ExportUnusable, check_export
from .image_exported import check_image_export

log = logging.getLogger(__name__)


def ensure_exports(folder: Path, clip: ModelIdentity | None, clap: ModelIdentity | None, *,
                   load_clip: Callable[[], Any], load_clap: Callable[[], Any],
                   sentences: Callable[[], Sequence[str]]) -> str | None:
    """Export, into the store ``folder``, each tower of ``clip`` (the image model, or None when its towers
    answer no queries) and ``clap`` (likewise) that has no usable export; the models are loaded
    (``load_*``) only for what must be exported, and ``sentences`` checks text towers. Returns a note on
    what could not be exported (those queries will load torch), or None."""
    from .clap_export import export_clap_text
    from .export import export_clip_text
    from .image_export import export_clip_image

    towers = (  # the model, whether its export is usable, how to make it, what loads torch without it
        (clip, lambda: check_export(folder, clip), lambda: export_clip_text(load_clip(), folder, sentences()),
         "text queries will load the torch model: its text tower"),
        (clip, lambda: check_image_export(folder, clip), lambda: export_clip_image(load_clip(), folder),
         "image queries will load the torch model: its image tower"),
        (clap, lambda: check_export(folder, clap, CLAP_TEXT),
         lambda: export_clap_text(load_clap(), folder, sentences()),
         "text queries will load the torch audio model: its text tower"))
    notes = []
    for identity, check, export, what in towers:
        if identity is None:
            continue
        try:
            check()
            continue
        except ExportUnusable:
            pass
        try:
            export()
        except (ExportUnusable, ModelLoadError) as exc:
            log.warning("not exported: %s", exc)
            notes.append(f"{what} could not be exported ({exc.reason})")
    return "; ".join(notes) or None
