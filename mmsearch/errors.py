"""Every failure the library reports, as one named exception each.

Errors carry data (the path, the store, the models, the setting at fault), not instructions for one front
end. A message names a setting as ``{opt:NAME}``, NAME being its Python name (``batch_size``,
``file_timeout``): ``str(error)`` shows the Python name, and ``error.worded(name)`` lets a front end name
settings its own way (the CLI writes ``--batch-size``). The CLI turns an ``MMSearchError`` into one line
on stderr and exit status 2; anything else is a bug.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

_SETTING = re.compile(r"\{opt:([a-z_]+)\}")


class MMSearchError(Exception):
    """Base of every error the library raises on purpose."""

    def __init__(self, message: str = "", *, option: str | None = None):
        self.template = message
        self.option = option or next(iter(self.settings()), None)
        """The setting at fault (its Python name), when one is."""
        super().__init__(self.worded())

    def settings(self) -> list[str]:
        """The settings the message names, in order."""
        return _SETTING.findall(self.template)

    def worded(self, name: Callable[[str], str] = str) -> str:
        """The message with each setting named by ``name`` (default: its Python name)."""
        return _SETTING.sub(lambda match: name(match.group(1)), self.template)


class UsageError(MMSearchError):
    """A request that cannot be carried out as asked (bad k, empty query, bad glob...)."""


class PathNotFoundError(MMSearchError):
    def __init__(self, path: Path | str):
        self.path = Path(path)
        super().__init__(f"{self.path}: no such file or directory")


class StoreNotFoundError(MMSearchError):
    def __init__(self, store: Path | str):
        self.store = Path(store)
        super().__init__(f"{self.store}: no mmsearch store here")


class StoreCorruptError(MMSearchError):
    def __init__(self, store: Path | str, reason: str):
        self.store, self.reason = Path(store), reason
        super().__init__(f"{self.store}: store is damaged: {reason}")


class StoreLockedError(MMSearchError):
    def __init__(self, store: Path | str, holder: str = ""):
        self.store = Path(store)
        extra = f" ({holder})" if holder else ""
        super().__init__(f"{self.store}: another mmsearch process is writing to this store{extra}; try again when it ends")


class ModelMismatchError(MMSearchError):
    def __init__(self, store: Path | str, store_model: str, requested: str, role: str = "model"):
        self.store, self.store_model, self.requested, self.role = Path(store), store_model, requested, role
        setting = "model" if role == "model" else "audio_model"
        super().__init__(f"{self.store}: store was built with {role} {store_model!r}, not {requested!r}; "
                         f"use {{opt:{setting}}} {store_model} or another {{opt:store}}", option=setting)


class ModelLoadError(MMSearchError):
    def __init__(self, spec: str, reason: str):
        self.spec, self.reason = spec, reason
        super().__init__(f"cannot load model {spec!r}: {reason}")


class DecodeError(MMSearchError):
    """A media file that cannot be turned into model input. ``reason`` is short and user-facing."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


class ItemNotFoundError(MMSearchError):
    """A catalog id the store does not hold (never was, or removed since), or whose file can no longer be
    served (gone from disk, or no longer under an indexed folder)."""

    def __init__(self, item_id: int, reason: str = "no such item in this store"):
        self.item_id, self.reason = item_id, reason
        super().__init__(f"item {item_id}: {reason}")


class QueryError(MMSearchError):
    """A query that cannot be answered (unreadable query file, nothing to search...)."""


class DimensionMismatchError(MMSearchError):
    """Vectors whose dimension is not the one the store's model makes (e.g. an import from another model)."""

    def __init__(self, source: Path | str, found: int, expected: int, space: str):
        self.source, self.found, self.expected = str(source), found, expected
        super().__init__(f"{source}: vectors have {found} dimensions, but this store's {space} vectors have "
                         f"{expected}; import them into another {{opt:store}}")


class ClusterError(MMSearchError):
    """Work that was to run on a Ray cluster (``ray``) cannot: Ray is not installed, the cluster cannot be
    reached or refuses this process, or its workers cannot load the models."""

    def __init__(self, message: str):
        super().__init__(message, option="ray")


class BackendError(MMSearchError):
    """A vector backend that cannot serve the store: a Milvus server that cannot be reached or refuses a
    request, or its client library missing. ``where`` names it (the server's URI, never its token)."""

    def __init__(self, where: str, reason: str):
        self.where, self.reason = where, reason
        super().__init__(f"{where}: {reason}")
