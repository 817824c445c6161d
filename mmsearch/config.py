"""Settings, resolved once: explicit argument (CLI option) > MMSEARCH_* environment variable > default."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import UsageError

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
DEFAULT_AUDIO_MODEL = "laion/clap-htsat-unfused:hub"
DEFAULT_RERANK_MODEL = "Salesforce/blip-itm-base-coco"
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "onnx", "int8")
QUERY_ENCODERS = ("auto", "onnx", "torch")
BACKENDS = ("faiss", "milvus")


def default_store_dir() -> Path:
    """`indexes/default` beside the package when run from a checkout, else a per-user data folder."""
    checkout_indexes = Path(__file__).resolve().parent.parent / "indexes"
    if checkout_indexes.is_dir() and os.access(checkout_indexes, os.W_OK):
        return checkout_indexes / "default"
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "mmsearch" / "default"


@dataclass(frozen=True)
class Settings:
    store: Path
    model: str | None = None
    """None: use the store's own model (or DEFAULT_MODEL for a new store)."""
    audio_model: str | None = None
    batch_size: int | None = None
    """Inputs per model call; None: 32 on a CPU, 256 on a GPU (``encoders.runtime.default_batch_size``)."""
    precision: str = "auto"
    device: str = "auto"
    workers: int | None = None
    """Decoding threads; None picks from the CPU count."""
    file_timeout: float = 60.0
    """Seconds one file may take to read and decode before it is recorded as failed (timed out)."""
    rerank_model: str = DEFAULT_RERANK_MODEL
    """The image-text matching model that re-ranks hits (``rerank``): a hub repository, a saved model's
    folder, or test-tiny:random (``encoders.matching``)."""
    query_encoder: str = "auto"
    """What embeds text queries: 'onnx' (the store's exported text tower, no torch), 'torch' (the model
    itself), or 'auto' (the export when it is usable, else torch, said once)."""
    backend: str | None = None
    """Where an index run puts the vectors: 'faiss' (files in the store) or 'milvus' (a server); None: the
    store's recorded backend (faiss for a new store). Recorded in the store by the writer that sets it."""
    milvus_uri: str | None = None
    """The Milvus server (``http://host:19530`` or ``host:port``) for backend 'milvus'; its token, if any, is
    read from MMSEARCH_MILVUS_TOKEN and never recorded."""

    @classmethod
    def resolve(cls, **given: object) -> "Settings":
        """Build settings from explicit values (None = not given), then MMSEARCH_* variables, then defaults."""
        env = os.environ
        def pick(name: str, default: object = None) -> object:
            value = given.get(name)
            if value is not None:
                return value
            return env.get(f"MMSEARCH_{name.upper()}", default)

        store = pick("store")
        settings = cls(
            store=Path(store).expanduser() if store else default_store_dir(),
            model=pick("model"),
            audio_model=pick("audio_model"),
            batch_size=int(b) if (b := pick("batch_size")) is not None else None,
            precision=str(pick("precision", "auto")),
            device=str(pick("device", "auto")),
            workers=int(w) if (w := pick("workers")) is not None else None,
            file_timeout=float(pick("file_timeout", 60.0)),
            query_encoder=str(pick("query_encoder", "auto")),
            rerank_model=str(pick("rerank_model", DEFAULT_RERANK_MODEL)),
            backend=str(b) if (b := pick("backend")) else None,
            milvus_uri=str(u) if (u := pick("milvus_uri")) else None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"{{opt:batch_size}} must be at least 1, not {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"{{opt:precision}} must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if not self.file_timeout > 0:
            raise UsageError(f"{{opt:file_timeout}} must be a positive number of seconds, not {self.file_timeout}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"{{opt:workers}} must be at least 1, not {self.workers}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise UsageError(f"{{opt:backend}} must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.query_encoder not in QUERY_ENCODERS:
            raise UsageError(f"{{opt:query_encoder}} must be one of {', '.join(QUERY_ENCODERS)}, "
                             f"not {self.query_encoder!r}")

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **changes)
