"""Atomic file replacement: write to a temporary file beside the target, fsync, rename, fsync the folder.
The file keeps the permissions the target had (a new one gets what ``open`` would give it)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically, else it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode_for(target))  # mkstemp made it private (0600)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _mode_for(target: Path) -> int:
    """The target's permission bits, or for a new file 0666 less the process's umask (read without
    changing it, from /proc where there is one)."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o7777
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def leftover_temp_files(folder: Path) -> list[Path]:
    """Temporary files of ``atomic_path`` left in ``folder`` by a process that died mid-save. Only the
    holder of the folder's writer lock may delete them (anyone else could be mid-save)."""
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir()
                  if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file())
