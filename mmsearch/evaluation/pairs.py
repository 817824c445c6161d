"""Pairs files -> ``PairSet``: the captioned media that a cross-modal recall benchmark runs over.

Accepted layouts (detected from the extension and the content, or named with ``format=``):

``jsonl``     one JSON object per line: a media key (``image``/``audio``/``media``/``path``/``file``) and
              ``caption`` or ``text`` (one string) or ``captions`` (a list). Rows may share a media.
              A ``.json`` file holding an array of such objects is read the same way.
``csv``/``tsv`` a header row naming a media column (same names) and a ``caption``/``text`` column;
              TSV fields are taken literally (no quoting), CSV follows RFC 4180 quoting.
``coco``      COCO captions JSON: ``images[{id, file_name}]`` + ``annotations[{image_id, caption}]``;
              images without a caption are dropped (counted in ``PairSet.dropped_media``, logged).
``karpathy``  Karpathy-split JSON: ``images[{filename, filepath?, split, sentences[{raw}]}]``;
              ``split=`` picks the images (``"test"`` by default, ``"train+restval"``, or ``"all"``).

Media paths are resolved against ``root`` (default: the pairs file's folder) with ``Path.resolve()``,
so symlinks are followed and ``..`` is collapsed; the same file named twice is one media.
Media modality comes from the extension (image or audio). Every problem with the file raises
``PairsFormatError`` naming the file, the line and the reason.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from mmsearch.errors import PathNotFoundError, UsageError
from mmsearch.evaluation.pair_formats import (
    MEDIA_KEYS,
    parse_coco,
    parse_delimited,
    parse_jsonl,
    parse_karpathy,
    parse_records,
)
from mmsearch.evaluation.pairset import (
    EmptyPairsError,
    MissingMediaError,
    PairsFormatError,
    PairSet,
    PairSetBuilder,
    check_media_exist,
    missing_media,
)

__all__ = [
    "FORMATS", "EmptyPairsError", "MissingMediaError", "PairSet", "PairsFormatError",
    "check_media_exist", "load_pairs", "missing_media",
]

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "tsv", "coco", "karpathy")


def load_pairs(
    path: Path | str,
    *,
    root: Path | str | None = None,
    format: str | None = None,
    split: str = "test",
    require_media: bool = False,
) -> PairSet:
    """Read a pairs file. ``format`` is one of ``FORMATS`` or None to detect it.

    ``split`` applies to Karpathy files only. With ``require_media`` the media files must exist
    (``MissingMediaError`` lists the first few that do not).
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise UsageError(f"unknown pairs format {format!r}; choose one of {', '.join(FORMATS)}")
    if not path.exists():
        raise PathNotFoundError(path)
    if path.is_dir():
        raise PairsFormatError(path, None, "is a folder, not a pairs file")
    text = _read_text(path)
    builder = PairSetBuilder(path, Path(root) if root is not None else path.parent)
    chosen, document = _detect_format(path, text) if format is None else (format, None)
    if chosen == "jsonl" and text.lstrip().startswith("["):
        chosen = "json-records"  # a JSON array of rows
    if chosen == "jsonl":
        parse_jsonl(builder, text)
    elif chosen in ("csv", "tsv"):
        parse_delimited(builder, text, "\t" if chosen == "tsv" else ",")
    else:
        document = _load_json(path, text) if document is None else document
        if chosen == "json-records":
            parse_records(builder, text, document)
        elif chosen == "coco":
            parse_coco(builder, text, document)
        else:
            parse_karpathy(builder, text, document, split)
    chosen = "jsonl" if chosen == "json-records" else chosen
    pairs = builder.build(chosen)
    log.info("%s: %d media, %d captions (%s)", path, pairs.num_media, pairs.num_captions, chosen)
    if require_media:
        check_media_exist(pairs)
    return pairs


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PairsFormatError(path, raw[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None


def _detect_format(path: Path, text: str) -> tuple[str, object]:
    """(format, parsed JSON document or None) from the extension, then the content."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl", None
    if suffix == ".csv":
        return "csv", None
    if suffix in (".tsv", ".tab"):
        return "tsv", None
    head = text.lstrip()
    if suffix != ".json" and not head.startswith(("{", "[")):
        first_line = head.split("\n", 1)[0]
        return ("tsv" if "\t" in first_line else "csv"), None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and head.startswith("{"):
            return "jsonl", None  # several objects, one per line
        raise PairsFormatError(path, exc.lineno, f"bad JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(document, list):
        return "json-records", document
    if isinstance(document, dict) and "images" in document:
        if "annotations" in document:
            return "coco", document
        images = document["images"]
        if isinstance(images, list) and (not images or (isinstance(images[0], dict) and "sentences" in images[0])):
            return "karpathy", document
    if isinstance(document, dict) and any(k in document for k in MEDIA_KEYS):
        return "json-records", document  # a single row, possibly spread over several lines
    raise PairsFormatError(
        path, 1, "unrecognised JSON layout: expected COCO captions {images, annotations}, "
        "Karpathy split {images: [{filename, sentences}]}, or one object per line"
    )


def _load_json(path: Path, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PairsFormatError(path, exc.lineno, f"bad JSON: {exc.msg} (column {exc.colno})") from None
