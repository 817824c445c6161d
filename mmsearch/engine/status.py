"""``mmsearch status``: what a store holds and how it answers, gathered from the engine's parts."""
from __future__ import annotations

from ..bridge.alignment import describe_fit
from ..encoders.clap_exported import CLAP_TEXT
from ..encoders.exported import CLIP_TEXT
from ..encoders.image_exported import CLIP_IMAGE
from ..encoders.precision import describe_image_runtime
from ..errors import MMSearchError
from ..records import INDEX_MODALITIES, Modality, StoreStatus
from ..search.towers import describe_export


def store_status(engine) -> StoreStatus:
    """``Engine.status``: counts, models, index types, query encoders and the bridge, for ``mmsearch status``."""
    info = engine.store.catalog.info()
    files, segments = engine.store.catalog.counts()
    index_types = {}
    for modality in INDEX_MODALITIES:
        index = engine.store.index(modality) if segments.get(modality.value) else None
        if index is not None:
            index_types[modality.value] = engine.store.describe_index(modality, index)
    clip = engine._exportable(segments)
    extra: dict[str, object] = {"query_encoder": describe_export(engine.store.path, clip, CLIP_TEXT),
                                "image_query_encoder": describe_export(engine.store.path, clip, CLIP_IMAGE),
                                "image_runtime": describe_image_runtime(clip)}
    if "clap.spec" in info:
        extra["audio_model"] = info["clap.spec"]
        extra["audio_query_encoder"] = describe_export(engine.store.path, engine._clap_exportable(segments), CLAP_TEXT)
        extra["audio_semantic"] = info.get("clap.semantic") == "1"
        extra["audio_dim"] = int(info.get("clap.dim", 0))
        try:
            bridge = engine.bridge()
        except MMSearchError as exc:
            extra["bridge"] = f"unusable: {exc}"
        else:
            if bridge is not None:
                extra["bridge"] = {"audio_to_clip": describe_fit(bridge.forward.fit),
                                   "clip_to_audio": describe_fit(bridge.reverse.fit)}
    return StoreStatus(
        store=str(engine.store.path), model=info.get("clip.spec", ""), semantic=info.get("clip.semantic") == "1",
        dim=int(info.get("clip.dim", 0)), counts={m.value: files.get(m.value, 0) for m in Modality},
        segments={m.value: segments.get(m.value, 0) for m in INDEX_MODALITIES}, failed=engine.store.catalog.failures(),
        index=index_types, bytes=engine.store.disk_bytes(), schema_version=int(info.get("schema_version", 0)),
        extra=extra)

