"""Evaluation building blocks for ``mmsearch bench``: pairs files, exact and index recall, rendering.

Importing this package does no work; the submodules are:

* ``pairs``  – ``load_pairs(path, root=, format=, split=)`` -> ``PairSet``
* ``recall`` – ``cross_modal_recall``, ``recall_from_ranked_ids``, ``ann_recall_at_k``
* ``render`` – ``recall_records`` (JSON) and ``recall_table`` (text)
* ``runner`` – ``run_recall(pairs, image_encoder, audio_encoder, engine=)`` -> ``RecallReport``
  (``embedding`` and ``store_recall`` are its helpers)
"""
from __future__ import annotations

from mmsearch.evaluation.pairs import (
    EmptyPairsError,
    MissingMediaError,
    PairsFormatError,
    PairSet,
    check_media_exist,
    load_pairs,
    missing_media,
)
from mmsearch.evaluation.recall import (
    DirectionRecall,
    ann_recall_at_k,
    cross_modal_recall,
    recall_from_ranked_ids,
    summarize_ranks,
)
from mmsearch.evaluation.render import recall_records, recall_table
from mmsearch.evaluation.runner import RecallReport, RecallRow, run_recall

__all__ = [
    "DirectionRecall", "EmptyPairsError", "MissingMediaError", "PairSet", "PairsFormatError",
    "ann_recall_at_k", "check_media_exist", "cross_modal_recall", "load_pairs", "missing_media",
    "recall_from_ranked_ids", "recall_records", "recall_table", "summarize_ranks",
    "RecallReport", "RecallRow", "run_recall",
]
