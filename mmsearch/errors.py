"""Every failure the library reports, as one named exception each.

The CLI turns an ``MMSearchError`` into one line on stderr and exit status 2; anything else is a bug.
"""
from __future__ import annotations

from pathlib import Path


class MMSearchError(Exception):
    """Base of every error the library raises on purpose."""


class UsageError(MMSearchError):
    """A request that cannot be carried out as asked (bad -k, empty query, bad glob...)."""


class PathNotFoundError(MMSearchError):
    def __init__(self, path: Path | str):
        self.path = Path(path)
        super().__init__(f"{self.path}: no such file or directory")


class StoreNotFoundError(MMSearchError):
    def __init__(self, store: Path | str):
        self.store = Path(store)
        super().__init__(f"{self.store}: no mmsearch store here (run `mmsearch index PATH --store {self.store}` first)")


class StoreCorruptError(MMSearchError):
    def __init__(self, store: Path | str, reason: str):
        self.store, self.reason = Path(store), reason
        super().__init__(f"{self.store}: store is damaged: {reason} (try `mmsearch verify --repair`)")


class StoreLockedError(MMSearchError):
    def __init__(self, store: Path | str, holder: str = ""):
        self.store = Path(store)
        extra = f" ({holder})" if holder else ""
        super().__init__(f"{self.store}: another mmsearch process is writing to this store{extra}; try again when it ends")


class ModelMismatchError(MMSearchError):
    def __init__(self, store: Path | str, store_model: str, requested: str, role: str = "model"):
        self.store, self.store_model, self.requested = Path(store), store_model, requested
        super().__init__(
            f"{self.store}: store was built with {role} {store_model!r}, not {requested!r}; "
            f"use --{role.replace(' ', '-')} {store_model} or another --store"
        )


class ModelLoadError(MMSearchError):
    def __init__(self, spec: str, reason: str):
        self.spec, self.reason = spec, reason
        super().__init__(f"cannot load model {spec!r}: {reason}")


class DecodeError(MMSearchError):
    """A media file that cannot be turned into model input. ``reason`` is short and user-facing."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


class QueryError(MMSearchError):
    """A query that cannot be answered (unreadable query file, nothing to search...)."""


class DimensionMismatchError(MMSearchError):
    """Vectors whose dimension is not the one the store's model makes (e.g. an import from another model)."""

    def __init__(self, source: Path | str, found: int, expected: int, space: str):
        self.source, self.found, self.expected = str(source), found, expected
        super().__init__(f"{source}: vectors have {found} dimensions, but this store's {space} vectors have "
                         f"{expected}; import them into another --store")
