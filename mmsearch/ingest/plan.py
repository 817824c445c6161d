"""Deciding what an index run does, from what it found on disk and what the catalog holds: a file with
the same bytes as before is only touched; one whose bytes a vanished file had is a rename (it keeps its
vectors); one whose bytes another indexed file has gets copies of its vectors; anything else is
embedded; files gone from disk are removed. A pure function of its inputs: it writes nothing.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..records import MediaFile, Modality
from ..store.rows import INDEXED, RETRY, ItemRow
from .batches import FileWork


@dataclass
class Plan:
    """An index run's decisions, file by file."""

    embed: list[FileWork] = field(default_factory=list)
    copies: list[tuple[MediaFile, str, ItemRow]] = field(default_factory=list)
    moves: list[tuple[MediaFile, ItemRow]] = field(default_factory=list)
    touches: list[tuple[MediaFile, ItemRow]] = field(default_factory=list)
    removals: list[ItemRow] = field(default_factory=list)
    known_paths: set[str] = field(default_factory=set)


def plan_run(hashed: list[tuple[MediaFile, str]], gone: list[ItemRow], known: dict[str, ItemRow],
             items_by_hash: Callable[[Iterable[str]], dict[str, ItemRow]]) -> Plan:
    """What to do with each changed file (``hashed``: with its content hash) and each file gone from disk
    (``gone``), given the catalog's rows (``known``) and a lookup of indexed items by content hash."""
    plan = Plan(known_paths=set(known))
    gone_by_hash: dict[tuple[str, Modality], deque[ItemRow]] = {}
    for row in gone:
        if row.content_hash and row.state == INDEXED:
            gone_by_hash.setdefault((row.content_hash, row.modality), deque()).append(row)
    moved_rows: set[int] = set()
    need_source = []
    for media, digest in hashed:
        row = known.get(str(media.path))
        if row is not None and row.content_hash == digest and row.modality == media.modality \
                and row.state != RETRY:
            plan.touches.append((media, row))  # rewritten with the same bytes (or a failed file, unchanged)
            continue
        candidates = gone_by_hash.get((digest, media.modality))
        if candidates:
            source = candidates.popleft()
            moved_rows.add(source.id)
            if row is not None:
                plan.removals.append(row)  # a file renamed over another one
            plan.moves.append((media, source))
            continue
        need_source.append((media, digest, row))
    plan.removals.extend(row for row in gone if row.id not in moved_rows)
    removed_rows = {row.id for row in plan.removals}
    sources = items_by_hash(d for _, d, _ in need_source)
    for media, digest, row in need_source:
        source = sources.get(digest)
        # a moved row still holds its vectors (moves commit first); a removed one will not
        if source is not None and source.modality == media.modality and source.id not in removed_rows \
                and source.path != str(media.path):
            plan.copies.append((media, digest, source))
        else:
            plan.embed.append(FileWork(media, digest))
    return plan
