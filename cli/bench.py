"""``mmsearch bench``: recall on captioned media and indexing throughput, as tables or JSON."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mmsearch.config import DEFAULT_AUDIO_MODEL, DEFAULT_MODEL, DEFAULT_RERANK_MODEL, Settings
from mmsearch.encoders.runtime import default_batch_size
from mmsearch.errors import UsageError
from mmsearch.records import Modality

from .errors import guarded
from .output import BarProgress, emit_json, print_notes

PRECISION_HELP = ("How the image tower runs: auto (on a CPU whichever of fp32, bf16 and onnx measured fastest on "
                  "this machine within cosine 0.999 of fp32, timed once per machine and model; fp16 on a GPU), "
                  "fp32, bf16, fp16, onnx (onnxruntime, float32) or int8 (onnxruntime with int8 matrix "
                  "multiplications: faster, lossy, its cosine to fp32 reported).")

bench_app = typer.Typer(
    no_args_is_help=True,
    help="Numbers to choose models and index settings by: retrieval recall on captioned media (exact, "
         "through a store's index, end to end) and indexing throughput.")


def _register_ann() -> None:
    from .bench_ann import ann

    bench_app.command("ann")(ann)

RECALL_HELP = """Recall@1/5/10, median and mean rank of cross-modal retrieval on a pairs file.

Every media file of the pairs file is decoded and embedded exactly as `mmsearch index` would (an
audio file longer than one window: the normalised mean of its window vectors), every caption with
the same model's text tower. Media that cannot be decoded are listed on stderr and left out of
every number together with their captions. Recall is in percent; rank 1 = first; ties count in the
true item's favour.

exact text→MEDIA: one query per caption; a hit at k when the caption's own media is among the k
pair media with the highest cosine (brute force, no index).

exact MEDIA→text: one query per media; a hit at k when ANY of its captions is among the k captions
with the highest cosine.

With --store DIR (the store's model is used), three more kinds of rows, over the pair media found
in the store:

stored: as exact, with the vectors the store holds for the pair media.

index text→MEDIA: each caption searched through the store's vector index (the real FAISS index,
approximate or not); results that are not pair media are skipped. index minus stored = the loss
caused by approximate search.

end-to-end text→MEDIA: each caption run through `mmsearch search --kind MEDIA -k DEPTH` on the
store, where every file in the store competes: what a user gets on their own labelled folder.

With --rerank N (image pairs, with --store), two more kinds of rows, for the same queries:

no-rerank and rerank text→image: each caption run through `mmsearch search --kind image -k DEPTH`
without, then with `--rerank N` (its first N hits re-ordered by the --rerank-model's match + cosine,
the rest in search order).

no-rerank and rerank image→text: each image's DEPTH nearest captions by its stored vector, as
they are, then with the first N re-ranked as `mmsearch search --image FILE --kind text --rerank N`
re-ranks passages.

Re-ranking only re-orders the first N hits, so R@k for k >= N is the same in both rows; the gain
shows at R@k for k < N and in the ranks.

For index, end-to-end and the re-ranked rows a miss within DEPTH results counts as rank DEPTH+1,
so their median and mean ranks are lower bounds (shown as >=)."""

RERANK_HELP = ("Also measure search with its first N hits re-ranked by the image-text matching model (`mmsearch "
               "search --rerank N`): rows no-rerank and rerank, text→image and image→text, for the same queries. "
               "Needs --store and image pairs. Slow: per query the model runs its vision tower on each of the N "
               "candidate images not yet seen (kept after, up to 512 MiB) and its text tower on N pairs; for "
               "BLIP-base at N 20 that is seconds per query on a CPU, well under one on a GPU. Bound it with "
               "--rerank-queries.")


def unwrap(text: str) -> str:
    """Help text as paragraphs: rich keeps single newlines, so join each paragraph's lines."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.strip().split("\n\n"))


def _settings(**given) -> Settings:
    return Settings.resolve(**given)


@bench_app.command("recall", help=unwrap(RECALL_HELP))
@guarded
def recall(
    pairs: Path = typer.Option(..., "--pairs", help="Pairs file: JSONL/CSV/TSV (media, caption), COCO captions JSON "
                                                   "or Karpathy split JSON."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder the media paths are relative to "
                                                             "(default: the pairs file's folder)."),
    format: Optional[str] = typer.Option(None, "--format", help="jsonl, csv, tsv, coco or karpathy (default: detected)."),
    split: str = typer.Option("test", "--split", help="Karpathy split: test, val, train, train+restval or all."),
    model: Optional[str] = typer.Option(None, "--model", help="open_clip model ARCH:WEIGHTS for images "
                                                              f"(default: the store's, else {DEFAULT_MODEL})."),
    audio_model: Optional[str] = typer.Option(None, "--audio-model", help="CLAP model ARCH:WEIGHTS for audio "
                                                                          f"(default: the store's, else {DEFAULT_AUDIO_MODEL})."),
    store: Optional[Path] = typer.Option(None, "--store", help="Also measure through this store's index and "
                                                               "search (its model is used)."),
    depth: int = typer.Option(10, "--depth", help="Results read per query for the store rows (>= 10)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Inputs per model call (default 32 on a CPU, 256 on a GPU)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: up to 4 on a CPU, all cores but two with a GPU)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    rerank: int = typer.Option(0, "--rerank", metavar="N", help=RERANK_HELP),
    rerank_model: Optional[str] = typer.Option(None, "--rerank-model", help="What re-ranks: a BLIP retrieval model "
                                               f"on the Hugging Face hub (default {DEFAULT_RERANK_MODEL}), a saved "
                                               "model's folder, or test-tiny:random / blip-base:random (random "
                                               "weights: chance-level rows)."),
    rerank_queries: Optional[int] = typer.Option(None, "--rerank-queries", metavar="M", help="Re-rank at most M "
                                                 "captions (text→image) and M images (image→text), spread evenly "
                                                 "over the pairs file (default: all): the time is about M times the "
                                                 "seconds per query shown after the table."),
    rerank_optional: bool = typer.Option(False, "--rerank-optional", help="If the re-ranking model cannot be "
                                         "loaded (offline, not cached), measure without the re-ranked rows, with a "
                                         "note, instead of failing."),
    json: bool = typer.Option(False, "--json", help="Print a JSON array, one object per (method, direction)."),
) -> None:
    from mmsearch.engine import Engine
    from mmsearch.evaluation.pairs import load_pairs
    from mmsearch.evaluation.runner import run_recall

    from .bench_output import print_recall, recall_json

    pair_set = load_pairs(pairs, root=root, format=format, split=split)
    modality = pair_set.modality()
    settings = _settings(store=store, model=model, audio_model=audio_model, batch_size=batch_size, workers=workers,
                         precision=precision, device=device, rerank_model=rerank_model)
    progress = BarProgress(enabled=True)
    batch = settings.batch_size or default_batch_size(settings.device)
    if store is not None:
        with Engine.open(settings) as engine:
            encoder = engine.clip if modality == Modality.IMAGE else engine.clap
            report = run_recall(pair_set, *_encoders(modality, encoder), batch_size=batch,
                                workers=settings.workers, progress=progress, engine=engine, depth=depth,
                                rerank=rerank, rerank_queries=rerank_queries, rerank_optional=rerank_optional)
    else:
        if rerank:
            raise UsageError("{opt:rerank} re-ranks a store's search: add {opt:store}")
        encoder = _load_encoder(modality, settings)
        report = run_recall(pair_set, *_encoders(modality, encoder), batch_size=batch,
                            workers=settings.workers, progress=progress)
    print_notes(report.notes)
    if report.failed:
        typer.echo(f"mmsearch: note: {len(report.failed)} of {report.media} media could not be decoded and are left "
                   f"out with their {report.excluded_captions} captions:", err=True)
        for failure in report.failed:
            typer.echo(f"  {failure.path}: {failure.reason}", err=True)
    if json:
        emit_json(recall_json(report))
    else:
        print_recall(report)


def _encoders(modality: Modality, encoder) -> tuple:
    return (encoder, None) if modality == Modality.IMAGE else (None, encoder)


def _load_encoder(modality: Modality, settings: Settings):
    if modality == Modality.IMAGE:
        from mmsearch.encoders.clip import load_clip

        return load_clip(settings.model or DEFAULT_MODEL, device=settings.device, precision=settings.precision)
    from mmsearch.encoders.clap import load_audio_encoder

    return load_audio_encoder(settings.audio_model or DEFAULT_AUDIO_MODEL, device=settings.device)


INDEX_HELP = """Indexing throughput end to end, next to the image model alone on the same images.

End to end: PATHS are indexed into a fresh temporary store (removed afterwards) by the real indexer
(discovery, hashing in threads, decoding and preprocessing in worker processes, model, SQLite, FAISS); files/s
and images/s are indexed files over the wall-clock time of that run. Model only: the indexed
images (up to --encode-limit) are decoded and preprocessed first, untimed, then only the image
model's batched calls are timed (stack, copy to the device, forward pass, normalise, copy back).
Ratio = end-to-end images/s / model-only images/s; far below 1 means the model waits for input.
The model is loaded and warmed up before either timing."""


@bench_app.command("index", help=unwrap(INDEX_HELP))
@guarded
def index(
    paths: List[Path] = typer.Argument(..., help="Folders or files to index."),
    model: Optional[str] = typer.Option(None, "--model", help=f"open_clip model ARCH:WEIGHTS (default {DEFAULT_MODEL})."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Inputs per model call (default 32 on a CPU, 256 on a GPU)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: up to 4 on a CPU, all cores but two with a GPU)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    encode_limit: int = typer.Option(1024, "--encode-limit", help="Most images held decoded for the model-only timing."),
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    from mmsearch.bench.throughput import measure_index_throughput
    from mmsearch.encoders.clip import load_clip

    from .bench_output import print_throughput, throughput_json

    settings = _settings(model=model, batch_size=batch_size, workers=workers, precision=precision, device=device)
    encoder = load_clip(settings.model or DEFAULT_MODEL, device=settings.device, precision=settings.precision)
    report = measure_index_throughput(paths, encoder, batch_size=settings.batch_size or default_batch_size(settings.device),
                                      workers=settings.workers, precision=settings.precision,
                                      encode_limit=encode_limit, progress=BarProgress(enabled=True))
    if json:
        emit_json(throughput_json(report))
    else:
        print_throughput(report)


_register_ann()
