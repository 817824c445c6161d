"""Recall of cross-modal retrieval on captioned media, as CLIP-style papers report it (what ``mmsearch
bench recall`` measures), over the public API: fresh embeddings, a store's stored vectors, its real
index, and ``Engine.search`` end to end.

Owns: pairs files (``pairs``, ``pairset``, ``pair_formats``, ``jsonpos``), rank-based recall
(``recall``), embedding pair media as indexing would (``embedding``), the result records (``results``),
the runs (``runner``, ``store_recall``, ``searched``; ``rerank_recall`` for search re-ranked by an image-text
matching model) and rendering (``render``). May import everything below it,
``mmsearch.engine`` included; nothing in the library imports it. Importing the package does no work;
import the submodules.
"""
