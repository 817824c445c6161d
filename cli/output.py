"""Rendering library records for people (plain text) and programs (JSON), plus the progress bar."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from mmsearch.records import Hit, IndexReport, Modality, StoreStatus


def print_notes(notes) -> None:
    """What the user should know about a result, one line each on stderr (stdout stays parseable)."""
    for note in notes:
        sys.stderr.write(f"mmsearch: note: {note}\n")


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def failed_json(failed) -> list[dict[str, str]]:
    return [{"path": f.path, "reason": f.reason} for f in failed]


def report_json(report: IndexReport) -> dict[str, Any]:
    data = asdict(report)
    data["failed"] = failed_json(report.failed)
    return data


def hit_json(hit: Hit) -> dict[str, Any]:
    return hit.as_json()


def status_json(status: StoreStatus) -> dict[str, Any]:
    return status.as_json()


def print_report(report: IndexReport) -> None:
    print(f"added {report.added}, updated {report.updated}, removed {report.removed}, "
          f"unchanged {report.unchanged}, renamed {report.renamed}, failed {len(report.failed)} "
          f"in {report.seconds:.1f} s ({report.segments_embedded} vectors embedded, {report.segments_reused} reused)")
    if report.image_runtime:
        print(f"image tower: {report.image_runtime}")
    if report.failed:
        print("failed:")
        for failure in report.failed:
            print(f"  {failure.path}: {failure.reason}")


def _where(hit: Hit) -> str:
    """Where in the file the hit is: a page, a video's frame time, a stretch of sound."""
    if hit.page is not None:
        return f"  [page {hit.page}]"
    if hit.track == Modality.IMAGE:
        return f"  [frame at {_clock(hit.start)}]"
    if hit.start is not None:
        span = f"{_clock(hit.start)}-{_clock(hit.end)}" if hit.modality == Modality.VIDEO else \
            f"{hit.start:.1f}s-{hit.end:.1f}s"
        return f"  [{'sound ' if hit.track else ''}{span}]"
    return ""


def _clock(seconds: float) -> str:
    """1:02:03.5 / 2:03.5 / 0:03.5."""
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes}:{rest:04.1f}"


def print_hits(hits: tuple[Hit, ...]) -> None:
    if not hits:
        print("no hits")
        return
    reranked = any(hit.rerank_score is not None for hit in hits)
    for rank, hit in enumerate(hits, 1):
        scores = f"{hit.score:+.4f}"
        if reranked:  # the re-ranked hits: rerank_score = match + cosine; those after them: their cosine
            scores = (f"{hit.rerank_score:.4f} = match {hit.match:.4f} + cos {hit.score:+.4f}"
                      if hit.rerank_score is not None else f"{'':>6}   (not re-ranked) cos {hit.score:+.4f}")
        print(f"{rank:3d}  {scores}  {hit.modality.value:<5}  {hit.path}{_where(hit)}")
        if hit.passage:
            snippet = hit.passage if len(hit.passage) <= 110 else hit.passage[:107] + "..."
            print(f"{'':{19 + (len(scores) - 7)}}{snippet}")


def print_status(status: StoreStatus) -> None:
    meaning = "" if status.semantic or not status.model else "  (random weights: these vectors have no semantic meaning)"
    print(f"store    {status.store}")
    print(f"model    {status.model or '(none yet)'}{meaning}")
    if "audio_model" in status.extra:
        audio_meaning = "" if status.extra.get("audio_semantic") else "  (random weights: no semantic meaning)"
        print(f"audio    {status.extra['audio_model']}{audio_meaning}")
        bridge = status.extra.get("bridge")
        if isinstance(bridge, dict):
            fit = bridge["audio_to_clip"]
            print(f"bridge   audio->image space: {fit['method']}, held-out R@1 {fit['heldout_r_at_1']:.3f} "
                  f"on {fit['sentences']} sentences")
        elif bridge:
            print(f"bridge   {bridge}")
    print(f"dim      {status.dim}")
    for key, label in (("query_encoder", "queries  text: "), ("image_query_encoder", "         image: "),
                       ("audio_query_encoder", "         text, audio side: "), ("image_runtime", "indexing image tower: ")):
        if status.extra.get(key, "-") != "-":
            print(f"{label}{status.extra[key]}")
    for modality, count in status.counts.items():
        if count or status.segments.get(modality):
            kind = status.index.get(modality, "-")
            print(f"{modality:<8} {count} files, {status.segments[modality]} vectors, index: {kind}")
    print(f"on disk  {status.bytes / 1e6:.1f} MB")
    if status.failed:
        print(f"failed   {len(status.failed)} files:")
        for failure in status.failed:
            print(f"  {failure.path}: {failure.reason}")


class BarProgress:
    """``mmsearch.progress.Progress`` drawn with tqdm on stderr (rate and ETA included)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar = None

    def start(self, total: int, description: str, unit: str) -> None:
        if self.enabled and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True,
                             disable=None)

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
