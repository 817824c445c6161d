"""Re-ranking a search's first hits with cross-modal attention (``encoders.matching``: BLIP's image-text
matching head), as BLIP and BLIP-2 rank their COCO retrieval results.

A text query re-ranks image hits, an image query passage hits. The first ``depth`` hits of the two-tower
search are each scored by the matching model, and re-ordered by

    rerank_score = match + score

``match`` the model's probability that the image and the text match (0 to 1), ``score`` the two-tower
cosine; ties keep the search's order. LAVIS adds the ITM head's logit to the similarity; its probability
is used here so that the sum stays in a known range (under 2). Hits after the first ``depth`` follow in
the search's order, unscored. A candidate image that can no longer be read (moved, changed into something
else) is not scored: it follows the re-ranked hits, with a note.

Per query, each candidate image is decoded once, in parallel threads, and its vision-tower states are
kept in a cache bounded in bytes (``CACHE_BYTES``) keyed by the file's path, size and modification time,
so a long-lived engine (``mmsearch serve``) runs the vision tower only for images it has not seen; then
one batched pass of the text tower, with its cross-attention, scores all of them.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from ..encoders.matching import TEXT_TOKENS
from ..errors import DecodeError, ModelLoadError, PathNotFoundError, QueryError, UsageError
from ..records import Hit, SearchResult
from .queries import Query
from .searcher import short_note

RERANKS = {"text": "image", "image": "text"}
"""A query's one part -> the kind of hits it can re-rank: a text's images, an image's passages."""
MAX_DEPTH = 1000
CACHE_BYTES = 512 << 20
"""Vision states kept between queries: 512 MiB holds ~290 images' states for BLIP-base (1.8 MB each)."""


def check_rerank(query: Query, kind: str, depth: int) -> str:
    """The query's part kind ("text" or "image") when ``depth`` hits of ``kind`` can be re-ranked for it,
    else a UsageError saying what can."""
    if not 1 <= depth <= MAX_DEPTH:
        raise UsageError(f"{{opt:rerank}} must be between 1 and {MAX_DEPTH}, not {depth}")
    parts = query.all_parts()
    if len(parts) != 1 or parts[0].kind not in RERANKS or parts[0].weight <= 0:
        raise UsageError("{opt:rerank} re-ranks a search by one text (for images) or one image file (for "
                         "passages), not a query of several parts, a sound or an indexed file")
    wanted = RERANKS[parts[0].kind]
    if kind != wanted:
        raise UsageError(f"{{opt:rerank}} with {'a text' if wanted == 'image' else 'an image'} query re-ranks "
                         f"{wanted} hits: add {{opt:kind}} {wanted}")
    return parts[0].kind


class Reranker:
    """A matching model (loaded on first use by ``load``) and the cache of candidate images' vision states."""

    def __init__(self, load: Callable[[], object], *, cache_bytes: int = CACHE_BYTES, threads: int | None = None):
        self._load = load
        self._matcher = None
        self._states: OrderedDict[tuple, object] = OrderedDict()
        self._cached_bytes = 0
        self.cache_bytes = cache_bytes
        self.threads = threads or min(8, os.cpu_count() or 1)

    @property
    def matcher(self):
        if self._matcher is None:
            self._matcher = self._load()
        return self._matcher

    def available(self, optional: bool, notes: list[str]) -> bool:
        """Load the model (before searching, so a failure comes first): a ModelLoadError is raised, or with
        ``optional`` becomes a note and False (the search answers without re-ranking)."""
        try:
            self.matcher
        except ModelLoadError as exc:
            if not optional:
                raise
            cause = exc.reason.split("; ")[0]  # (not the hint: it names the settings that were not used)
            notes.append(f"not re-ranked: cannot load model {exc.spec!r}: {cause}")
            return False
        return True

    def page(self, query: Query, result: SearchResult, depth: int, k: int, offset: int) -> SearchResult:
        """A page of ``result`` (the search's first ``max(depth, offset + k)`` hits) with its first ``depth``
        hits re-ranked."""
        found = len(result.hits)  # (searched for depth hits: "only n files" is news only when a page is short)
        notes = [note for note in result.notes if note != short_note(found) or found < offset + k]
        hits = self.rerank(query, result.hits, depth, notes)
        return replace(result, hits=tuple(hits[offset:offset + k]), notes=tuple(notes),
                       more=len(hits) > offset + k or result.more, reranked=min(depth, len(result.hits)))

    def rerank(self, query: Query, hits: Sequence[Hit], depth: int, notes: list[str]) -> list[Hit]:
        """``hits`` with the first ``depth`` re-scored and re-ordered (see the module's docstring)."""
        part = query.all_parts()[0]
        head, tail = list(hits[:depth]), list(hits[depth:])
        if not head:
            return tail
        matcher = self.matcher
        if part.kind == "text":
            text = str(part.value)
            if matcher.count_tokens(text) > TEXT_TOKENS:
                notes.append(f"query text truncated to the re-ranking model's {TEXT_TOKENS} tokens")
            states, unread = self._image_states([Path(h.path) for h in head])
            scored = [h for h in head if h.path not in unread]
            matches = matcher.match([text], _stack([states[h.path] for h in scored])) if scored else []
        else:
            image = self._query_states(Path(part.value))
            unread = {}
            scored = [h for h in head if h.passage is not None]
            matches = matcher.match([h.passage for h in scored], image) if scored else []
        rescored = [replace(h, match=round(float(p), 6), rerank_score=round(float(p) + h.score, 6))
                    for h, p in zip(scored, matches)]
        order = {h.segment_id: n for n, h in enumerate(head)}
        rescored.sort(key=lambda h: (-h.rerank_score, order[h.segment_id]))
        if unread:
            notes.append(f"{len(unread)} of the first {len(head)} hits could not be read for re-ranking and follow "
                         f"the re-ranked ones: " + "; ".join(f"{p}: {why}" for p, why in list(unread.items())[:3]))
        return rescored + [h for h in head if h.path in unread] + tail

    # -- images -----------------------------------------------------------------------------------------
    def _image_states(self, paths: list[Path]) -> tuple[dict[str, object], dict[str, str]]:
        """Each readable path's vision states (path -> tensor), from the cache or decoded now in parallel and
        run through the vision tower in batches; and the unreadable paths with their reasons."""
        matcher = self.matcher
        keys, states, unread = {}, {}, {}
        for path in paths:
            try:
                info = path.stat()
            except OSError as exc:
                unread[str(path)] = exc.strerror or "cannot be read"
                continue
            keys[str(path)] = key = (str(path), info.st_size, info.st_mtime_ns, matcher.identity.spec)
            if key in self._states:
                self._states.move_to_end(key)
                states[str(path)] = self._states[key]
        missing = [p for p in keys if p not in states]
        if missing:
            with ThreadPoolExecutor(min(self.threads, len(missing))) as pool:
                decoded = list(pool.map(lambda p: _decode(p, matcher.image_size), missing))
            for path, (image, why) in zip(missing, decoded):
                if why is not None:
                    unread[path] = why
            ready = [(p, image) for p, (image, why) in zip(missing, decoded) if why is None]
            if ready:
                fresh = matcher.image_states(matcher.pixels([image for _, image in ready]))
                for (path, _), row in zip(ready, fresh):
                    states[path] = row[None]
                    self._keep(keys[path], row[None])
        return states, unread

    def _query_states(self, path: Path):
        """The query image's vision states (never cached: it is not an indexed file)."""
        if not path.is_file():
            raise PathNotFoundError(path)
        image, why = _decode(str(path), self.matcher.image_size)
        if why is not None:
            raise QueryError(f"{path}: {{opt:image}} is {why}")
        return self.matcher.image_states(self.matcher.pixels([image]))

    def _keep(self, key: tuple, states) -> None:
        size = states.numel() * states.element_size()
        if size > self.cache_bytes:
            return
        self._states[key] = states
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            _, dropped = self._states.popitem(last=False)
            self._cached_bytes -= dropped.numel() * dropped.element_size()


def _decode(path: str, size: int):
    """(upright RGB image, None), or (None, why it cannot be read)."""
    from ..decoding.images import load_image

    try:
        return load_image(Path(path), target_size=size), None
    except DecodeError as exc:
        return None, exc.reason
    except OSError as exc:
        return None, exc.strerror or str(exc)


def _stack(rows: list):
    import torch

    return torch.cat(rows)
