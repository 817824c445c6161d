"""Small media files written at test time (videos with sound, sound alone, text PDFs), so that decoding
and indexing tests need no stored samples.

Plain functions, no fixtures: ``from media_makers import write_test_video`` (tests/ is on ``sys.path``).
Everything is generated from the arguments alone, so the same call writes the same pictures and sound.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

Colour = tuple[int, int, int]

_VIDEO_CODECS = {".webm": ("libvpx", "libvpx-vp9")}
"""Video encoders to try, by container; any other suffix gets mpeg4 (FFmpeg's own encoder, always there)."""
_AUDIO_CODECS = {".webm": ("libopus", "libvorbis"), ".mkv": ("pcm_s16le",), ".avi": ("pcm_s16le",)}
"""Audio encoders to try, by container; any other suffix gets aac (FFmpeg's own encoder)."""


def encoder_available(name: str) -> bool:
    """Whether PyAV's FFmpeg has an encoder called ``name`` (libvpx and libx264 depend on the build)."""
    try:
        av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def _pick(candidates: Sequence[str], what: str, suffix: str) -> str:
    for name in candidates:
        if encoder_available(name):
            return name
    raise RuntimeError(f"no {what} encoder for {suffix} in this FFmpeg (tried {', '.join(candidates)})")


def colour_at(colours: Sequence[tuple[float, Colour]], t: float) -> Colour:
    """The colour of the schedule ``[(t_start, (r, g, b)), ...]`` showing at ``t`` seconds."""
    current = colours[0][1]
    for start, colour in colours:
        if start <= t + 1e-9:
            current = colour
    return current


def write_test_video(path: Path | str, *, seconds: float, size: tuple[int, int] = (64, 48), fps: int = 25,
                     colours: Sequence[tuple[float, Colour]] = ((0.0, (255, 0, 0)),), audio: bool = True,
                     sample_rate: int = 16000, codec: str | None = None, rotation: int = 0,
                     hflip: bool = False, gop_size: int | None = None, marker: bool = False,
                     live: bool = False, tone_hz: float = 440.0) -> Path:
    """Write a clip of ``seconds`` at ``fps`` whose frames are solid colours: frame i shows the colour of
    ``colours`` (``[(t_start, (r, g, b)), ...]``, sorted) at ``i / fps``. The container follows the suffix:
    .mp4/.m4v/.mov get mpeg4 video and AAC sound, .mkv/.avi mpeg4 and 16-bit PCM, .webm VP8 (or VP9) and
    Opus (or Vorbis); FFmpeg's mpeg4 and AAC encoders are always there, the others depend on the build.

    - ``audio``: add a soundtrack at ``sample_rate`` (a ``tone_hz`` sine, half scale) as long as the video.
    - ``codec``: the video encoder (default: mpeg4, or VP8 for .webm, as available).
    - ``rotation``/``hflip``: a display matrix (counter-clockwise degrees, as ``VideoFrame.rotation``
      reads it back; and a mirror), as a phone writes for a portrait video.
    - ``gop_size``: frames between keyframes (the encoder's default when None).
    - ``marker``: paint the left quarter of every frame white and the top quarter black, so that a test
      can tell which way is up and which side is left.
    - ``live``: write Matroska/WebM as a live stream does (browsers' MediaRecorder): no duration, no index.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    width, height = size
    with av.open(str(path), "w", options={"live": "1"} if live else None) as container:
        video = container.add_stream(codec or _pick(_VIDEO_CODECS.get(suffix, ("mpeg4",)), "video", suffix),
                                     rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuvj420p" if video.codec_context.name == "mjpeg" else "yuv420p"
        if gop_size is not None:
            video.codec_context.gop_size = gop_size
        if video.codec_context.name in ("libvpx", "libvpx-vp9"):
            video.options = {"deadline": "realtime", "cpu-used": "8"}  # fast enough for tests
        if rotation or hflip:
            video.set_display_rotation(rotation, hflip=hflip)
        sound = None
        if audio:
            sound = container.add_stream(_pick(_AUDIO_CODECS.get(suffix, ("aac",)), "audio", suffix),
                                         rate=sample_rate, layout="mono")
        picture = np.empty((height, width, 3), np.uint8)
        for index in range(round(seconds * fps)):
            picture[:] = colour_at(colours, index / fps)
            if marker:
                picture[:, : max(1, width // 4)] = 255
                picture[: max(1, height // 4)] = 0
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            _write_tone(container, sound, seconds, sample_rate, tone_hz)
    return path


def _write_tone(container, sound, seconds: float, sample_rate: int, tone_hz: float) -> None:
    total = round(seconds * sample_rate)
    block = sound.codec_context.frame_size or 1024
    sample_format = sound.codec_context.format.name  # s16 (PCM, Opus) or fltp (AAC, Vorbis)
    for start in range(0, total, block):
        count = min(block, total - start)
        wave = 0.5 * np.sin(2 * np.pi * tone_hz * np.arange(start, start + count) / sample_rate)
        samples = (wave * 32767).astype(np.int16) if sample_format.startswith("s16") else wave.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format=sample_format, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
        container.mux(sound.encode(frame))
    container.mux(sound.encode(None))


def write_audio_only(path: Path | str, *, seconds: float, sample_rate: int = 16000, tone_hz: float = 440.0) -> Path:
    """A container with a soundtrack and no video stream (e.g. .m4a or .mkv), to test 'no video stream'."""
    path = Path(path)
    suffix = path.suffix.lower()
    with av.open(str(path), "w") as container:
        sound = container.add_stream(_pick(_AUDIO_CODECS.get(suffix, ("aac",)), "audio", suffix),
                                     rate=sample_rate, layout="mono")
        _write_tone(container, sound, seconds, sample_rate, tone_hz)
    return path


def pdf_bytes(page_streams: list[str], *, image: bool = False) -> bytes:
    """A PDF whose pages draw ``page_streams`` (PDF content streams), with font /F1 (Helvetica) and, with
    ``image``, XObject /Im1 (a 1x1 grey image) in their resources."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               "<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray "
               "/BitsPerComponent 8 /Length 1 >>\nstream\n\x80\nendstream"]
    xobject = "/XObject << /Im1 4 0 R >>" if image else ""
    kids = []
    for stream in page_streams:
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> {xobject} >> /Contents {len(objects)} 0 R >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def text_pdf(pages: list[str]) -> bytes:
    """A PDF with one page per string, each line of it drawn in Helvetica (a text layer pypdf extracts)."""
    def stream(text: str) -> str:
        lines = " ".join(f"({line}) Tj T*" for line in text.split("\n"))
        return f"BT /F1 12 Tf 72 720 Td 14 TL {lines} ET"
    return pdf_bytes([stream(text) for text in pages])
