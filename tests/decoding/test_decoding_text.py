"""Text decoding: encodings, binary refusal, passages with overlap."""
from __future__ import annotations

import pytest

from mmsearch.decoding.text import load_passages, read_text, split_passages
from mmsearch.errors import DecodeError


def test_utf8_and_bom_variants(tmp_path):
    for name, data in {"a.txt": "héllo wörld".encode(), "b.txt": "\ufeffhéllo wörld".encode(),
                       "c.txt": "héllo wörld".encode("utf-16")}.items():
        (tmp_path / name).write_bytes(data)
        assert read_text(tmp_path / name) == "héllo wörld"


def test_legacy_encoding_falls_back(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("Le café est très bon, déjà vu à la crème brûlée.".encode("cp1252"))
    assert "café" in read_text(path)


def test_binary_data_named_txt_is_refused(tmp_path):
    path = tmp_path / "fake.txt"
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DecodeError, match="binary"):
        read_text(path)


def test_empty_text_is_refused(tmp_path):
    path = tmp_path / "empty.md"
    path.write_text("   \n\n  ")
    with pytest.raises(DecodeError, match="empty"):
        load_passages(path)


def test_passages_overlap_and_cover_everything():
    words = [f"w{i}" for i in range(200)]
    passages = split_passages(" ".join(words), words=48, overlap=12)
    assert [p.ordinal for p in passages] == list(range(len(passages)))
    first, second = passages[0].text.split(), passages[1].text.split()
    assert len(first) == 48 and first[-12:] == second[:12]
    covered = {w for p in passages for w in p.text.split()}
    assert covered == set(words)


def test_short_text_is_one_passage():
    assert [p.text for p in split_passages("just a few   words\nhere")] == ["just a few words here"]
