#!/usr/bin/env python
"""What indexing video costs end to end: ``mmsearch index`` of a folder of 1-minute 1280x720 clips with a
stereo soundtrack, into a fresh store, with ViT-B-32 and CLAP-sized random weights (the real models'
compute), per minute of video; beside the frame sampling alone (``iter_video_frames``) and what the
soundtrack windows and sampled frames number.

    .venv/bin/python benchmarks/bench_video_index.py [--clips 3] [--model ViT-B-32:random]
        [--audio-model clap-htsat:random] [--folder /tmp/mmsearch-bench-video-index] [--json]

The clips (``bench_video_decode.write_clip`` with sound): a panning picture with a moving square and a cut
every 10 s, H.264 with a keyframe every second as phones write, AAC 44.1 kHz stereo. Written once into
--folder. The figure is the indexer's own ``seconds`` (the one-off export of the query towers that follows
a first index run is not part of it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_video_decode import CLIPS, write_clip
from machine import cpu_model
from mmsearch.decoding.video import iter_video_frames


def make_clips(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for number in range(count):
        path = folder / f"clip{number}.mp4"
        if not path.is_file():
            write_clip(path, dict(CLIPS["keyframe-every-second"]), shot_seconds=10 + number, sound=True)
        clips.append(path)
    return clips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--audio-model", default="clap-htsat:random")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/mmsearch-bench-video-index"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    clips = make_clips(args.folder, args.clips)
    minutes = float(len(clips))

    started = time.perf_counter()
    frames = sum(1 for clip in clips for _ in iter_video_frames(clip, target_size=224))
    sampling = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-video-") as tmp:
        command = [sys.executable, "-m", "mmsearch", "index", str(args.folder), "--store", f"{tmp}/store",
                   "--model", args.model, "--audio-model", args.audio_model, "--json"]
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, MMSEARCH_OFFLINE="1"))
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        report = json.loads(done.stdout)
        status = json.loads(subprocess.run([sys.executable, "-m", "mmsearch", "status", "--store", f"{tmp}/store",
                                            "--json"], capture_output=True, text=True, check=True).stdout)
    result = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "clips": len(clips), "minutes": minutes,
        "model": args.model, "audio_model": args.audio_model,
        "index_seconds": report["seconds"], "index_seconds_per_minute": round(report["seconds"] / minutes, 2),
        "frames_per_minute": round(status["segments"]["image"] / minutes, 1),
        "windows_per_minute": round(status["segments"]["audio"] / minutes, 1),
        "sampling_seconds_per_minute": round(sampling / minutes, 2), "sampled_frames": frames,
        "failed": len(report["failed"]),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"# {result['cpu']}, {result['cores']} cores; {len(clips)} x 1 min 1280x720 H.264 + AAC stereo")
    print("| model / audio model | index s per min of video | frames per min | soundtrack windows per min "
          "| frame sampling alone, s per min |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {args.model} / {args.audio_model} | {result['index_seconds_per_minute']} | "
          f"{result['frames_per_minute']} | {result['windows_per_minute']} | {result['sampling_seconds_per_minute']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
