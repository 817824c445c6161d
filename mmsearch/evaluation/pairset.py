"""The captioned media a recall benchmark runs over, the errors about them, and their builder."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmsearch.errors import MMSearchError, UsageError
from mmsearch.records import Modality

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aiff", ".aif"})


class PairsFormatError(MMSearchError):
    """A pairs file that cannot be read as asked. ``line`` is 1-based, or None for the whole file."""

    def __init__(self, path: Path | str, line: int | None, reason: str):
        self.path, self.line, self.reason = Path(path), line, reason
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {reason}")


class EmptyPairsError(PairsFormatError):
    """A pairs file that parses but yields no (media, caption) pair."""

    def __init__(self, path: Path | str, reason: str = "no (media, caption) pairs found"):
        super().__init__(path, None, reason)


class MissingMediaError(MMSearchError):
    def __init__(self, source: Path | str, missing: Sequence[Path], total: int, shown: int = 5):
        self.source, self.missing, self.total = Path(source), tuple(missing), total
        listed = ", ".join(str(p) for p in self.missing[:shown])
        more = f" and {len(self.missing) - shown} more" if len(self.missing) > shown else ""
        super().__init__(
            f"{self.source}: {len(self.missing)} of {total} media files do not exist: {listed}{more} "
            f"(use {{opt:root}} to say where the media live)"
        )


@dataclass(frozen=True, eq=False)
class PairSet:
    """Captioned media. Caption ``i`` describes ``media[caption_media[i]]``; every media has >= 1 caption."""

    source: Path
    format: str
    media: tuple[Path, ...]
    modalities: tuple[Modality, ...]
    captions: tuple[str, ...]
    caption_media: np.ndarray
    """(num_captions,) int64, read-only: index into ``media`` per caption."""
    dropped_media: int = 0
    """Media listed in the file but dropped because they had no caption (COCO / Karpathy)."""

    def __post_init__(self) -> None:
        index = np.asarray(self.caption_media, dtype=np.int64).copy()
        index.flags.writeable = False
        object.__setattr__(self, "caption_media", index)
        if len(self.modalities) != len(self.media) or index.shape != (len(self.captions),):
            raise ValueError("PairSet: media/modalities and captions/caption_media must have equal lengths")
        if index.size and (index.min() < 0 or index.max() >= len(self.media)):
            raise ValueError("PairSet: caption_media points outside media")
        if np.unique(index).size != len(self.media):
            raise ValueError("PairSet: every media needs at least one caption")

    @property
    def num_media(self) -> int:
        return len(self.media)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def modality(self) -> Modality:
        """The one modality of all media; ``UsageError`` when images and audio are mixed."""
        kinds = set(self.modalities)
        if len(kinds) != 1:
            raise UsageError(f"{self.source}: pairs mix {', '.join(sorted(map(str, kinds)))} media; use one kind per benchmark")
        return kinds.pop()


def missing_media(pairs: PairSet) -> tuple[Path, ...]:
    """Media of ``pairs`` that are not an existing file, in media order."""
    return tuple(p for p in pairs.media if not p.is_file())


def check_media_exist(pairs: PairSet) -> None:
    missing = missing_media(pairs)
    if missing:
        raise MissingMediaError(pairs.source, missing, pairs.num_media)


# ---------------------------------------------------------------------------------------- building

class PairSetBuilder:
    """Collects (media, caption) pairs in file order; raises ``PairsFormatError`` with the line given."""

    def __init__(self, path: Path, root: Path):
        self.path, self.root = path, root
        self.media_index: dict[Path, int] = {}
        self.modalities: list[Modality] = []
        self.captions: list[str] = []
        self.caption_media: list[int] = []
        self.dropped = 0

    def error(self, line: int | None, reason: str) -> PairsFormatError:
        return PairsFormatError(self.path, line, reason)

    def media(self, value: object, line: int, label: str = "media path") -> int:
        if not isinstance(value, str) or not value.strip():
            raise self.error(line, f"{label} must be a non-empty string, got {value!r}")
        resolved = (self.root / value.strip()).resolve()
        known = self.media_index.get(resolved)
        if known is not None:
            return known
        suffix = resolved.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            modality = Modality.IMAGE
        elif suffix in AUDIO_SUFFIXES:
            modality = Modality.AUDIO
        else:
            raise self.error(line, f"{value!r} is neither an image nor an audio file (extension {suffix or 'missing'!r})")
        self.media_index[resolved] = len(self.modalities)
        self.modalities.append(modality)
        return self.media_index[resolved]

    def caption(self, media: int, value: object, line: int, label: str = "caption") -> None:
        if not isinstance(value, str):
            raise self.error(line, f"{label} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise self.error(line, f"{label} is empty")
        self.captions.append(value.strip())
        self.caption_media.append(media)

    def build(self, format: str) -> PairSet:
        if not self.captions:
            raise EmptyPairsError(self.path)
        if self.dropped:
            log.warning("%s: %d media without a caption were dropped", self.path, self.dropped)
        return PairSet(
            source=self.path,
            format=format,
            media=tuple(self.media_index),
            modalities=tuple(self.modalities),
            captions=tuple(self.captions),
            caption_media=np.asarray(self.caption_media, dtype=np.int64),
            dropped_media=self.dropped,
        )
