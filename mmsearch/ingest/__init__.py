"""Folders -> catalog rows, stored vectors and index entries: finding files (``discovery``), deciding
what changed (``plan``), decoding in worker threads under a time limit (``timeouts``, ``batches``,
``hashing``), decode -> encode steps per modality (``pipelines``), the index run itself (``indexer``),
importing precomputed vectors (``importer``) and re-embedding a store beside the old one
(``reembed``). May import ``decoding``, ``encoders`` (through the pipelines), ``index`` and ``store``.
"""
