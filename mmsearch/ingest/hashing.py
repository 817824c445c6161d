"""Content hashes that identify a file's bytes (to spot renames and unchanged rewrites)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def content_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
