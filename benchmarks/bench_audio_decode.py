#!/usr/bin/env python
"""Audio decoding, libsndfile (soundfile) against FFmpeg (PyAV): speed per format, and whether they agree.

What it measures. The audio files of the shared corpus are grouped by suffix (the unit the decoder
dispatches on; ``--max-files`` per suffix, spread evenly over the sorted list). Every file of a group is
turned into 48 kHz mono 10 s windows (``iter_audio_windows(reader=...)``: decoding, mono downmix, windowing and
resampling, as indexing does) by each reader that reads it, ``--repeats`` times; the best time of the
repeats is kept for each file (the least disturbed by other work on the machine; the readers take turns).
Figures are milliseconds per minute of audio, over the files both readers read (the ratio is PyAV /
soundfile: above 1, soundfile is faster; "decoding alone" is the same ratio without the windowing and
resampling both share); a suffix only FFmpeg reads gets a PyAV figure alone, over its files. Agreement, for the files
both read: the lowest cosine between the two readers' windows at the same position, and the largest
difference between where the two say the audio ends (ms).

    .venv/bin/python benchmarks/bench_audio_decode.py
    .venv/bin/python benchmarks/bench_audio_decode.py --repeats 5 --max-files 60 --json > decode.json

The figures behind ``mmsearch.decoding.audio.SOUNDFILE_FIRST`` come from this script. Exits 0 with a
message when the corpus is absent.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from machine import cpu_model

CORPUS = Path(os.environ.get("MMSEARCH_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")
RATE = 48_000


@dataclass
class Row:
    suffix: str
    files: int
    """Files timed: those both readers read (those PyAV reads, for a suffix soundfile never reads)."""
    minutes: float
    soundfile_ms_per_min: float | None
    pyav_ms_per_min: float | None
    ratio: float | None
    """PyAV time / soundfile time; above 1, soundfile is faster."""
    decode_ratio: float | None
    """The same for decoding and downmixing alone, without windows and resampling (common to both)."""
    min_cosine: float | None
    max_end_difference_ms: float | None
    soundfile_only: int
    pyav_only: int


def corpus_audio(root: Path) -> list[Path]:
    with open(root / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return sorted(root / row["path"] for row in rows if row["modality"] == "audio")


def spread(items: list[Path], count: int) -> list[Path]:
    """At most ``count`` items, evenly spaced over the list (the same ones on every run)."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def windows(reader: str, path: Path) -> list | None:
    from mmsearch.decoding.audio import iter_audio_windows
    from mmsearch.errors import DecodeError

    try:
        return list(iter_audio_windows(path, sample_rate=RATE, reader=reader))
    except DecodeError:
        return None


def decode_only(reader: str, path: Path) -> None:
    """Decoding and downmixing alone, at the file's own rate (no windows, no resampling)."""
    from contextlib import closing

    from mmsearch.decoding.audio import READERS

    with closing(READERS[reader](path)) as source:
        for _ in source.blocks(60 * source.info.sample_rate):
            pass


def best_times(files: list[Path], readers: tuple[str, ...], repeats: int) -> dict[str, tuple[float, float]]:
    """Reader -> (seconds to windows, seconds to decode alone), each the sum over the files of the best of
    ``repeats`` runs. The readers take turns on each file, so a burst of other work hits both alike."""
    totals = {reader: [0.0, 0.0] for reader in readers}
    for path in files:
        best = {reader: [float("inf"), float("inf")] for reader in readers}
        for _ in range(repeats):
            for reader in readers:
                for slot, run in enumerate((windows, decode_only)):
                    started = time.perf_counter()
                    run(reader, path)
                    best[reader][slot] = min(best[reader][slot], time.perf_counter() - started)
        for reader in readers:
            totals[reader][0] += best[reader][0]
            totals[reader][1] += best[reader][1]
    return {reader: (windows_s, decode_s) for reader, (windows_s, decode_s) in totals.items()}


def agreement(ours: list, theirs: list) -> tuple[float, float]:
    """Lowest cosine between windows at the same position, and the difference of the ends in ms."""
    cosines = []
    for a, b in zip(ours, theirs):
        norm = float(np.linalg.norm(a.samples) * np.linalg.norm(b.samples))
        cosines.append(float(a.samples @ b.samples) / norm if norm > 1e-12 else 1.0)
    if len(ours) != len(theirs):
        cosines.append(0.0)
    return min(cosines), abs(ours[-1].end - theirs[-1].end) * 1000


def measure(suffix: str, files: list[Path], repeats: int) -> Row:
    decoded = {path: (windows("soundfile", path), windows("pyav", path)) for path in files}
    both = [p for p, (s, a) in decoded.items() if s and a]
    only_sf = [p for p, (s, a) in decoded.items() if s and not a]
    only_av = [p for p, (s, a) in decoded.items() if a and not s]
    timed = both or only_av
    minutes = sum((decoded[p][0] or decoded[p][1])[-1].end for p in timed) / 60
    times = best_times(timed, ("soundfile", "pyav") if both else ("pyav",), repeats) if timed else {}
    soundfile = times["soundfile"][0] * 1000 / minutes if "soundfile" in times else None
    pyav = times["pyav"][0] * 1000 / minutes if "pyav" in times else None
    decode_ratio = times["pyav"][1] / times["soundfile"][1] if "soundfile" in times else None
    cosine = end_ms = None
    if both:
        pairs = [agreement(decoded[p][0], decoded[p][1]) for p in both]
        cosine, end_ms = min(c for c, _ in pairs), max(e for _, e in pairs)
    return Row(suffix, len(timed), round(minutes, 2), soundfile and round(soundfile, 1), pyav and round(pyav, 1),
               round(pyav / soundfile, 2) if soundfile and pyav else None, decode_ratio and round(decode_ratio, 2),
               cosine and round(cosine, 5),
               end_ms and round(end_ms, 1), len(only_sf), len(only_av))


def table(report: dict) -> str:
    def cell(value) -> str:
        return "–" if value is None else str(value)

    head = ["suffix", "files", "minutes", "soundfile ms/min", "PyAV ms/min", "PyAV / soundfile", "decoding alone",
            "min cosine", "max Δend ms", "only soundfile", "only PyAV"]
    lines = [f"CPU: {report['cpu']} ({report['cores']} cores), Python {report['python']}, "
             f"soundfile {report['soundfile']} (libsndfile {report['libsndfile']}), PyAV {report['pyav']}; "
             f"best of {report['repeats']}, to {RATE} Hz mono 10 s windows", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        lines.append("| " + " | ".join(cell(v) for v in row.values()) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-files", type=int, default=40, help="files per suffix at most")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (CORPUS / "MANIFEST.tsv").is_file():
        print(f"bench_audio_decode: no corpus at {CORPUS} (set MMSEARCH_CORPUS); nothing to measure")
        return 0
    import av
    import soundfile

    by_suffix: dict[str, list[Path]] = {}
    for path in corpus_audio(CORPUS):
        by_suffix.setdefault(path.suffix.lower(), []).append(path)
    rows = []
    for suffix, files in sorted(by_suffix.items(), key=lambda item: -len(item[1])):
        row = measure(suffix, spread(files, args.max_files), args.repeats)
        print(f"{suffix}: {row}", file=sys.stderr)
        rows.append(asdict(row))
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
              "soundfile": soundfile.__version__, "libsndfile": soundfile.__libsndfile_version__,
              "pyav": av.__version__, "repeats": args.repeats, "rows": rows}
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
