"""Plain-text files -> overlapping passages short enough for the text encoder's context."""
from __future__ import annotations

import codecs
import re
from pathlib import Path

from ..errors import DecodeError
from ..records import Segment

TEXT_EXTENSIONS = frozenset({
    ".txt", ".text", ".md", ".markdown", ".mdown", ".rst", ".org", ".adoc", ".asciidoc", ".tex", ".log",
    ".csv", ".tsv", ".srt", ".vtt", ".nfo", ".me",
})

PASSAGE_WORDS = 48
"""Words per passage: ~48 English words fit CLIP's 77-token context."""
OVERLAP_WORDS = 12
MAX_TEXT_BYTES = 64 * 1024 * 1024

_WORD = re.compile(r"\S+")


def read_text(path: Path, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """UTF-8 (with or without BOM), UTF-16/32 with a BOM, else the best guess of charset_normalizer;
    binary data is refused."""
    return decode_text_bytes(read_bytes(path, max_bytes=max_bytes), path)


def read_bytes(path: Path, *, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a text file, refused past ``max_bytes``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if len(raw) > max_bytes:
        raise DecodeError(path, f"text file larger than {max_bytes // (1024 * 1024)} MiB")
    return raw


def decode_text_bytes(raw: bytes, path: Path) -> str:
    """``read_text``'s charset rules on bytes already read (``path`` only names the file in errors)."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DecodeError(path, f"invalid {encoding} text ({exc.reason} at byte {exc.start})") from exc
    if b"\x00" in raw[:65536]:
        raise DecodeError(path, "binary data, not text (contains NUL bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(raw[:1_000_000]).best()
    if best is None or _control_ratio(str(best)) > 0.05:
        raise DecodeError(path, "binary data or unknown text encoding (not UTF-8)")
    return raw.decode(best.encoding, errors="replace")


def _control_ratio(text: str) -> float:
    if not text:
        return 0.0
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f\v")
    return control / len(text)


def split_passages(text: str, *, words: int = PASSAGE_WORDS, overlap: int = OVERLAP_WORDS) -> list[Segment]:
    """Cut ``text`` into windows of ``words`` words that overlap by ``overlap`` words; whitespace is normalised."""
    if overlap >= words:
        raise ValueError("overlap must be smaller than the passage length")
    tokens = _WORD.findall(text)
    if not tokens:
        return []
    step = words - overlap
    starts = range(0, max(len(tokens) - overlap, 1), step)
    return [Segment(ordinal, text=" ".join(tokens[start:start + words])) for ordinal, start in enumerate(starts)]


def load_passages(path: Path) -> list[Segment]:
    passages = split_passages(read_text(path))
    if not passages:
        raise DecodeError(path, "text file is empty (no words)")
    return passages
