"""Documents -> passages: PDF (pypdf), HTML and XHTML (the stdlib's ``html.parser``), DOCX (python-docx) and
EPUB (``zipfile``), cut by the same rule as text files (``text.split_passages``).

A passage never straddles a page: each page is split on its own; ordinals run 0..n-1 over the document.
``Segment.page`` is the 1-based physical page of a PDF, and for an EPUB the 1-based chapter number: the
position in the spine among the documents that have text (the navigation document left out). HTML and DOCX
have no pages (``page=None``). Hostile files are bounded by the ``MAX_*`` limits below.
"""
from __future__ import annotations

import codecs
import logging
import posixpath
import re
import threading
import zipfile
import zlib
from contextlib import closing, contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Generator, Iterable, Iterator
from urllib.parse import unquote
from xml.etree import ElementTree

from ..errors import DecodeError
from ..records import Segment
from .text import MAX_TEXT_BYTES, decode_text_bytes, read_bytes, split_passages

log = logging.getLogger(__name__)

_BY_SUFFIX = {".pdf": "pdf", ".html": "html", ".htm": "html", ".xhtml": "html", ".docx": "docx", ".epub": "epub"}
DOCUMENT_EXTENSIONS = frozenset(_BY_SUFFIX)

MAX_PAGES = 2000
"""Pages of a PDF, or chapters of an EPUB, read from one document; later ones are left out (a warning is
logged). At most ``MAX_TEXT_BYTES`` characters of text are kept from one document, likewise."""
MAX_PDF_BYTES = 512 * 1024 * 1024
MAX_ENTRY_BYTES = MAX_TEXT_BYTES
"""Largest uncompressed size of one EPUB entry read (container, package document, chapter)."""
MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024
"""Largest uncompressed size of a whole DOCX (python-docx loads every part, pictures included)."""

ENCRYPTED_PDF = "encrypted PDF (a password is needed)"
NO_TEXT_LAYER = "no text layer (an image-only or scanned PDF; OCR is not done)"
DRM_EPUB = "DRM-protected EPUB"
NO_TEXT = "document has no text"

_MIB = 1024 * 1024
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)  # UTF-32 LE starts as 16 LE
_HTML_START = re.compile(rb"<(?:!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""\s*<\?xml[^>]+?encoding\s*=\s*["']([\w.:-]+)""", re.IGNORECASE)
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f\xad\u200b-\u200d\ufeff]")
_VISIBLE = re.compile(r"\S")


def load_document(path: Path) -> list[Segment]:
    """The passages of a PDF, HTML, DOCX or EPUB file, in order, each with its page where the format has pages.

    The format is told by the content when it can be (``%PDF-``, a zip holding ``word/document.xml`` or an
    EPUB's ``mimetype``, an HTML start tag), else by the suffix. Every failure is a ``DecodeError``."""
    path = Path(path)
    found = _sniff(path)
    kind = found or _BY_SUFFIX.get(path.suffix.lower())
    if kind is None:
        raise DecodeError(path, "not a PDF, HTML, DOCX or EPUB document")
    if kind == "pdf" and found is None:
        raise DecodeError(path, "not a PDF (no %PDF- header)")
    readers = {"pdf": _pdf_pages, "html": _html_pages, "docx": _docx_pages, "epub": _epub_pages}
    passages = _passages(path, readers[kind](path))
    if not passages:
        raise DecodeError(path, NO_TEXT)
    return passages


def _passages(path: Path, pages: Generator[tuple[int | None, str], None, None]) -> list[Segment]:
    """Split each page on its own; stop once the document's text passes ``MAX_TEXT_BYTES`` characters."""
    passages: list[Segment] = []
    left = MAX_TEXT_BYTES
    with closing(pages):
        for page, text in pages:
            if len(text) > left:
                log.warning("%s: over %d MiB of text; the rest is left out", path, MAX_TEXT_BYTES // _MIB)
                text = text[:left]
            left -= len(text)
            for passage in split_passages(_INVISIBLE.sub("", text)):
                passages.append(Segment(len(passages), text=passage.text, page=page))
            if left <= 0:
                break
    return passages


def _sniff(path: Path) -> str | None:
    """The format the bytes show, whatever the suffix says; None when they show none of ours."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1024)
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if b"%PDF-" in head:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return None
        if "word/document.xml" in names:
            return "docx"
        if "mimetype" in names or "META-INF/container.xml" in names:
            return "epub"
        return None
    if _HTML_START.search(head.replace(b"\x00", b"")):  # dropping NULs lets UTF-16 text match too
        return "html"
    return None


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- PDF ----------------------------------------------------------------------------------------------------
class _QuietLogger:
    """Holds a library's logger at ERROR while any thread is inside ``with``; its level comes back when the
    last one leaves. pypdf logs a warning for every oddity it repairs in a damaged file; errors still show."""

    def __init__(self, name: str):
        self.name, self._lock, self._inside, self._level = name, threading.Lock(), 0, logging.NOTSET

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._level = logging.getLogger(self.name).level
                logging.getLogger(self.name).setLevel(logging.ERROR)
            self._inside += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                logging.getLogger(self.name).setLevel(self._level)


_QUIET_PYPDF = _QuietLogger("pypdf")
"""Shared by the threads that decode PDFs at once (a counter, so that none restores the level too early)."""


def _pdf_pages(path: Path) -> Iterator[tuple[int, str]]:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError

    if path.stat().st_size > MAX_PDF_BYTES:
        raise DecodeError(path, f"PDF larger than {MAX_PDF_BYTES // _MIB} MiB")
    with _QUIET_PYPDF:
        try:
            reader = PdfReader(path, strict=False)  # tries the empty user password itself
            locked = reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED
            count = 0 if locked else len(reader.pages)
        except DependencyError as exc:  # AES without the cryptography package
            raise DecodeError(path, f"encrypted PDF ({_one_line(exc)})") from exc
        except Exception as exc:  # a damaged or hostile PDF can make pypdf raise almost anything
            raise DecodeError(path, f"unreadable PDF ({_one_line(exc)})") from exc
    if locked:
        raise DecodeError(path, ENCRYPTED_PDF)
    if count > MAX_PAGES:
        log.warning("%s: %d pages; only the first %d are read", path, count, MAX_PAGES)
    failure: Exception | None = None
    has_text = False
    for number in range(1, min(count, MAX_PAGES) + 1):
        with _QUIET_PYPDF:
            try:
                text = reader.pages[number - 1].extract_text()
            except Exception as exc:  # one damaged page does not cost the others
                log.warning("%s: page %d left out (%s)", path, number, _one_line(exc))
                failure = failure or exc
                continue
        if _VISIBLE.search(text):
            has_text = True
            yield number, text
    if count and not has_text:
        raise DecodeError(path, f"unreadable PDF ({_one_line(failure)})" if failure else NO_TEXT_LAYER)


# -- HTML ---------------------------------------------------------------------------------------------------
_DROPPED = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe", "object"})  # not read
_HEAD_CONTENT = frozenset({"title", "meta", "link", "base", "style", "script", "noscript", "template"})
_INLINE = frozenset("a abbr b bdi bdo big cite code data del dfn em font i ins kbd mark q rp rt ruby s samp "
                    "small span strike strong sub sup time tt u var wbr".split())
"""Elements that sit inside a line ("he<b>llo</b>" is one word); every other tag parts the words around it."""


class _HTMLText(HTMLParser):
    """The text of an HTML page: the first ``<title>`` apart, the visible body text in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.body: list[str] = []
        self._dropping: list[str] = []  # open elements of _DROPPED, innermost last
        self._in_head = self._in_title = self._title_seen = False

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in _DROPPED:
            self._dropping.append(tag)
        if self._dropping:
            return
        if tag == "head":
            self._in_head = True
        elif tag not in _HEAD_CONTENT:
            self._in_head = False  # a page may leave </head> out: body content ends the head
        if tag == "title" and not self._title_seen:
            self._in_title = True
        if tag not in _INLINE:
            self.body.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._dropping:
            del self._dropping[len(self._dropping) - 1 - self._dropping[::-1].index(tag):]
            return
        if self._dropping:
            return
        if tag == "head":
            self._in_head = False
        if tag == "title" and self._in_title:
            self._in_title, self._title_seen = False, True
        if tag not in _INLINE:
            self.body.append(" ")

    def handle_data(self, data: str) -> None:
        if self._dropping:
            return
        if self._in_title:
            self.title.append(data)
        elif not self._in_head:
            self.body.append(data)


def html_text(markup: str, *, title: bool = True) -> str:
    """The visible text of an HTML or XHTML page, words kept apart across block elements; with ``title``,
    the ``<title>`` comes first."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    body = "".join(parser.body)
    return "".join(parser.title) + " " + body if title else body


def decode_html(raw: bytes, path: Path) -> str:
    """HTML bytes -> str: a BOM, else a ``<meta charset>`` or XML ``encoding`` declaration, else the rules
    of text files (UTF-8, else charset_normalizer's guess)."""
    if not raw.startswith(_BOMS):
        declared = _declared_charset(raw[:4096])
        if declared:
            return raw.decode(declared, errors="replace")
    return decode_text_bytes(raw, path)


def _declared_charset(head: bytes) -> str | None:
    match = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    if match is None:
        return None
    try:
        name = codecs.lookup(match.group(1).decode("ascii")).name
    except LookupError:
        return None
    if name.startswith(("utf-16", "utf-32")):
        return "utf-8"  # as browsers do: without a BOM, a page that says UTF-16 is ASCII-compatible
    if name in ("ascii", "iso8859-1"):
        return "cp1252"  # as browsers do: these labels mean windows-1252
    return name


def _html_pages(path: Path) -> Iterator[tuple[None, str]]:
    yield None, html_text(decode_html(read_bytes(path), path))


# -- zip archives (DOCX, EPUB) ------------------------------------------------------------------------------
@contextmanager
def _open_zip(path: Path, kind: str) -> Iterator[zipfile.ZipFile]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DecodeError(path, f"not a valid {kind} (not a zip archive)") from exc
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    with archive:
        yield archive


def _read_entry(path: Path, archive: zipfile.ZipFile, name: str) -> bytes | None:
    """An entry's bytes (None when the archive has no such entry), refused past ``MAX_ENTRY_BYTES``."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    too_large = DecodeError(path, f"{name} inflates to over {MAX_ENTRY_BYTES // _MIB} MiB (a zip bomb?)")
    if info.file_size > MAX_ENTRY_BYTES:
        raise too_large
    try:
        with archive.open(info) as entry:
            data = entry.read(MAX_ENTRY_BYTES + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise DecodeError(path, f"damaged archive ({name}: {_one_line(exc)})") from exc
    if len(data) > MAX_ENTRY_BYTES:
        raise too_large
    return data


# -- DOCX ---------------------------------------------------------------------------------------------------
def _docx_pages(path: Path) -> Iterator[tuple[None, str]]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    with _open_zip(path, "DOCX") as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    if inflated > MAX_ARCHIVE_BYTES:
        raise DecodeError(path, f"DOCX inflates to {inflated // _MIB} MiB, over the "
                                f"{MAX_ARCHIVE_BYTES // _MIB} MiB limit (a zip bomb?)")
    try:
        document = docx.Document(str(path))
        text = " ".join(_docx_blocks(document))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, SyntaxError) as exc:
        raise DecodeError(path, f"unreadable DOCX ({_one_line(exc)})") from exc  # SyntaxError: lxml's
    yield None, text


def _docx_blocks(container) -> Iterator[str]:
    """The paragraphs of the body (or a table cell) in document order, tables where they stand."""
    from docx.table import Table

    for block in container.iter_inner_content():
        if not isinstance(block, Table):
            yield block.text
            continue
        seen = set()
        for row in block.rows:
            for cell in row.cells:
                if cell._tc not in seen:  # a merged cell repeats for every column and row it spans
                    seen.add(cell._tc)
                    yield from _docx_blocks(cell)


# -- EPUB ---------------------------------------------------------------------------------------------------
def _read_xml(path: Path, archive: zipfile.ZipFile, name: str) -> ElementTree.Element:
    data = _read_entry(path, archive, name)
    if data is None:
        raise DecodeError(path, f"not a valid EPUB (no {name})")
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise DecodeError(path, f"unreadable EPUB ({name}: {_one_line(exc)})") from exc


def _named(root: ElementTree.Element, local: str) -> Iterable[ElementTree.Element]:
    """Descendants called ``local`` whatever their namespace (EPUBs in the wild are loose with them)."""
    return (element for element in root.iter() if isinstance(element.tag, str)
            and element.tag.rpartition("}")[2] == local)


def _epub_pages(path: Path) -> Iterator[tuple[int, str]]:
    with _open_zip(path, "EPUB") as archive:
        rootfile = next((element.get("full-path") for element in
                         _named(_read_xml(path, archive, "META-INF/container.xml"), "rootfile")), None)
        if not rootfile:
            raise DecodeError(path, "not a valid EPUB (META-INF/container.xml names no package document)")
        chapters = _spine(_read_xml(path, archive, rootfile), posixpath.dirname(rootfile))
        if "META-INF/encryption.xml" in archive.namelist():
            encrypted = {unquote(reference.get("URI", "")).lstrip("/") for reference in
                         _named(_read_xml(path, archive, "META-INF/encryption.xml"), "CipherReference")}
            if encrypted & set(chapters):  # fonts alone may be obfuscated without DRM
                raise DecodeError(path, DRM_EPUB)
        if len(chapters) > MAX_PAGES:
            log.warning("%s: %d chapters; only the first %d are read", path, len(chapters), MAX_PAGES)
        number = 0
        for name in chapters[:MAX_PAGES]:
            raw = _read_entry(path, archive, name)
            if raw is None:
                log.warning("%s: chapter %s is missing from the archive; left out", path, name)
                continue
            text = html_text(decode_html(raw, path), title=False)  # a chapter's <title> is mostly the book's
            if _VISIBLE.search(text):
                number += 1
                yield number, text


def _spine(package: ElementTree.Element, folder: str) -> list[str]:
    """The archive names of the package's XHTML documents in reading order, the navigation document left out."""
    manifest = {item.get("id"): item for item in _named(package, "item")}
    chapters = []
    for reference in _named(package, "itemref"):
        item = manifest.get(reference.get("idref"))
        if item is None or not item.get("href") or "nav" in (item.get("properties") or "").split():
            continue
        if item.get("media-type") in ("application/xhtml+xml", "text/html"):
            chapters.append(posixpath.normpath(posixpath.join(folder, unquote(item.get("href").split("#")[0]))))
    return chapters
