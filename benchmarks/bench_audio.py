"""Audio indexing throughput (seconds of audio per second of wall time) and peak memory on a 1-hour file.

    python benchmarks/bench_audio.py [--audio-model clap-htsat:random] [--folder DIR] [--hours 1] [--json]

Throughput: `mmsearch index` of a folder of real clips (../shared/corpus/urbansound8k-subset and
esc10-crying-baby-mp3 when present, else generated tones) into a fresh store, timed by the indexer's own
`seconds` (the one-off bridge fit that follows is excluded). Memory: peak resident set size (ru_maxrss of
the child process, from os.wait4) of `mmsearch index` on one generated 1-hour 16 kHz mono WAV, next to the
same command on a 5-minute file (already enough windows to fill a batch), so the difference is what the
file's length costs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

CORPUS = Path(os.environ.get("MMSEARCH_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus")


def run_index(folder: Path, store: Path, audio_model: str) -> tuple[dict, int]:
    """Index ``folder`` in a child process; returns its JSON report and its peak RSS in bytes."""
    command = [sys.executable, "-m", "mmsearch", "index", str(folder), "--store", str(store),
               "--model", "test-tiny:random", "--audio-model", audio_model, "--json"]
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        out.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"mmsearch index failed on {folder}")
        return json.loads(out.read()), usage.ru_maxrss * 1024


def write_long_wav(path: Path, seconds: int, rate: int = 16000) -> None:
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for minute in range(0, seconds, 60):
            n = min(60, seconds - minute) * rate
            t = np.arange(n) / rate
            out.write((0.2 * np.sin(2 * np.pi * (150 + minute) * t) + 0.02 * rng.standard_normal(n)).astype(np.float32))


def clip_folder(work: Path) -> Path:
    folder = work / "clips"
    folder.mkdir()
    sources = [p for d in ("urbansound8k-subset", "esc10-crying-baby-mp3") for p in sorted((CORPUS / d).rglob("*"))
               if p.suffix in (".wav", ".mp3")]
    if sources:
        for i, source in enumerate(sources):
            (folder / f"{i:03d}{source.suffix}").symlink_to(source)
    else:
        for i in range(60):
            write_long_wav(folder / f"tone{i:02d}.wav", 5)
    return folder


def audio_seconds(folder: Path) -> float:
    return sum(sf.info(str(p)).duration for p in folder.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio-model", default="clap-htsat:random")
    parser.add_argument("--folder", type=Path, help="Folder of audio for the throughput figure.")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = args.folder or clip_folder(work)
        report, _ = run_index(folder, work / "store-clips", args.audio_model)
        total = audio_seconds(folder)
        short_dir, long_dir = work / "short", work / "long"
        short_dir.mkdir(), long_dir.mkdir()
        write_long_wav(short_dir / "five-minutes.wav", 300)
        write_long_wav(long_dir / "one-hour.wav", int(args.hours * 3600))
        _, short_peak = run_index(short_dir, work / "store-short", args.audio_model)
        long_report, long_peak = run_index(long_dir, work / "store-long", args.audio_model)
    result = {
        "audio_model": args.audio_model, "files": report["added"], "audio_seconds": round(total, 1),
        "index_seconds": report["seconds"], "audio_seconds_per_second": round(total / report["seconds"], 2),
        "windows": report["segments_embedded"], "failed": len(report["failed"]),
        "long_file_hours": args.hours, "long_file_windows": long_report["segments_embedded"],
        "long_file_index_seconds": long_report["seconds"],
        "peak_rss_5min_file_mb": round(short_peak / 2**20), "peak_rss_long_file_mb": round(long_peak / 2**20),
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:28} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
