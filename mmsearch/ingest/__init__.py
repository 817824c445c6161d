"""Folders -> catalog rows, stored vectors and index entries: finding files (``discovery``), deciding
what changed (``plan``), hashing in worker threads under a time limit (``timeouts``, ``hashing``),
decoding in worker processes that a crash, a hang or runaway memory cannot take down with the run
(``workers``, running ``decoders``), decode -> encode steps per modality (``pipelines``, ``batches``),
the index run itself (``indexer``), importing precomputed vectors (``importer``) and re-embedding a store
beside the old one (``reembed``). May import ``decoding``, ``encoders`` (through the pipelines), ``index``
and ``store``.
"""
