"""Folders -> media files, as a generator. Hidden files and folders are skipped; symlinked folders are
not followed (no loops); modality comes from the extension, or from the content for unknown ones."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from ..decoding.documents import DOCUMENT_EXTENSIONS
from ..decoding.images import IMAGE_EXTENSIONS, looks_like_image
from ..decoding.text import TEXT_EXTENSIONS
from ..decoding.video import VIDEO_EXTENSIONS
from ..errors import PathNotFoundError
from ..records import MediaFile, Modality

log = logging.getLogger(__name__)


def audio_extensions() -> frozenset[str]:
    try:
        from ..decoding.audio import AUDIO_EXTENSIONS, UNSUPPORTED_AUDIO_EXTENSIONS
    except ImportError:  # audio support not installed
        return frozenset()
    return AUDIO_EXTENSIONS | UNSUPPORTED_AUDIO_EXTENSIONS


def modality_of(path: Path, *, audio: frozenset[str] | None = None) -> Modality | None:
    """A file's kind from its extension (documents are text; a video container is a video, even one whose
    only stream is sound), else from its first bytes."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return Modality.IMAGE
    if suffix in TEXT_EXTENSIONS or suffix in DOCUMENT_EXTENSIONS:
        return Modality.TEXT
    if suffix in (audio if audio is not None else audio_extensions()):
        return Modality.AUDIO
    if suffix in VIDEO_EXTENSIONS:
        return Modality.VIDEO
    if suffix in _SKIP_SUFFIXES:
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    if looks_like_image(head):
        return Modality.IMAGE
    if head[:4] == b"RIFF":  # a container: WAVE is audio, WEBP an image, AVI a video, anything else neither
        return {b"WAVE": Modality.AUDIO, b"WEBP": Modality.IMAGE, b"AVI ": Modality.VIDEO}.get(head[8:12])
    if head[:4] in (b"fLaC", b"OggS") or head[:3] == b"ID3":
        return Modality.AUDIO
    if head.startswith(b"%PDF-"):
        return Modality.TEXT
    return None


_SKIP_SUFFIXES = frozenset({".json", ".py", ".js", ".xml", ".yaml", ".yml", ".toml", ".db", ".sqlite",
                            ".faiss", ".npy", ".npz", ".pt", ".bin", ".safetensors", ".zip", ".gz", ".tar"})


def normalise_root(root: Path | str) -> Path:
    path = Path(root).expanduser()
    if not path.exists() and not path.is_symlink():
        raise PathNotFoundError(path)
    return Path(os.path.abspath(path))


def discover(roots: Iterable[Path | str], *, exclude: Iterable[Path] = ()) -> Iterator[MediaFile]:
    """Yield every indexable file under ``roots`` (files may be given directly), each once."""
    audio = audio_extensions()
    excluded = [Path(os.path.abspath(p)) for p in exclude]
    seen: set[str] = set()
    for root in [normalise_root(r) for r in roots]:
        for path in _walk(root, excluded):
            key = str(path)
            if key in seen:
                continue
            seen.add(key)
            try:
                info = path.stat()
            except OSError as exc:  # vanished, dangling link, link loop, permission
                modality = modality_of(path, audio=audio) if path.is_symlink() else None
                if modality is not None:  # a media name whose link is broken: reported, as failed, by the indexer
                    yield MediaFile(path, modality, -1, path.lstat().st_mtime_ns)
                log.debug("cannot stat %s: %s", path, exc)
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            modality = modality_of(path, audio=audio)
            if modality is not None:
                yield MediaFile(path, modality, info.st_size, info.st_mtime_ns)


def _walk(root: Path, excluded: list[Path]) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for folder, dirnames, filenames in os.walk(root, followlinks=False, onerror=lambda exc: log.debug("%s", exc)):
        here = Path(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _is_excluded(here / d, excluded))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield here / name


def _is_excluded(path: Path, excluded: list[Path]) -> bool:
    return any(path == e or e in path.parents for e in excluded)


def is_under(path: str, roots: set[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or below one (cost: the path's depth, not the number of roots)."""
    current = path
    while True:
        if current in roots:
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent
