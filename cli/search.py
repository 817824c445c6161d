"""``mmsearch search``: a query of any number of weighted parts, fused, cut and paged (``search.fusion``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mmsearch.config import Settings

from .errors import guarded
from .output import emit_json, hit_json, print_hits, print_notes

PART_HELP = "VALUE[:WEIGHT], repeatable; a negative weight means less of it (a value ending in ':NUMBER' needs an " \
            "explicit weight: 'clock at 10:30:1')."


def register(app: typer.Typer, store_option, model_option, audio_model_option, json_option) -> None:
    @app.command()
    @guarded
    def search(
        text: Optional[str] = typer.Argument(None, help="Text to search for (a part of weight 1)."),
        texts: List[str] = typer.Option([], "--text", help=f"A text part: {PART_HELP}"),
        images: List[str] = typer.Option([], "--image", help=f"An image file as a part: {PART_HELP}"),
        audios: List[str] = typer.Option([], "--audio", help=f"An audio file as a part (its first 47.5 s): {PART_HELP}"),
        likes: List[str] = typer.Option([], "--like", help="More like this: an indexed file (its `id` in --json output, "
                                        f"or its path) through its stored vectors, left out of the hits: {PART_HELP}"),
        kind: str = typer.Option("all", "--kind", help="What to return: image, text, audio, video or all."),
        k: Optional[int] = typer.Option(None, "-k", help="Number of hits (files), default 10."),
        offset: int = typer.Option(0, "--offset", help="Skip the best N files (the next page: --offset 10 -k 10)."),
        fusion: str = typer.Option("auto", "--fusion", help="How several parts are put together: early (weighted sum "
                                   "of vectors), rrf (reciprocal rank fusion of each part's hits), score (weighted sum "
                                   "of calibrated scores) or auto (early when the parts share a model space, else rrf)."),
        rrf_k: float = typer.Option(60.0, "--rrf-k", help="The k of reciprocal rank fusion: sum of w / (k + rank)."),
        cutoff: Optional[str] = typer.Option(None, "--cutoff", help="'auto': drop the hits after the largest drop in "
                                             "score among the first 100."),
        min_score: Optional[float] = typer.Option(None, "--min-score", help="Drop hits whose calibrated (or fused) "
                                                  "score is below this."),
        path: Optional[str] = typer.Option(None, "--path", help="Only files whose absolute path matches this glob."),
        modified_after: Optional[str] = typer.Option(None, "--modified-after", help="Only files modified at or after "
                                                     "this date (YYYY-MM-DD[THH:MM], local time) or Unix time."),
        modified_before: Optional[str] = typer.Option(None, "--modified-before", help="Only files modified before this."),
        min_duration: Optional[float] = typer.Option(None, "--min-duration", help="Only sounds at least this many "
                                                     "seconds long (leaves images and text out)."),
        max_duration: Optional[float] = typer.Option(None, "--max-duration", help="Only sounds at most this long."),
        rerank: int = typer.Option(0, "--rerank", metavar="N", help="Re-rank the first N hits with an image-text "
                                   "matching model (cross-attention; a text's images with --kind image, an image's "
                                   "passages with --kind text): each gets match + cosine (README, \"Re-ranking\")."),
        rerank_model: Optional[str] = typer.Option(None, "--rerank-model", help="What re-ranks: a BLIP retrieval "
                                                   "model on the Hugging Face hub (default "
                                                   "Salesforce/blip-itm-base-coco), a saved model's folder, or "
                                                   "test-tiny:random (tiny, random weights: try it offline)."),
        rerank_optional: bool = typer.Option(False, "--rerank-optional", help="If the re-ranking model cannot be "
                                             "loaded (offline, not cached), answer without re-ranking, with a note, "
                                             "instead of failing."),
        store: Optional[Path] = store_option,
        model: Optional[str] = model_option,
        audio_model: Optional[str] = audio_model_option,
        json: bool = json_option,
    ) -> None:
        """Nearest files to a query of any number of parts: texts, image files, audio files and indexed files,
        each with a weight. Scores are cosine similarities in the space searched (several parts: see
        --fusion); --kind all ranks hits from different indexes by a calibrated score (see README)."""
        from mmsearch.engine import Engine
        from mmsearch.search.filters import Filters, parse_time
        from mmsearch.search.queries import Query, parse_part

        parts = tuple(parse_part(part_kind, spec) for part_kind, specs in
                      (("text", texts), ("image", images), ("audio", audios), ("like", likes)) for spec in specs)
        filters = Filters(path_glob=path, min_duration=min_duration, max_duration=max_duration,
                          modified_after=parse_time(modified_after, "modified_after") if modified_after else None,
                          modified_before=parse_time(modified_before, "modified_before") if modified_before else None)
        settings = Settings.resolve(store=store, model=model, audio_model=audio_model, rerank_model=rerank_model)
        with Engine.open(settings) as engine:
            result = engine.search(Query(text=text, parts=parts), kind=kind, k=k if k is not None else 10,
                                   offset=offset, strict_k=k is not None and not offset, fusion=fusion, rrf_k=rrf_k,
                                   cutoff=cutoff, min_score=min_score, filters=filters, rerank=rerank,
                                   rerank_optional=rerank_optional)
        print_notes(result.notes)
        if json and (cutoff is not None or min_score is not None):
            emit_json({"hits": [hit_json(hit) for hit in result.hits], "cut": result.cut, "more": result.more})
        elif json:
            emit_json([hit_json(hit) for hit in result.hits])
        else:
            print_hits(result.hits)
            if result.cut:
                print(f"({result.cut} less relevant hits cut)")
