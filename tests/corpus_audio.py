"""What the shared corpus's audio should become, shared by the decoder's corpus test
(``tests/decoding/test_corpus_audio.py``) and the index-level ones (``tests/search/test_audio_search.py``,
``tests/ingest/test_hostile_files.py``): the manifest's rows, which of them decode, and the few files that
do better or worse than the manifest's plain decoders on purpose, with why."""
from __future__ import annotations

import csv

import pytest

from conftest import CORPUS

DECODES_ANYWAY = {
    "pydub-testdata/creative_common.mp4":
        "decodes_pyav says no (UnicodeDecodeError): its tags are not UTF-8, which the manifest's plain av.open() "
        "refuses; opened with metadata_errors='ignore', its 48 kHz stereo AAC soundtrack decodes",
    "mutagen-container-zoo/variable-block.flac":
        "decodes_pyav says no (InvalidDataError): its first 0.91 s decode, then the stream ends in data that does "
        "not (no good data after it), which is read as a truncated file and the audio before the cut kept",
}
"""Rows whose manifest columns both say no, that decode on purpose."""

REFUSED_ANYWAY = {
    "pydub-testdata/test1_empty.wav":
        "decodes_pyav says 'yes (0 samples)': a valid header with zero frames is DecodeError('no audio frames') by "
        "design (a window of pure padding would match every quiet query)",
}
"""Rows that a manifest column says decode, refused on purpose."""

def audio_rows() -> list[dict[str, str]]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"shared corpus not found at {CORPUS} (set MMSEARCH_CORPUS)")
    with open(CORPUS / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        rows = [dict(zip(header, fields)) for fields in reader]
    audio = [row for row in rows if row["modality"] == "audio"]
    assert audio, "the manifest lists no audio"
    return audio


def decodes_by_manifest(row: dict[str, str]) -> bool:
    """FFmpeg's yes or libsndfile's: each reader is the other's fallback (the big-endian float WAVs FFmpeg
    refuses decode through libsndfile, the M4A/WMA/APE... libsndfile refuses through FFmpeg)."""
    return row["decodes_pyav"].startswith("yes") or row["decodes"] == "yes"
