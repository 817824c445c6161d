"""The parsers behind ``load_pairs``: JSON lines / JSON rows, CSV / TSV, COCO captions, Karpathy splits.

Each takes a ``PairSetBuilder`` and the file's text and feeds it pairs, raising ``PairsFormatError``
with the line of the offending row or object.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from mmsearch.errors import UsageError
from mmsearch.evaluation.jsonpos import json_line
from mmsearch.evaluation.pairset import EmptyPairsError, PairsFormatError, PairSetBuilder

MEDIA_KEYS = ("image", "audio", "media", "path", "file")
CAPTION_KEYS = ("caption", "text")
CAPTION_LIST_KEY = "captions"
KARPATHY_SPLITS = ("train", "val", "test", "restval")


def _add_row(builder: PairSetBuilder, row: object, line: int, label: str = "row") -> None:
    if not isinstance(row, dict):
        raise builder.error(line, f"{label}: expected a JSON object, got {type(row).__name__}")
    media_key = next((k for k in MEDIA_KEYS if k in row), None)
    if media_key is None:
        raise builder.error(line, f"{label}: missing media key (one of {', '.join(MEDIA_KEYS)})")
    media = builder.media(row[media_key], line, f"{label}: {media_key!r}")
    caption_key = next((k for k in CAPTION_KEYS if k in row), None)
    if caption_key is not None:
        builder.caption(media, row[caption_key], line, f"{label}: {caption_key!r}")
    elif CAPTION_LIST_KEY in row:
        captions = row[CAPTION_LIST_KEY]
        if not isinstance(captions, list) or not captions:
            raise builder.error(line, f"{label}: 'captions' must be a non-empty list of strings")
        for i, caption in enumerate(captions):
            builder.caption(media, caption, line, f"{label}: 'captions'[{i}]")
    else:
        raise builder.error(line, f"{label}: missing caption key (one of {', '.join(CAPTION_KEYS)}, {CAPTION_LIST_KEY})")


def parse_jsonl(builder: PairSetBuilder, text: str) -> None:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise builder.error(number, f"bad JSON: {exc.msg} (column {exc.colno})") from None
        _add_row(builder, row, number)


def parse_records(builder: PairSetBuilder, text: str, document: object) -> None:
    """A JSON array of JSON-lines rows (or one such row)."""
    rows = document if isinstance(document, list) else [document]
    for i, row in enumerate(rows):
        try:
            _add_row(builder, row, 0, f"[{i}]" if isinstance(document, list) else "row")
        except PairsFormatError as exc:
            raise builder.error(json_line(text, [i] if isinstance(document, list) else []), exc.reason) from None


def parse_delimited(builder: PairSetBuilder, text: str, delimiter: str) -> None:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    header: list[str] | None = None
    media_column = caption_column = -1
    row_line = 1
    while True:
        row_line = reader.line_num + 1  # first physical line of the next record
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise builder.error(reader.line_num, f"bad {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}") from None
        if not any(field.strip() for field in row):
            continue
        if header is None:
            header = [name.strip().lower() for name in row]
            media_column = _column(builder, header, MEDIA_KEYS, "media", row_line)
            caption_column = _column(builder, header, CAPTION_KEYS, "caption", row_line)
            continue
        if len(row) != len(header):
            raise builder.error(row_line, f"expected {len(header)} fields as in the header, found {len(row)}")
        media = builder.media(row[media_column], row_line, f"{header[media_column]!r}")
        builder.caption(media, row[caption_column], row_line, f"{header[caption_column]!r}")


def _column(builder: PairSetBuilder, header: list[str], names: Sequence[str], what: str, line: int) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise builder.error(
        line, f"no {what} column: header has {', '.join(repr(h) for h in header)}; expected one of {', '.join(names)}"
    )


# ---------------------------------------------------------------------------------------- JSON datasets

def _records(builder: PairSetBuilder, text: str, document: object, key: str) -> list:
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise builder.error(json_line(text, [key]) if isinstance(document, dict) else 1, f"expected a top-level {key!r} list")
    return document[key]


def _field(builder: PairSetBuilder, text: str, where: list, record: object, key: str) -> object:
    label = "".join(f"[{w}]" if isinstance(w, int) else (f".{w}" if i else w) for i, w in enumerate(where))
    if not isinstance(record, dict):
        raise builder.error(json_line(text, where), f"{label}: expected an object")
    if key not in record:
        raise builder.error(json_line(text, where), f"{label}: missing key {key!r}")
    return record[key]


def parse_coco(builder: PairSetBuilder, text: str, document: object) -> None:
    images = _records(builder, text, document, "images")
    annotations = _records(builder, text, document, "annotations")
    files: dict[object, object] = {}
    lines: dict[object, int] = {}
    for i, image in enumerate(images):
        image_id = _field(builder, text, ["images", i], image, "id")
        file_name = _field(builder, text, ["images", i], image, "file_name")
        if not isinstance(image_id, (int, str)):
            raise builder.error(json_line(text, ["images", i]), f"images[{i}]: id must be a number or string")
        if image_id in files:
            raise builder.error(json_line(text, ["images", i]), f"images[{i}]: duplicate id {image_id!r}")
        files[image_id], lines[image_id] = file_name, i
    captions: dict[object, list[tuple[object, int]]] = {}
    for j, annotation in enumerate(annotations):
        image_id = _field(builder, text, ["annotations", j], annotation, "image_id")
        caption = _field(builder, text, ["annotations", j], annotation, "caption")
        if not isinstance(image_id, (int, str)) or image_id not in files:
            raise builder.error(json_line(text, ["annotations", j]), f"annotations[{j}]: unknown image_id {image_id!r}")
        captions.setdefault(image_id, []).append((caption, j))
    for image_id, file_name in files.items():
        found = captions.get(image_id)
        if not found:
            builder.dropped += 1
            continue
        try:
            media = builder.media(file_name, 0, f"images[{lines[image_id]}].file_name")
        except PairsFormatError as exc:
            raise builder.error(json_line(text, ["images", lines[image_id]]), exc.reason) from None
        for caption, j in found:
            try:
                builder.caption(media, caption, 0, f"annotations[{j}].caption")
            except PairsFormatError as exc:
                raise builder.error(json_line(text, ["annotations", j]), exc.reason) from None


def parse_karpathy(builder: PairSetBuilder, text: str, document: object, split: str) -> None:
    wanted = _splits(split)
    images = _records(builder, text, document, "images")
    seen_splits: set[str] = set()
    for i, image in enumerate(images):
        where = ["images", i]
        if wanted is not None:
            image_split = _field(builder, text, where, image, "split")
            seen_splits.add(str(image_split))
            if image_split not in wanted:
                continue
        filename = _field(builder, text, where, image, "filename")
        sentences = _field(builder, text, where, image, "sentences")
        filepath = image.get("filepath")
        try:
            if not isinstance(filename, str) or (filepath is not None and not isinstance(filepath, str)):
                raise builder.error(0, f"images[{i}]: 'filename' and 'filepath' must be strings")
            if not isinstance(sentences, list):
                raise builder.error(0, f"images[{i}].sentences: expected a list")
        except PairsFormatError as exc:
            raise builder.error(json_line(text, where), exc.reason) from None
        if not sentences:
            builder.dropped += 1
            continue
        try:
            media = builder.media(str(Path(filepath) / filename) if filepath else filename, 0, f"images[{i}].filename")
        except PairsFormatError as exc:
            raise builder.error(json_line(text, where), exc.reason) from None
        for s, sentence in enumerate(sentences):
            raw = _field(builder, text, [*where, "sentences", s], sentence, "raw")
            try:
                builder.caption(media, raw, 0, f"images[{i}].sentences[{s}].raw")
            except PairsFormatError as exc:
                raise builder.error(json_line(text, [*where, "sentences", s]), exc.reason) from None
    if not builder.captions and wanted is not None:
        present = ", ".join(sorted(seen_splits)) or "none"
        raise EmptyPairsError(builder.path, f"no captioned images in split {split!r} (splits present: {present})")


def _splits(split: str) -> frozenset[str] | None:
    if split == "all":
        return None
    wanted = frozenset(part.strip() for part in split.split("+"))
    unknown = wanted - set(KARPATHY_SPLITS)
    if unknown or not wanted:
        raise UsageError(f"unknown Karpathy split {split!r}; use {', '.join(KARPATHY_SPLITS)}, a '+' union of them, or 'all'")
    return wanted
