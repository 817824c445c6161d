"""Talking to a Milvus server (pymilvus 2.3, imported on first use): the address and its token, connecting
fast or failing with one line, the collection's schema, index parameters from mmsearch's index types, and
filters as Milvus boolean expressions.

Milvus 2.3's ``like`` takes a literal prefix (``path like "/photos/2021/%"``) or a literal, nothing else (no
suffix, infix or ``_``): a path glob is pushed down only when it is a literal or a literal followed by one
``*``; any other glob is answered from the catalog's allowed ids instead (``expression`` returns None).
"""
from __future__ import annotations

import logging
import os
import re
import uuid
from typing import Any, Callable, Mapping, TypeVar

from ..errors import BackendError, UsageError
from .predicate import Predicate

log = logging.getLogger(__name__)

TOKEN_ENV = "MMSEARCH_MILVUS_TOKEN"
CONNECT_TIMEOUT = 3.0
"""Seconds to wait for the server before giving up (a stopped server must not hang a command)."""
CALL_TIMEOUT = 120.0
"""Seconds one request may take (an upload of a batch, a search, building an index)."""
MAX_TOPK = 16384
"""The most results Milvus returns for one query (its ``limit``), and the most ids one query reads."""
PATH_LENGTH = 65535
INDEX_TYPES = {"flat": "FLAT", "ivf-flat": "IVF_FLAT", "ivf-pq": "IVF_PQ", "hnsw": "HNSW"}
"""mmsearch's CPU index types as Milvus index types (the GPU types map to their CPU equivalents)."""
BUILD_PARAMS = {"flat": (), "ivf-flat": ("nlist",), "ivf-pq": ("nlist", "m", "nbits"), "hnsw": ("M", "efConstruction")}
SEARCH_PARAM = {"ivf-flat": ("nprobe", "nprobe"), "ivf-pq": ("nprobe", "nprobe"), "hnsw": ("efSearch", "ef")}
"""mmsearch's search parameter -> Milvus's name for it."""
DEFAULTS = {"ivf-flat": {"nlist": 128, "nprobe": 16}, "ivf-pq": {"nlist": 128, "nprobe": 16, "m": 8, "nbits": 8},
            "hnsw": {"M": 32, "efConstruction": 80, "efSearch": 64}}

T = TypeVar("T")


def normalise_uri(uri: str) -> str:
    """``host:port`` -> ``http://host:port``; refuses what is not a server address."""
    text = str(uri).strip()
    if not text:
        raise UsageError("{opt:milvus_uri} is empty: give the Milvus server, e.g. http://localhost:19530")
    if "://" not in text:
        text = "http://" + text
    if not re.fullmatch(r"(https?|tcp|grpc)://[^/\s]+/?", text):
        raise UsageError(f"{{opt:milvus_uri}} {uri!r}: expected a Milvus server address such as http://localhost:19530")
    return text.rstrip("/")


def shown_uri(uri: str) -> str:
    """The URI without any user:password part (what messages and ``status`` show)."""
    return re.sub(r"://[^@/]*@", "://", uri)


def pymilvus():
    try:
        import pymilvus as module
    except ImportError as exc:
        raise BackendError("Milvus backend", f"pymilvus is not installed ({exc}); pip install 'mmsearch[milvus]'") \
            from None
    return module


class Connection:
    """One pymilvus connection (an alias of its own) to the server at ``uri``; the token is read from
    ``MMSEARCH_MILVUS_TOKEN`` and never stored anywhere else."""

    def __init__(self, uri: str):
        self.uri = normalise_uri(uri)
        self.where = f"Milvus at {shown_uri(self.uri)}"
        self.alias = f"mmsearch-{uuid.uuid4().hex[:12]}"
        module = pymilvus()
        token = os.environ.get(TOKEN_ENV) or ""
        try:
            module.connections.connect(self.alias, uri=self.uri, token=token, timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            raise BackendError(self.where, f"cannot connect ({_reason(exc)}); is the server running?") from None

    def call(self, what: str, action: Callable[[], T]) -> T:
        """Run one request; a failure becomes a ``BackendError`` naming the server and what was asked."""
        try:
            return action()
        except BackendError:
            raise
        except Exception as exc:
            if not type(exc).__module__.startswith(("pymilvus", "grpc")):
                raise
            raise BackendError(self.where, f"{what} failed ({_reason(exc)})") from None

    def like_takes_underscore_literally(self) -> bool:
        """Whether the server's ``like`` reads ``_`` as itself: Milvus 2.3 (checked on 2.3.5); later versions
        made it a one-character wildcard. Asked once per connection; unknown: no."""
        if not hasattr(self, "_literal_underscore"):
            try:
                version = str(pymilvus().utility.get_server_version(using=self.alias))
            except Exception as exc:
                log.debug("%s: server version unknown (%s)", self.where, exc)
                version = ""
            self._literal_underscore = version.lstrip("v").startswith("2.3.")
        return self._literal_underscore

    def close(self) -> None:
        try:
            pymilvus().connections.disconnect(self.alias)
        except Exception as exc:  # closing a connection that has gone must not fail a command
            log.debug("disconnecting %s: %s", self.alias, exc)


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(message).splitlines()[0][:200]


def schema(dim: int):
    module = pymilvus()
    DataType, FieldSchema = module.DataType, module.FieldSchema
    return module.CollectionSchema([
        FieldSchema("id", DataType.INT64, is_primary=True, auto_id=False),
        FieldSchema("vector", DataType.FLOAT_VECTOR, dim=dim),
        FieldSchema("path", DataType.VARCHAR, max_length=PATH_LENGTH),
        FieldSchema("mtime_ns", DataType.INT64),
        FieldSchema("duration", DataType.DOUBLE),
        FieldSchema("kind", DataType.VARCHAR, max_length=16),
    ], description="mmsearch segment vectors (id = the catalog's segment id)")


def milvus_kind(kind: str) -> str:
    """The Milvus-served type for one of mmsearch's types (a GPU type: its CPU equivalent)."""
    kind = {"gpu-flat": "flat", "torch-flat": "flat", "cagra": "flat", "gpu-ivf": "ivf-flat"}.get(kind, kind)
    if kind not in INDEX_TYPES:
        raise UsageError(f"{{opt:index_type}} {kind!r} cannot be served by Milvus: use one of {', '.join(INDEX_TYPES)}")
    return kind


def index_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``create_index`` parameters of ``kind`` with mmsearch's build ``params``."""
    build = {name: int(params[name]) for name in BUILD_PARAMS[kind]}
    return {"index_type": INDEX_TYPES[kind], "metric_type": "COSINE", "params": build}


def search_params(kind: str, params: Mapping[str, Any], k: int) -> dict[str, Any]:
    named = SEARCH_PARAM.get(kind)
    extra: dict[str, Any] = {}
    if named is not None:
        value = int(params[named[0]])
        extra[named[1]] = max(value, k) if named[1] == "ef" else min(value, int(params.get("nlist", value)))
    return {"metric_type": "COSINE", "params": extra}


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def glob_expression(glob: str, *, literal_underscore: bool = True) -> str | None:
    """A path glob as a Milvus 2.3 expression, or None when Milvus cannot express it exactly.
    ``literal_underscore``: the server's ``like`` takes ``_`` literally (Milvus 2.3, checked); newer servers
    read it as any one character, so a prefix holding one is left to the catalog there."""
    cut = min([at for at in (glob.find(ch) for ch in "*?[") if at >= 0], default=len(glob))
    literal, rest = glob[:cut], glob[cut:]
    if not literal or "]" in literal:
        return None
    if not rest:
        return f"path == {_quoted(literal)}"
    if rest != "*" or any(ch in literal for ch in '%\\"'):  # no escape for % (or quotes) inside like
        return None
    if "_" in literal and not literal_underscore:
        return None
    return f"path like {_quoted(literal + '%')}"


def expression(predicate: Predicate, *, literal_underscore: bool = True) -> str | None:
    """The predicate as one Milvus boolean expression ("" for none), or None when it cannot be pushed down."""
    clauses = []
    if predicate.path_glob is not None:
        clause = glob_expression(predicate.path_glob, literal_underscore=literal_underscore)
        if clause is None:
            return None
        clauses.append(clause)
    low, high = predicate.modified_ns or (None, None)
    if low is not None:
        clauses.append(f"mtime_ns >= {int(low)}")
    if high is not None:
        clauses.append(f"mtime_ns < {int(high)}")
    least, most = predicate.duration or (None, None)
    if predicate.duration is not None:
        clauses.append("duration >= 0")
    if least is not None:
        clauses.append(f"duration >= {float(least)!r}")
    if most is not None:
        clauses.append(f"duration <= {float(most)!r}")
    if predicate.file_kind is not None:
        clauses.append(f"kind == {_quoted(predicate.file_kind)}")
    return " and ".join(f"({clause})" for clause in clauses)


def ids_expression(ids) -> str:
    return f"id in [{','.join(str(int(i)) for i in ids)}]"
