"""``mmsearch`` commands. Parse, call the library, render; MMSearchError -> one line on stderr, exit 2."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

from mmsearch.config import Settings

from .bench import PRECISION_HELP, bench_app
from .errors import fail, guarded  # noqa: F401  (fail: re-exported for commands)
from .index_admin import register as register_index_admin
from .maintenance import index_reembed, register as register_maintenance
from .output import BarProgress, emit_json, print_notes, print_report, print_status, report_json, status_json
from .search import register as register_search
from .serve import register as register_serve

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Cross-modal search over folders of images, text and audio.")
app.add_typer(bench_app, name="bench")
register_maintenance(app)  # verify, rebuild
register_index_admin(app)  # import-vectors, reindex
register_serve(app)  # serve

StoreOption = typer.Option(None, "--store", help="Store folder (default: $MMSEARCH_STORE, else indexes/default).")
JsonOption = typer.Option(False, "--json", help="Print one JSON document instead of text.")
ModelOption = typer.Option(None, "--model", help="open_clip model ARCH:WEIGHTS (tag, checkpoint path or 'random'); "
                                                 "default: the store's model, else ViT-B-32:laion2b_s34b_b79k.")
AudioModelOption = typer.Option(None, "--audio-model", help="CLAP model ARCH:WEIGHTS (OWNER/NAME:hub, ARCH:/saved/dir or "
                                                            "ARCH:random; 'none' skips audio); default: the store's, "
                                                            "else laion/clap-htsat-unfused:hub.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what mmsearch is doing.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
@guarded
def index(
    paths: List[Path] = typer.Argument(..., help="Folders or files to index (recursively)."),
    store: Optional[Path] = StoreOption,
    model: Optional[str] = ModelOption,
    audio_model: Optional[str] = AudioModelOption,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Inputs per model call (default 32 on a CPU, 256 on a GPU)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: up to 4 on a CPU, all cores but two with a GPU)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
    file_timeout: Optional[float] = typer.Option(None, "--file-timeout", help="Seconds one file may take to read, or to "
                                                 "decode without producing anything, before it is recorded as failed "
                                                 "and its decoding process stopped (default 60)."),
    reembed: bool = typer.Option(False, "--reembed", help="Re-embed the whole store with --model/--audio-model beside "
                                 "the old vectors, switching over only when complete (searchable meanwhile)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Where the vectors are searched: faiss (index files "
                                          "in the store, the default) or milvus (a Milvus server, --milvus-uri). "
                                          "Recorded in the store: later commands use it; switching uploads the "
                                          "stored vectors, nothing is re-embedded."),
    milvus_uri: Optional[str] = typer.Option(None, "--milvus-uri", help="The Milvus server for --backend milvus, "
                                             "e.g. http://localhost:19530 (token: $MMSEARCH_MILVUS_TOKEN)."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help="Decode and embed on a Ray cluster, "
                                      "this process still the only writer: 'auto' starts a local one on 127.0.0.1 "
                                      "for this run; else a cluster address (host:6379, ray://host:10001) whose "
                                      "nodes have mmsearch and the models and see the files at the same paths."),
    ray_workers: Optional[int] = typer.Option(None, "--ray-workers", help="Ray workers, each holding the models "
                                              "(default: one per GPU of the cluster, else one per two CPUs)."),
    json: bool = JsonOption,
) -> None:
    """Embed every image, text, document, audio and video file under PATHS; a re-run embeds only what changed."""
    from mmsearch.engine import Engine

    settings = Settings.resolve(store=store, model=model, audio_model=audio_model, batch_size=batch_size,
                                workers=workers, precision=precision, device=device, file_timeout=file_timeout,
                                backend=backend, milvus_uri=milvus_uri)
    if reembed and ray:
        fail("--ray does not apply to --reembed")
    if ray:
        from mmsearch.ingest.ray_embed import RayOptions

        ray = RayOptions(ray, workers=ray_workers)
    elif ray_workers is not None:
        fail("--ray-workers needs --ray")
    if reembed:
        report = index_reembed(settings, paths)
    else:
        with Engine.open(settings, create=True) as engine:
            report = engine.index(paths, progress=BarProgress(enabled=True), ray=ray)
    print_notes(report.notes)
    if json:
        emit_json(report_json(report))
    else:
        print_report(report)


register_search(app, StoreOption, ModelOption, AudioModelOption, JsonOption)  # search


@app.command()
@guarded
def status(store: Optional[Path] = StoreOption, json: bool = JsonOption) -> None:
    """What a store holds: files per modality, failures, model, index types, size on disk."""
    from mmsearch.engine import Engine

    settings = Settings.resolve(store=store)
    with Engine.open(settings) as engine:
        result = engine.status()
    if json:
        emit_json(status_json(result))
    else:
        print_status(result)


@app.command()
@guarded
def remove(
    paths: List[Path] = typer.Argument(..., help="Files or folders to forget (they need not exist any more)."),
    store: Optional[Path] = StoreOption,
    json: bool = JsonOption,
) -> None:
    """Remove files (or everything below folders) from the store."""
    from mmsearch.engine import Engine

    settings = Settings.resolve(store=store)
    with Engine.open(settings) as engine:
        removed = engine.remove(paths)
    if json:
        emit_json({"removed": removed})
    else:
        print(f"removed {removed} files")


@app.command()
@guarded
def align(
    captions: Optional[Path] = typer.Option(None, "--captions", help="Sentences to fit on, one per line "
                                                                      "(default: the ~3,300 shipped with mmsearch)."),
    map_kind: str = typer.Option("auto", "--map", help="linear: ridge or Procrustes; mlp: the best linear map plus "
                                 "a small ReLU network (fitted with torch, early stopping on held-out sentences); "
                                 "auto: the MLP only where it retrieves the held-out sentences measurably better "
                                 "(R@1 up by 0.01 and beyond chance), else linear."),
    store: Optional[Path] = StoreOption,
    model: Optional[str] = ModelOption,
    audio_model: Optional[str] = AudioModelOption,
    json: bool = JsonOption,
) -> None:
    """Fit the map between the audio model's space and the image model's space, through text (both ways)."""
    from mmsearch.bridge.alignment import describe_fit, read_captions
    from mmsearch.bridge.linear import check_map
    from mmsearch.engine import Engine

    check_map(map_kind)
    settings = Settings.resolve(store=store, model=model, audio_model=audio_model)
    sentences = read_captions(captions) if captions is not None else None
    with Engine.open(settings, create=True) as engine:
        engine.store.acquire_writer()
        bridge = engine.align(sentences, map=map_kind)
    summary = {"audio_to_clip": describe_fit(bridge.forward.fit), "clip_to_audio": describe_fit(bridge.reverse.fit)}
    if json:
        emit_json(summary)
        return
    for direction, fit in summary.items():
        print(f"{direction}: {fit['method']} kept (--map {fit['requested']}), {fit['sentences']} sentences, "
              f"{fit['heldout_sentences']} held out")
        for kind, candidate in fit["candidates"].items():
            if kind == "mlp":
                how = (f"{candidate['epochs']} epoch{'' if candidate['epochs'] == 1 else 's'}, "
                       f"+{candidate['gained']}/-{candidate['lost']} sentences vs linear")
            else:
                how = candidate["method"] + (f" (lambda {candidate['ridge_lambda']})"
                                             if candidate["ridge_lambda"] is not None else "")
            print(f"  {kind:<7} held-out R@1 {candidate['heldout_r_at_1']:.3f}, mean cosine "
                  f"{candidate['heldout_mean_cosine']:.3f}  {how}")


def run() -> None:
    """Console entry point. Usage mistakes (unknown option, `-k abc`) get one line and exit status 2 too."""
    try:
        code = app(prog_name="mmsearch", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("mmsearch: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        # Click's UsageError family (Typer vendors Click, so match it by its interface, not its module).
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)):
            raise
        message = exc.format_message()
        if message:  # (no message: the help text was shown for a bare `mmsearch`)
            context = getattr(exc, "ctx", None)
            where = context.command_path if context is not None else "mmsearch"
            typer.echo(f"mmsearch: error: {message} (see `{where} --help`)", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
