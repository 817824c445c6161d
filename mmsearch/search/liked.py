"""Indexed files as query parts ("more like this"): a ``like`` part named by path resolved to its catalog
id, and a file's stored vectors read back (no re-embedding); segments' stored vectors for the per-part
cosines of a several-part query's hits."""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from ..errors import ItemNotFoundError
from ..store.folder import SPACE_OF, Store
from .queries import Part


def resolve_likes(store: Store, parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """The parts with each ``like`` given by path turned into its file's catalog id."""
    paths = [os.path.abspath(p.value) for p in parts if p.kind == "like" and not isinstance(p.value, int)]
    if not paths:
        return parts
    with store.catalog.snapshot() as read:
        ids = read.item_ids_by_path(paths)
    resolved = []
    for part in parts:
        if part.kind == "like" and not isinstance(part.value, int):
            path = os.path.abspath(part.value)
            if path not in ids:
                raise ItemNotFoundError(path, "no such file in this store")  # type: ignore[arg-type]
            part = replace(part, value=ids[path])
        resolved.append(part)
    return tuple(resolved)


def stored_vectors(store: Store, item_id: int) -> tuple[str, np.ndarray]:
    """(model space, stored vectors) of the indexed file ``item_id``."""
    modality, vectors = store.catalog.item_vectors(item_id)
    if modality is None or not len(vectors):
        raise ItemNotFoundError(item_id)
    return SPACE_OF[modality], vectors


def segment_vectors(store: Store, space: str, ids: list[int]) -> dict[int, np.ndarray]:
    """Segment id -> stored vector, for segments of ``space``."""
    dim = int((store.model_for(space) or {}).get("dim", 0))
    return store.catalog.vectors_for(ids, dim) if dim else {}
