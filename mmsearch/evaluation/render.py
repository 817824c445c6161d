"""DirectionRecall -> JSON-ready dicts and text-table rows. Formatting only; nothing is printed."""
from __future__ import annotations

from collections.abc import Sequence

from mmsearch.evaluation.recall import DirectionRecall


def recall_key(k: int) -> str:
    return f"recall_at_{k}"


def recall_record(result: DirectionRecall, digits: int = 2) -> dict[str, object]:
    """One JSON object: direction, recall_at_K (percent), median_rank, mean_rank, queries, ...

    ``rank_depth`` is present (and non-null) only for results read back from an index, where a miss
    counts as rank ``rank_depth + 1`` and the rank statistics are lower bounds.
    """
    record: dict[str, object] = {"direction": result.direction}
    for k, value in sorted(result.recall.items()):
        record[recall_key(k)] = round(value, digits)
    record["median_rank"] = round(result.median_rank, digits)
    record["mean_rank"] = round(result.mean_rank, digits)
    record["queries"] = result.queries
    record["ties"] = result.ties
    if result.rank_depth is not None:
        record["rank_depth"] = result.rank_depth
    return record


def recall_records(results: Sequence[DirectionRecall], digits: int = 2) -> list[dict[str, object]]:
    return [recall_record(result, digits) for result in results]


def recall_table(results: Sequence[DirectionRecall]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of strings; the ks are the union over results ("-" where one lacks a k).

    Ranks capped by a retrieval depth are shown as lower bounds (``>=``).
    """
    ks = sorted({k for result in results for k in result.recall})
    header = ["direction", *(f"R@{k}" for k in ks), "median rank", "mean rank", "queries"]
    rows = []
    for result in results:
        bound = ">=" if result.rank_depth is not None else ""
        rows.append([
            result.direction,
            *(f"{result.recall[k]:.2f}" if k in result.recall else "-" for k in ks),
            f"{bound}{result.median_rank:g}",
            f"{bound}{result.mean_rank:.2f}",
            str(result.queries),
        ])
    return header, rows
