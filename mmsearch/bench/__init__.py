"""Throughput and approximate-search measurements behind ``mmsearch bench index`` / ``bench ann`` and the
scripts in ``benchmarks/``: indexing end to end next to the model alone (``throughput``), every index type
against exact search (``ann``), and synthetic clustered vectors with known structure (``synthetic``).
Measures over the public API (``mmsearch.engine``) and the layers below; nothing in the library imports it.
"""
