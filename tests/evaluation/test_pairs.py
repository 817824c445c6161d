"""Pairs files of every accepted layout, and the line numbers of what is wrong with bad ones."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from mmsearch.errors import PathNotFoundError, UsageError
from mmsearch.evaluation.pairs import (
    EmptyPairsError,
    MissingMediaError,
    PairsFormatError,
    check_media_exist,
    load_pairs,
    missing_media,
)
from mmsearch.records import Modality


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def fails_at(path: Path, line: int | None, reason: str, **kwargs) -> PairsFormatError:
    with pytest.raises(PairsFormatError) as info:
        load_pairs(path, **kwargs)
    error = info.value
    assert error.line == line, str(error)
    assert error.path == path
    assert reason in error.reason, str(error)
    assert str(error).startswith(f"{path}:{line}: " if line is not None else f"{path}: ")
    return error


# ---------------------------------------------------------------------------------------- accepted

def test_jsonl_rows_share_media_and_resolve_against_the_file_folder(tmp_path):
    path = write(tmp_path, "pairs.jsonl", "\n".join([
        '{"image": "img/a.jpg", "caption": "a cat"}',
        '',
        '{"image": "./img/a.jpg", "text": "  a cat on a mat  "}',
        '{"path": "img/b.PNG", "captions": ["a dog", "a brown dog"]}',
    ]) + "\n")
    pairs = load_pairs(path)
    assert pairs.format == "jsonl"
    assert pairs.media == ((tmp_path / "img/a.jpg").resolve(), (tmp_path / "img/b.PNG").resolve())
    assert pairs.captions == ("a cat", "a cat on a mat", "a dog", "a brown dog")
    assert pairs.caption_media.tolist() == [0, 0, 1, 1]
    assert pairs.modality() is Modality.IMAGE
    assert pairs.num_media == 2 and pairs.num_captions == 4 and pairs.dropped_media == 0
    with pytest.raises(ValueError):
        pairs.caption_media[0] = 1  # read-only


def test_root_overrides_the_file_folder_and_audio_is_detected(tmp_path):
    path = write(tmp_path, "pairs.jsonl", '{"audio": "rain.wav", "caption": "rain on a roof"}\n')
    pairs = load_pairs(path, root=tmp_path / "clips")
    assert pairs.media == ((tmp_path / "clips" / "rain.wav").resolve(),)
    assert pairs.modalities == (Modality.AUDIO,)


def test_mixed_modalities_are_refused_when_one_is_asked_for(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"media": "a.jpg", "caption": "x"}\n{"media": "b.flac", "caption": "y"}\n')
    with pytest.raises(UsageError, match="mix audio, image"):
        load_pairs(path).modality()


def test_csv_with_quoted_commas_and_multiline_captions(tmp_path):
    path = write(tmp_path, "pairs.csv", 'id,File,Caption\n1,a.jpg,"a cat, sleeping"\n2,a.jpg,"two\nlines"\n3,b.jpg,plain\n')
    pairs = load_pairs(path)
    assert pairs.format == "csv"
    assert pairs.captions == ("a cat, sleeping", "two\nlines", "plain")
    assert pairs.caption_media.tolist() == [0, 0, 1]


def test_tsv_takes_quotes_literally(tmp_path):
    path = write(tmp_path, "pairs.tsv", 'image\tcaption\na.jpg\t"Hello" said the parrot\n')
    assert load_pairs(path).captions == ('"Hello" said the parrot',)


def test_json_array_of_rows_and_format_sniffing(tmp_path):
    rows = [{"image": "a.jpg", "caption": "x"}, {"image": "b.jpg", "captions": ["y", "z"]}]
    pairs = load_pairs(write(tmp_path, "rows.json", json.dumps(rows, indent=2)))
    assert pairs.format == "jsonl" and pairs.captions == ("x", "y", "z")
    sniffed = load_pairs(write(tmp_path, "pairs.txt", "image\tcaption\na.jpg\tx\n"))
    assert sniffed.format == "tsv"
    lines = load_pairs(write(tmp_path, "lines.json", '{"image": "a.jpg", "caption": "x"}\n{"image": "a.jpg", "caption": "y"}\n'))
    assert lines.format == "jsonl" and lines.num_captions == 2
    forced = load_pairs(write(tmp_path, "pairs.dat", "image,caption\na.jpg,x\n"), format="csv")
    assert forced.format == "csv"
    with pytest.raises(UsageError, match="unknown pairs format"):
        load_pairs(forced.source, format="xml")


def test_bom_is_ignored(tmp_path):
    path = write(tmp_path, "pairs.csv", "\ufeffimage,caption\na.jpg,x\n".encode("utf-8"))
    assert load_pairs(path).captions == ("x",)


COCO = """{"images": [
  {"id": 1, "file_name": "a.jpg"},
  {"id": 2, "file_name": "b.jpg"},
  {"id": 3, "file_name": "lonely.jpg"}
],
"annotations": [
  {"image_id": 2, "caption": "a dog "},
  {"image_id": 1, "caption": "a cat"},
  {"image_id": 2, "caption": "another dog"}
]}
"""


def test_coco_groups_captions_by_image_and_drops_uncaptioned(tmp_path, caplog):
    path = write(tmp_path, "captions.json", COCO)
    with caplog.at_level(logging.WARNING, logger="mmsearch.evaluation"):
        pairs = load_pairs(path, root=tmp_path / "val")
    assert pairs.format == "coco"
    assert pairs.media == ((tmp_path / "val/a.jpg").resolve(), (tmp_path / "val/b.jpg").resolve())
    assert pairs.captions == ("a cat", "a dog", "another dog")
    assert pairs.caption_media.tolist() == [0, 1, 1]
    assert pairs.dropped_media == 1
    assert "1 media without a caption were dropped" in caplog.text


KARPATHY = {
    "dataset": "coco",
    "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "a cat"}, {"raw": "a cat again"}]},
        {"filepath": "train2014", "filename": "b.jpg", "split": "train", "sentences": [{"raw": "a dog"}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "restval", "sentences": [{"raw": "a cow"}]},
        {"filename": "d.jpg", "split": "test", "sentences": [{"raw": "a duck"}]},
    ],
}


def test_karpathy_splits(tmp_path):
    path = write(tmp_path, "dataset_coco.json", json.dumps(KARPATHY))
    test = load_pairs(path)
    assert test.format == "karpathy"
    assert test.media == ((tmp_path / "val2014/a.jpg").resolve(), (tmp_path / "d.jpg").resolve())
    assert test.captions == ("a cat", "a cat again", "a duck")
    assert load_pairs(path, split="train+restval").captions == ("a dog", "a cow")
    assert load_pairs(path, split="all").num_media == 4
    with pytest.raises(UsageError, match="unknown Karpathy split"):
        load_pairs(path, split="dev")
    error = fails_at(path, None, "no captioned images in split 'val'", split="val")
    assert isinstance(error, EmptyPairsError) and "restval, test, train" in error.reason


def test_missing_media_are_listed(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    rows = "".join(f'{{"image": "{name}.jpg", "caption": "x"}}\n' for name in ["a", "m1", "m2", "m3", "m4", "m5", "m6"])
    path = write(tmp_path, "p.jsonl", rows)
    pairs = load_pairs(path)
    assert missing_media(pairs) == tuple((tmp_path / f"m{i}.jpg").resolve() for i in range(1, 7))
    with pytest.raises(MissingMediaError, match=r"6 of 7 media files do not exist: .*m1\.jpg.*m5\.jpg and 1 more"):
        load_pairs(path, require_media=True)
    check_media_exist(load_pairs(write(tmp_path, "ok.jsonl", '{"image": "a.jpg", "caption": "x"}\n')))


def corpus_dir() -> Path:
    env = os.environ.get("MMSEARCH_CORPUS")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "corpus"


def test_real_coco_mini_captions():
    base = corpus_dir() / "coco-mini"
    files = [(base / "annotations" / f"captions_{s}2017.json", base / f"{s}2017") for s in ("train", "val")]
    if not all(f.is_file() for f, _ in files):
        pytest.skip(f"COCO-mini corpus not found under {base}")
    sets = [load_pairs(f, root=root, require_media=True) for f, root in files]
    assert sum(p.num_media for p in sets) == 159
    for pairs in sets:
        assert pairs.format == "coco" and pairs.modality() is Modality.IMAGE
        per_media = np.bincount(pairs.caption_media)
        assert per_media.min() >= 5 and per_media.max() <= 7
        assert all(caption and caption == caption.strip() for caption in pairs.captions)


# ---------------------------------------------------------------------------------------- rejected

def test_jsonl_errors_name_the_line(tmp_path):
    good = '{"image": "a.jpg", "caption": "x"}\n'
    fails_at(write(tmp_path, "a.jsonl", good + "\n" + '{"image": "b.jpg", "caption": "y"\n'), 3, "bad JSON")
    fails_at(write(tmp_path, "b.jsonl", good + '{"image": "b.jpg"}\n'), 2, "missing caption key")
    fails_at(write(tmp_path, "c.jsonl", good + good + '{"picture": "b.jpg", "caption": "y"}\n'), 3, "missing media key")
    fails_at(write(tmp_path, "d.jsonl", good + '{"image": "b.jpg", "caption": "   "}\n'), 2, "'caption' is empty")
    fails_at(write(tmp_path, "e.jsonl", '{"image": "b.jpg", "captions": []}\n'), 1, "non-empty list")
    fails_at(write(tmp_path, "f.jsonl", good + '{"image": "b.jpg", "captions": ["ok", 3]}\n'), 2, "'captions'[1] must be a string")
    fails_at(write(tmp_path, "g.jsonl", good + '["b.jpg", "y"]\n'), 2, "expected a JSON object")
    fails_at(write(tmp_path, "h.jsonl", good + '{"image": "notes.txt", "caption": "y"}\n'), 2, "neither an image nor an audio file")
    fails_at(write(tmp_path, "i.jsonl", good + '{"image": "", "caption": "y"}\n'), 2, "non-empty string")


def test_csv_errors_name_the_line(tmp_path):
    fails_at(write(tmp_path, "a.csv", "picture,caption\na.jpg,x\n"), 1, "no media column")
    fails_at(write(tmp_path, "b.csv", "\nimage,words\na.jpg,x\n"), 2, "no caption column")
    # the quoted caption spans lines 2-3, so the short row is on line 4
    fails_at(write(tmp_path, "c.csv", 'image,caption\na.jpg,"two\nlines"\nb.jpg\n'), 4, "expected 2 fields")
    fails_at(write(tmp_path, "d.csv", "image,caption\na.jpg,x\n\nb.jpg,  \n"), 4, "is empty")
    fails_at(write(tmp_path, "e.tsv", "image\tcaption\na.jpg\tx\tsurplus\n"), 2, "expected 2 fields")


def test_json_syntax_error_names_the_decoder_line(tmp_path):
    fails_at(write(tmp_path, "a.json", '{"images": [\n  {"id": 1, "file_name": "a.jpg"},\n  {"id": 2 "file_name": "b.jpg"}\n]}'), 3, "bad JSON")
    fails_at(write(tmp_path, "b.json", '{"images": [],\n "annotations": [}'), 2, "bad JSON", format="coco")


def test_coco_errors_name_the_line_of_the_object(tmp_path):
    fails_at(write(tmp_path, "a.json", COCO.replace('"image_id": 2, "caption": "another dog"', '"image_id": 9, "caption": "x"')), 9, "annotations[2]: unknown image_id 9")
    fails_at(write(tmp_path, "b.json", COCO.replace('{"image_id": 1, "caption": "a cat"}', '{"image_id": 1}')), 8, "annotations[1]: missing key 'caption'")
    fails_at(write(tmp_path, "c.json", COCO.replace('"caption": "a cat"', '"caption": ""')), 8, "annotations[1].caption is empty")
    fails_at(write(tmp_path, "d.json", COCO.replace('{"id": 3, "file_name": "lonely.jpg"}', '{"id": 2, "file_name": "c.jpg"}')), 4, "duplicate id 2")
    fails_at(write(tmp_path, "e.json", COCO.replace('"a.jpg"', '"a.txt"')), 2, "neither an image")
    fails_at(write(tmp_path, "f.json", '{"images": [{"id": 1, "file_name": "a.jpg"}],\n "annotations": {}}'), 2, "top-level 'annotations' list", format="coco")


KARPATHY_TEXT = """{"dataset": "flickr30k", "images": [
  {"filename": "1.jpg", "split": "test",
   "sentences": [{"raw": "a cat"}, {"raw": "a cat again"}]},
  {"filename": "2.jpg", "split": "test",
   "sentences": [
     {"raw": "a dog"},
     {"tokens": ["a", "dog"]}
   ]}
]}
"""


def test_karpathy_errors_name_the_line_of_the_object(tmp_path):
    assert load_pairs(write(tmp_path, "ok.json", KARPATHY_TEXT.replace('{"tokens": ["a", "dog"]}', '{"raw": "b"}'))).num_captions == 4
    fails_at(write(tmp_path, "a.json", KARPATHY_TEXT), 7, "images[1].sentences[1]: missing key 'raw'")
    fails_at(write(tmp_path, "b.json", KARPATHY_TEXT.replace('"split": "test",\n   "sentences": [\n', '\n   "sentences": [\n')), 4, "images[1]: missing key 'split'")
    fails_at(write(tmp_path, "c.json", KARPATHY_TEXT.replace('"a cat again"', '""')), 3, "images[0].sentences[1].raw is empty")
    fails_at(write(tmp_path, "d.json", KARPATHY_TEXT.replace('"2.jpg"', '2')), 4, "must be strings")


def test_unusable_files(tmp_path):
    with pytest.raises(PathNotFoundError):
        load_pairs(tmp_path / "absent.jsonl")
    fails_at(tmp_path, None, "is a folder")
    assert isinstance(fails_at(write(tmp_path, "empty.jsonl", "\n\n"), None, "no (media, caption) pairs"), EmptyPairsError)
    fails_at(write(tmp_path, "header.csv", "image,caption\n"), None, "no (media, caption) pairs")
    fails_at(write(tmp_path, "latin.csv", b"image,caption\na.jpg,caf\xe9\n"), 2, "not UTF-8")
    fails_at(write(tmp_path, "odd.json", '{"rows": []}'), 1, "unrecognised JSON layout")


def test_json_line_walks_keys_and_indexes():
    from mmsearch.evaluation.jsonpos import json_line

    text = '{"a": 1,\n "b": [\n  {"x": 1},\n  {"x": 2}\n ],\n "b": [\n  0]}'
    assert json_line(text, []) == 1
    assert json_line(text, ["b"]) == 6  # a repeated key means the last one, as json.loads reads it
    assert json_line(text, ["b", 0]) == 7
    assert json_line(text, ["b", 5]) == 6  # past the end: the deepest value reached
    assert json_line('{"b": [\n {"x": 1},\n {"x": 2}]}', ["b", 1, "x"]) == 3
    assert json_line('{"b": [\n 1,\n @@@', ["b", 3]) == 1  # malformed after the start: no exception
