"""Queries -> ranked hits: embedding a query into every model space it reaches, through the bridge
where needed (``queries``), and searching each modality's index, grouping hits per file and ranking
across indexes by a calibrated score (``searcher``). May import ``decoding`` (query files), ``index``
and ``store``; the encoders and the bridge are handed in by the engine.
"""
