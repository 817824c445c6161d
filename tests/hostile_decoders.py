"""Decoders that misbehave on purpose, for the decoding-process tests (``test_decode_workers``,
``test_hostile_files``). They run inside mmsearch's decoding processes, which import them by name
(``Decoder.of("hostile_decoders:image")``): tests/ is on the path the indexing process hands its workers.

What a file's name starts with decides what the decoder does:

- ``abort``: ``os.abort()`` (SIGABRT, as a C library's failed assertion would);
- ``segfault``: reads address 0 through ctypes (SIGSEGV);
- ``hang``: ``time.sleep`` for an hour, a C call that never returns;
- ``hog``: allocates 64 MB blocks until memory runs out;
- ``pid``: writes the decoding process's pid next to the file, then hangs;
- anything else: decoded for real (``mmsearch.ingest.decoders``).
"""
from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import numpy as np

from mmsearch.ingest import decoders


def _misbehave(path: Path) -> None:
    name = path.name
    if name.startswith("abort"):
        os.abort()
    if name.startswith("segfault"):
        ctypes.string_at(0)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("hog"):
        blocks = []
        while True:
            blocks.append(np.ones(64 << 20, dtype=np.uint8))
    if name.startswith("pid"):
        path.with_suffix(".pid").write_text(str(os.getpid()))
        time.sleep(3600)


def image(path: Path, **options):
    _misbehave(path)
    return decoders.image_pixels(path, **options)


def passages(path: Path):
    _misbehave(path)
    return decoders.passages(path)


def change_while_read(path: Path):
    """Text decoded for real, then the file changes (``changing*``) or goes (``vanishing*``) before the
    indexing process gets the parts."""
    parts = decoders.passages(path)
    if path.name.startswith("changing"):
        path.write_text("the second, longer version of the note")
    elif path.name.startswith("vanishing"):
        path.unlink()
    return parts


def numbered(path: Path, *, count: int, side: int = 64, big: int = 0):
    """``count`` pixel arrays filled with their ordinal (a check that each arrives intact and in order),
    and with ``big`` one array larger than a shared-memory slot (it crosses through the pipe)."""
    from mmsearch.records import Segment

    _misbehave(path)
    seed = sum(path.name.encode())
    for ordinal in range(count):
        yield Segment(ordinal), np.full((3, side, side), (seed + ordinal) % 251, np.uint8)
    if big:
        yield Segment(count), np.arange(big, dtype=np.float32)
