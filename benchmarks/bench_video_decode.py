#!/usr/bin/env python
"""What sampling video frames costs: CPU and wall seconds per minute of video, and frames per minute, for
``mmsearch.decoding.video.iter_video_frames`` with its defaults, with scene detection off, decoding every
frame, and keyframes only; beside the floor (PyAV decoding every frame, nothing else) and FFmpeg's own
``select='gt(scene,0.4)'`` filter on every frame, the detector this module did not choose.

The clips: 1 minute of 1280x720 at 25 fps, H.264 (libx264, preset veryfast: B-frames, CABAC), a panning
picture with a moving square and a cut every 10 s, twice: with x264's default keyframes (up to 10 s
apart, plus one at each cut) and with a keyframe every second and none at the cuts, as phones write.
They are written once into --folder (about 20 s each). ``--video FILE`` measures a file of your own.

    .venv/bin/python benchmarks/bench_video_decode.py
    .venv/bin/python benchmarks/bench_video_decode.py --video holiday.mp4 --repeat 1 --json

CPU seconds count every thread of the process (FFmpeg decodes on all cores), so they are the steadier
figure on a shared machine; wall seconds are what an indexer waits. The median of --repeat runs is shown.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
from PIL import Image

from machine import cpu_model
from mmsearch.decoding.video import iter_video_frames, probe_video

CLIPS = {"x264-default-keyframes": {},
         "keyframe-every-second": {"x264-params": "keyint=25:min-keyint=25:scenecut=0"}}
MODES = {
    "default": {},
    "scene off": {"scene_threshold": None},
    "every frame": {"keyframe_gap": 0},
    "every frame, scene off": {"keyframe_gap": 0, "scene_threshold": None},
    "keyframes only": {"keyframe_gap": math.inf},
}


def write_clip(path: Path, x264_params: dict, *, seconds: int = 60, size=(1280, 720), fps: int = 25,
               shot_seconds: int = 10, sound: bool = False) -> Path:
    """A panning picture (smooth random colours, seeded) with a white square moving across it; each shot
    pans a new picture. ``sound``: a 44.1 kHz stereo AAC soundtrack of seeded noise under a tone that
    changes with each shot."""
    width, height = size
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", **x264_params}
        audio = container.add_stream("aac", rate=44100, layout="stereo") if sound else None
        canvas = None
        for index in range(seconds * fps):
            t = index / fps
            shot, progress = divmod(t, shot_seconds)
            if progress == 0:
                small = np.random.default_rng(int(shot)).integers(0, 256, (9, 16, 3), dtype=np.uint8)
                canvas = np.asarray(Image.fromarray(small).resize((width + 400, height + 200), Image.BICUBIC))
            x = int(400 * progress / shot_seconds)
            y = int(100 + 100 * math.sin(2 * math.pi * progress / shot_seconds))
            picture = canvas[y:y + height, x:x + width].copy()
            left, top = int((width - 120) * (t * 0.37 % 1)), int((height - 120) * (t * 0.23 % 1))
            picture[top:top + 120, left:left + 120] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio is not None:
            _write_soundtrack(container, audio, seconds, shot_seconds)
    return path


def _write_soundtrack(container, audio, seconds: int, shot_seconds: int, rate: int = 44100) -> None:
    block = audio.codec_context.frame_size or 1024
    rng = np.random.default_rng(0)
    for start in range(0, seconds * rate, block):
        t = np.arange(start, start + block) / rate
        tone = 0.3 * np.sin(2 * np.pi * (220 + 55 * (t // shot_seconds)) * t)
        wave = (tone + 0.05 * rng.standard_normal(block)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        container.mux(audio.encode(frame))
    container.mux(audio.encode(None))


def sample(path: Path, settings: dict) -> dict:
    frames = list(iter_video_frames(path, **settings))
    return {"frames": len(frames), "scene_frames": sum(frame.reason == "scene" for frame in frames)}


def decode_only(path: Path, _settings: dict) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
        return {"frames": None, "scene_frames": None}


def ffmpeg_scene_filter(path: Path, _settings: dict) -> dict:
    """Every frame through buffer -> select=gt(scene,0.4) -> buffersink; the frames it lets through."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        graph = av.filter.Graph()
        source, select = graph.add_buffer(template=stream), graph.add("select", "gt(scene,0.4)")
        sink = graph.add("buffersink")
        source.link_to(select)
        select.link_to(sink)
        graph.configure()
        found = 0
        for frame in container.decode(stream):
            graph.vpush(frame)
            while True:
                try:
                    graph.vpull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
                found += 1
        return {"frames": None, "scene_frames": found}


def measure(run, path: Path, settings: dict, repeat: int, minutes: float) -> dict:
    walls, cpus, result = [], [], {}
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run(path, settings)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s_per_min": round(statistics.median(walls) / minutes, 3),
            "cpu_s_per_min": round(statistics.median(cpus) / minutes, 3),
            "frames_per_min": None if result["frames"] is None else round(result["frames"] / minutes, 1),
            "scene_frames": result["scene_frames"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, action="append", help="a video of your own (repeatable)")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/mmsearch-bench-video"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.video:
        videos = {path.name: path for path in args.video}
    else:
        args.folder.mkdir(parents=True, exist_ok=True)
        videos = {}
        for name, params in CLIPS.items():
            path = args.folder / f"{name}.mp4"
            if not path.exists():
                print(f"writing {path} ...", file=sys.stderr)
                write_clip(path.with_suffix(".partial.mp4"), params).rename(path)
            videos[name] = path
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
              "pyav": av.__version__, "repeat": args.repeat, "clips": []}
    for name, path in videos.items():
        info = probe_video(path)
        with av.open(str(path)) as container:
            keys = sum(packet.is_keyframe for packet in container.demux(video=0) if packet.size)
        minutes = info.duration / 60
        rows = [{"mode": "PyAV decode only (floor)", **measure(decode_only, path, {}, args.repeat, minutes)},
                {"mode": "FFmpeg select=gt(scene,0.4)",
                 **measure(ffmpeg_scene_filter, path, {}, args.repeat, minutes)}]
        rows += [{"mode": mode, **measure(sample, path, settings, args.repeat, minutes)}
                 for mode, settings in MODES.items()]
        report["clips"].append({"clip": name, "path": str(path), "codec": info.codec,
                                "size": f"{info.width}x{info.height}", "fps": info.fps,
                                "seconds": round(info.duration, 2), "keyframes": keys, "rows": rows})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['cpu']}, {report['cores']} cores; Python {report['python']}, PyAV {report['pyav']}; "
          f"median of {args.repeat}")
    for clip in report["clips"]:
        print(f"\n{clip['clip']}: {clip['codec']} {clip['size']} {clip['fps']:g} fps, {clip['seconds']} s, "
              f"{clip['keyframes']} keyframes")
        print(f"{'mode':<30} {'CPU s/min':>9} {'wall s/min':>10} {'frames/min':>10} {'scene frames':>12}")
        for row in clip["rows"]:
            frames = "-" if row["frames_per_min"] is None else f"{row['frames_per_min']:g}"
            scenes = "-" if row["scene_frames"] is None else str(row["scene_frames"])
            print(f"{row['mode']:<30} {row['cpu_s_per_min']:>9.2f} {row['wall_s_per_min']:>10.2f} {frames:>10} "
                  f"{scenes:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
