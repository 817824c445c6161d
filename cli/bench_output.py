"""Rendering ``mmsearch bench`` records: JSON for programs, aligned tables for people."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mmsearch.bench.throughput import ThroughputReport
from mmsearch.evaluation.render import recall_record, recall_table
from mmsearch.evaluation.results import RecallReport, RerankSummary

from .output import failed_json

RERANK_METHODS = ("no-rerank", "rerank")


def recall_json(report: RecallReport) -> list[dict[str, Any]]:
    """One object per (method, direction): the recall record plus what it was measured on."""
    objects = []
    for row in report.rows:
        record = {"method": row.method, **recall_record(row.result)}
        record.update(
            modality=report.modality.value, model=report.model, semantic=report.semantic, pairs=report.source,
            format=report.format, media=row.media, captions=row.captions,
            excluded_media=failed_json(row.excluded), excluded_captions=row.excluded_captions)
        if row.method != "exact":
            record.update(store=report.store, index=report.index)
        if row.method in RERANK_METHODS and report.rerank is not None:
            record.update(rerank_depth=report.rerank.depth, rerank_model=report.rerank.model,
                          rerank_semantic=report.rerank.semantic)
            if row.method == "rerank":
                record["rerank_seconds_per_query"] = round(report.rerank.seconds_per_query, 3)
        objects.append(record)
    return objects


def format_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = []
    for cells in (header, *rows):
        first, rest = cells[:2], cells[2:]
        lines.append("  ".join([*(c.ljust(w) for c, w in zip(first, widths)),
                                *(c.rjust(w) for c, w in zip(rest, widths[2:]))]).rstrip())
    return lines


def print_recall(report: RecallReport) -> None:
    kinds = f"{report.modality} files"
    print(f"pairs    {report.source} ({report.format}): {report.media} {kinds}, {report.captions} captions")
    meaning = "" if report.semantic else "  (random weights: chance-level numbers)"
    print(f"model    {report.model}{meaning}")
    if report.store is not None:
        print(f"store    {report.store}  (index: {report.index or 'none'}; depth {report.depth})")
    header, cells = recall_table([row.result for row in report.rows])
    header = ["method", *header]
    cells = [[row.method, *line] for row, line in zip(report.rows, cells)]
    print()
    for line in format_table(header, cells):
        print(line)
    if report.failed:
        print(f"\nleft out: {len(report.failed)} media that could not be decoded and their "
              f"{report.excluded_captions} captions (listed on stderr)")
    partial = [row for row in report.rows if row.method != "exact" and len(row.excluded) > len(report.failed)]
    if partial:
        row = partial[0]
        print(f"store rows: {row.media} of {report.media} media found in the store ({row.captions} captions)")
    if report.rerank is not None:
        print(rerank_line(report.rerank))
    if any(row.result.rank_depth is not None for row in report.rows):
        print(f"'>=': a miss within depth {report.depth} counts as rank {report.depth + 1}")
    print(f"({report.seconds:.1f} s)")


def rerank_line(rerank: RerankSummary) -> str:
    meaning = "" if rerank.semantic else ", random weights"
    every = (rerank.captions, rerank.images) == (rerank.of_captions, rerank.of_images)
    sampled = "" if every else " (--rerank-queries)"
    return (f"rerank: the first {rerank.depth} hits of each query re-ranked by {rerank.model}{meaning}; no-rerank: "
            f"the same queries without; {rerank.captions} of {rerank.of_captions} captions and {rerank.images} of "
            f"{rerank.of_images} images{sampled}, {rerank.seconds_per_query:.2f} s per re-ranked query")


def throughput_json(report: ThroughputReport) -> dict[str, Any]:
    return asdict(report)


def print_throughput(report: ThroughputReport) -> None:
    print(f"model        {report.model} on {report.device} ({report.precision}), batch {report.batch_size}, "
          f"{report.workers} decoding processes")
    if report.runtime_choice and report.runtime_choice != report.precision:
        print(f"image tower  {report.runtime_choice}")
    print(f"end to end   {report.files} files ({report.images} images, {report.texts} texts, {report.failed} failed) "
          f"in {report.index_seconds:.2f} s: {report.files_per_second:.1f} files/s, "
          f"{report.images_per_second:.1f} images/s")
    print(f"model only   {report.encoded_images} images in {report.encode_seconds:.2f} s: "
          f"{report.encode_images_per_second:.1f} images/s")
    print(f"ratio        {report.ratio:.2f} (end-to-end images/s / model-only images/s)")
