"""Document decoding: PDF, HTML, DOCX and EPUB into passages that remember their page.

Every fixture is built here: PDFs written by hand (a Helvetica text layer pypdf can extract) and encrypted
with pypdf, DOCX files with python-docx, EPUBs with zipfile.
"""
from __future__ import annotations

import io
import logging
import zipfile

import pytest

from media_makers import pdf_bytes, text_pdf

from mmsearch.decoding import documents
from mmsearch.decoding.documents import (
    DOCUMENT_EXTENSIONS, DRM_EPUB, ENCRYPTED_PDF, NO_TEXT, NO_TEXT_LAYER, load_document,
)
from mmsearch.decoding.text import split_passages
from mmsearch.errors import DecodeError


# -- fixtures ------------------------------------------------------------------------------------------------
def page_words(page: int, count: int) -> str:
    words = [f"p{page}w{i}" for i in range(count)]
    return "\n".join(" ".join(words[i:i + 10]) for i in range(0, count, 10))


def encrypted(pdf: bytes, user: str, owner: str | None = None) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user, owner)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write(path, data: bytes | str):
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_docx(path, build) -> None:
    import docx

    document = docx.Document()
    build(document)
    document.save(str(path))


def chapter(body: str, title: str = "The Book") -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
            f"<head><title>{title}</title></head><body>{body}</body></html>")


def make_epub(path, chapters: dict[str, str], *, nav: bool = True, encryption: str | None = None):
    """An EPUB 3 whose spine is ``chapters`` in order (names under OEBPS/), after a navigation document."""
    items = [f'<item id="c{i}" href="{name}" media-type="application/xhtml+xml"/>' for i, name in enumerate(chapters)]
    refs = [f'<itemref idref="c{i}"/>' for i in range(len(chapters))]
    if nav:
        items.append('<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>')
        refs.insert(0, '<itemref idref="nav"/>')
    opf = ('<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
           f'<manifest>{"".join(items)}</manifest><spine>{"".join(refs)}</spine></package>')
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr("META-INF/container.xml",
                         '<?xml version="1.0"?><container version="1.0" '
                         'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                         '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
                         "</rootfiles></container>")
        archive.writestr("OEBPS/content.opf", opf)
        archive.writestr("OEBPS/nav.xhtml", chapter('<nav epub:type="toc"><ol><li>Chapter One</li></ol></nav>'))
        for name, xhtml in chapters.items():
            archive.writestr(f"OEBPS/{name}", xhtml)
        if encryption is not None:
            archive.writestr("META-INF/encryption.xml",
                             '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
                             'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
                             f'<enc:CipherData><enc:CipherReference URI="{encryption}"/></enc:CipherData>'
                             "</enc:EncryptedData></encryption>")
    return path


def reason(path) -> str:
    with pytest.raises(DecodeError) as caught:
        load_document(path)
    assert "\n" not in caught.value.reason and len(caught.value.reason) <= 200
    return caught.value.reason


def texts(passages) -> str:
    return " ".join(passage.text for passage in passages)


# -- the contract ---------------------------------------------------------------------------------------------
def test_the_document_suffixes():
    assert DOCUMENT_EXTENSIONS == {".pdf", ".html", ".htm", ".xhtml", ".docx", ".epub"}


# -- PDF --------------------------------------------------------------------------------------------------------
def test_pdf_passages_carry_their_page_and_never_straddle_one(tmp_path):
    pages = [page_words(1, 100), page_words(2, 30), page_words(3, 70)]
    passages = load_document(write(tmp_path / "book.pdf", text_pdf(pages)))
    expected = [(number, passage.text) for number, text in enumerate(pages, 1) for passage in split_passages(text)]
    assert [(passage.page, passage.text) for passage in passages] == expected
    assert [passage.ordinal for passage in passages] == list(range(len(passages)))
    assert {passage.page for passage in passages} == {1, 2, 3}
    for passage in passages:
        assert {word.split("w")[0] for word in passage.text.split()} == {f"p{passage.page}"}


def test_pdf_pages_without_text_keep_the_physical_page_numbers(tmp_path):
    pdf = text_pdf(["Hello page one", "", "Hello page three"])
    passages = load_document(write(tmp_path / "gap.pdf", pdf))
    assert [(passage.page, passage.text) for passage in passages] == [(1, "Hello page one"), (3, "Hello page three")]


def test_pdf_with_a_user_password_is_refused(tmp_path):
    path = write(tmp_path / "locked.pdf", encrypted(text_pdf(["Secret words"]), "secret"))
    assert reason(path) == ENCRYPTED_PDF


def test_pdf_with_only_an_owner_password_opens(tmp_path):
    path = write(tmp_path / "owner.pdf", encrypted(text_pdf(["Hello page one"]), "", "owner"))
    assert [(passage.page, passage.text) for passage in load_document(path)] == [(1, "Hello page one")]


def test_image_only_pdf_has_no_text_layer(tmp_path):
    scanned = pdf_bytes(["q 612 0 0 792 0 0 cm /Im1 Do Q"] * 2, image=True)
    assert reason(write(tmp_path / "scan.pdf", scanned)) == NO_TEXT_LAYER


def test_truncated_pdf_is_a_one_line_decode_error(tmp_path):
    pdf = text_pdf([page_words(1, 40), page_words(2, 40)])
    assert reason(write(tmp_path / "half.pdf", pdf[:len(pdf) // 2]))
    assert reason(write(tmp_path / "head.pdf", pdf[:12]))


def test_pypdf_warnings_about_a_repaired_pdf_stay_out_of_the_log(tmp_path, caplog):
    pdf = text_pdf(["Hello page one"]).replace(b"startxref\n", b"startxref\n1")  # points nowhere
    level = logging.getLogger("pypdf").level
    with caplog.at_level(logging.WARNING):
        passages = load_document(write(tmp_path / "repaired.pdf", pdf))
    assert [passage.text for passage in passages] == ["Hello page one"]
    assert [record for record in caplog.records if record.name.startswith("pypdf")] == []
    assert logging.getLogger("pypdf").level == level


def test_page_and_text_caps(tmp_path, monkeypatch):
    path = write(tmp_path / "long.pdf", text_pdf([page_words(page, 20) for page in range(1, 6)]))
    monkeypatch.setattr(documents, "MAX_PAGES", 2)
    assert {passage.page for passage in load_document(path)} == {1, 2}
    monkeypatch.setattr(documents, "MAX_PAGES", 2000)
    monkeypatch.setattr(documents, "MAX_TEXT_BYTES", 150)
    passages = load_document(path)
    assert {passage.page for passage in passages} == {1, 2} and len(texts(passages)) <= 150


# -- HTML -------------------------------------------------------------------------------------------------------
def test_html_keeps_only_visible_text_with_the_title_first(tmp_path):
    page = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Café &amp; Bar</title>
        <style>body { color: red }</style><script>var hidden = "<p>no</p>";</script></head>
        <body><noscript>Enable JavaScript</noscript><template><p>templated</p></template>
        <svg><title>icon</title><text>drawn</text></svg>
        <h1>Menu</h1><p>end</p><p>start</p><ul><li>one</li><li>two</li></ul>
        <table><tr><td>cell</td><td>other</td></tr></table>line<br>break he<b>llo</b> 5&nbsp;&euro; &#169;</body></html>"""
    passages = load_document(write(tmp_path / "page.html", page))
    assert [passage.text for passage in passages] == [
        "Café & Bar Menu end start one two cell other line break hello 5 € ©"]
    assert passages[0].page is None


def test_html_without_a_closing_head_still_has_its_body(tmp_path):
    page = "<html><head><title>T</title><body><p>Body words</p>"
    assert texts(load_document(write(tmp_path / "open.htm", page))) == "T Body words"


@pytest.mark.parametrize("raw", [
    '<html><head><meta charset="iso-8859-1"></head><body>café crème</body></html>'.encode("latin-1"),
    '<?xml version="1.0" encoding="ISO-8859-15"?><html><body>café crème</body></html>'.encode("iso-8859-15"),
    "<html><body>café crème</body></html>".encode("utf-16"),
    "<html><body>café crème</body></html>".encode("utf-8"),
])
def test_html_charset_from_bom_declaration_or_guess(tmp_path, raw):
    assert "crème" in texts(load_document(write(tmp_path / "charset.html", raw)))


def test_cyrillic_page_declared_as_windows_1251(tmp_path):
    raw = ('<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
           "<p>привет мир</p>").encode("cp1251")
    assert texts(load_document(write(tmp_path / "ru.html", raw))) == "привет мир"


def test_html_with_no_words_is_empty(tmp_path):
    assert reason(write(tmp_path / "blank.html", "<html><script>x = 1</script></html>")) == NO_TEXT


# -- DOCX -------------------------------------------------------------------------------------------------------
def test_docx_tables_stay_where_they_stand_and_headers_are_skipped(tmp_path):
    def build(document):
        document.sections[0].header.paragraphs[0].text = "Running header"
        document.add_paragraph("Before the table")
        table = document.add_table(rows=2, cols=2)
        table.cell(0, 0).text, table.cell(0, 1).text = "north", "south"
        table.cell(1, 0).merge(table.cell(1, 1)).text = "merged"
        document.add_paragraph("After the table")

    make_docx(tmp_path / "report.docx", build)
    passages = load_document(tmp_path / "report.docx")
    assert [(passage.ordinal, passage.page, passage.text) for passage in passages] == [
        (0, None, "Before the table north south merged After the table")]


def test_docx_that_is_not_a_zip_is_refused(tmp_path):
    assert reason(write(tmp_path / "fake.docx", b"\xd0\xcf\x11\xe0 old word file")) == \
        "not a valid DOCX (not a zip archive)"


def test_empty_docx_has_no_text(tmp_path):
    make_docx(tmp_path / "empty.docx", lambda document: None)
    assert reason(tmp_path / "empty.docx") == NO_TEXT


# -- EPUB -------------------------------------------------------------------------------------------------------
def test_epub_pages_are_chapters_with_text_in_spine_order(tmp_path):
    long = " ".join(f"c2w{i}" for i in range(60))
    path = make_epub(tmp_path / "book.epub", {
        "cover.xhtml": chapter('<img src="cover.jpg"/>'),
        "one.xhtml": chapter("<h1>Chapter One</h1><p>It was a dark night.</p>"),
        "two.xhtml": chapter(f"<h1>Chapter Two</h1><p>{long}</p>"),
    })
    passages = load_document(path)
    assert [passage.ordinal for passage in passages] == list(range(len(passages)))
    expected = [(1, passage.text) for passage in split_passages("Chapter One It was a dark night.")]
    expected += [(2, passage.text) for passage in split_passages(f"Chapter Two {long}")]
    assert [(passage.page, passage.text) for passage in passages] == expected


def test_drm_epub_is_refused_but_obfuscated_fonts_are_not(tmp_path):
    body = {"one.xhtml": chapter("<p>Words</p>")}
    assert reason(make_epub(tmp_path / "drm.epub", body, encryption="OEBPS/one.xhtml")) == DRM_EPUB
    fonts = make_epub(tmp_path / "fonts.epub", body, encryption="OEBPS/fonts/serif.otf")
    assert [passage.text for passage in load_document(fonts)] == ["Words"]


def test_epub_entry_that_inflates_too_far_is_refused(tmp_path, monkeypatch):
    path = make_epub(tmp_path / "bomb.epub", {"one.xhtml": chapter("<p>Words</p>")})
    data = bytearray(path.read_bytes())
    entry = data.rindex(b"OEBPS/one.xhtml") - 46  # the chapter's record in the central directory
    assert data[entry:entry + 4] == b"PK\x01\x02"
    data[entry + 24:entry + 28] = (3 * 1024 ** 3).to_bytes(4, "little")  # declares 3 GiB uncompressed
    assert "zip bomb" in reason(write(tmp_path / "declared.epub", bytes(data)))
    monkeypatch.setattr(documents, "MAX_ENTRY_BYTES", 200)
    big = make_epub(tmp_path / "big.epub", {"one.xhtml": chapter("<p>" + "word " * 100 + "</p>")})
    assert "zip bomb" in reason(big)


def test_epub_without_container_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "bare.epub", "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
    assert reason(tmp_path / "bare.epub") == "not a valid EPUB (no META-INF/container.xml)"


# -- suffixes that lie --------------------------------------------------------------------------------------------
def test_the_content_decides_when_the_suffix_lies(tmp_path):
    html = write(tmp_path / "page.pdf", "<!doctype html><html><body><p>Really a web page</p></body></html>")
    assert [(passage.page, passage.text) for passage in load_document(html)] == [(None, "Really a web page")]
    pdf = write(tmp_path / "paper.html", text_pdf(["Really a PDF"]))
    assert [(passage.page, passage.text) for passage in load_document(pdf)] == [(1, "Really a PDF")]
    make_docx(tmp_path / "report.epub", lambda document: document.add_paragraph("Really a DOCX"))
    assert texts(load_document(tmp_path / "report.epub")) == "Really a DOCX"
    assert reason(write(tmp_path / "notes.pdf", "just some notes")) == "not a PDF (no %PDF- header)"
    assert reason(write(tmp_path / "notes.xyz", "just some notes")) == "not a PDF, HTML, DOCX or EPUB document"
