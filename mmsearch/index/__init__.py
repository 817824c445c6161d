"""Vector backends and how they are chosen and built. ``backend`` is the interface the rest of mmsearch
speaks (``VectorBackend``: add, remove, search with an id filter, save, count, describe), ``exact`` the
one exact top-k and recall@k everything is checked against, ``faiss_base``/``ann``/``gpu`` the FAISS and
torch implementations, ``factory`` the types by name (create, open), ``selection`` the choice of type
for a collection and ``builder`` training, filling and tuning one from stored vectors. May import only the
shared ground: it knows vectors and ids, not files, catalogs or models.
"""
