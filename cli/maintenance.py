"""Store upkeep commands: ``verify`` (check, and with --repair fix) and ``rebuild`` (index files from the
stored vectors), plus the ``index --reembed`` path. Registered on the main app by ``register``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import typer

from mmsearch.config import Settings
from mmsearch.records import IndexReport

from .errors import guarded
from .output import BarProgress, emit_json


def verify(
    store: Optional[Path] = typer.Option(None, "--store", help="Store folder (default: $MMSEARCH_STORE, else indexes/default)."),
    repair: bool = typer.Option(False, "--repair", help="Fix what is found (takes the writer lock): drop catalog rows "
                                                        "that lost their vectors, rebuild or re-save index files, "
                                                        "remove temporary files."),
    json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text."),
) -> None:
    """Check that the catalog, the stored vectors and the index files agree. Exit status 0 when no error
    remains, 1 when some do (warnings alone are fine), 2 when the store cannot be checked."""
    from mmsearch.store.folder import Store
    from mmsearch.store.verify import verify_store

    settings = Settings.resolve(store=store)
    with Store.open(settings.store) as opened:
        report = verify_store(opened, repair=repair)
    if json:
        emit_json({"store": report.store, "ok": report.ok, "repair": report.repair,
                   "writer_active": report.writer_active, "checked": report.checked,
                   "findings": [{"code": f.code, "severity": f.severity, "message": f.message, "count": f.count,
                                 "modality": f.modality, "repaired": f.repaired} for f in report.findings]})
    else:
        print(f"store    {report.store}")
        for modality, counts in report.checked.items():
            if any(counts.values()):
                print(f"{modality:<8} {counts.get('files', 0)} files, {counts.get('segments', 0)} segments, "
                      f"{counts.get('vectors', 0)} stored vectors, {counts.get('index', 0)} in the index file")
        if report.writer_active:
            print("note     another process is writing to this store: warnings may be its work in progress")
        for finding in report.findings:
            done = " (repaired)" if finding.repaired else ""
            print(f"{finding.severity:<8} {finding.code}: {finding.message}{done}")
        print("ok" if report.ok else f"{len(report.problems)} problem(s): run `mmsearch verify --repair`")
    if not report.ok:
        raise typer.Exit(1)


def rebuild(
    store: Optional[Path] = typer.Option(None, "--store", help="Store folder (default: $MMSEARCH_STORE, else indexes/default)."),
    json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text."),
) -> None:
    """Rebuild every index file from the vectors stored in the catalog (no model needed)."""
    from mmsearch.store.folder import Store
    from mmsearch.store.verify import rebuild_indexes

    settings = Settings.resolve(store=store)
    with Store.open(settings.store) as opened:
        built = rebuild_indexes(opened)
    if json:
        emit_json({"rebuilt": built})
    else:
        for modality, count in built.items():
            print(f"{modality:<8} {count} vectors")


def index_reembed(settings: Settings, paths: Sequence[Path]) -> IndexReport:
    """``index --reembed``: build the store anew beside the old one, switch when complete."""
    from mmsearch.engine import Engine
    from mmsearch.ingest.reembed import reembed
    from mmsearch.store.folder import CATALOG_NAME

    if not (Path(settings.store).expanduser() / CATALOG_NAME).exists():
        with Engine.open(settings, create=True) as engine:  # nothing to re-embed: a first index run
            return engine.index(paths, progress=BarProgress(enabled=True))
    result = reembed(settings, paths, open_engine=Engine.open, progress=BarProgress(enabled=True))
    before = ", ".join(result.old_models.values()) or "(none)"
    after = ", ".join(result.new_models.values()) or "(none)"
    typer.echo(f"mmsearch: note: store switched to {after} (was {before}); {result.carried} files carried over "
               f"from outside PATHS, {result.dropped} that no longer exist left out"
               f"{', resumed an interrupted re-embed' if result.resumed else ''}", err=True)
    return result.report


def register(app: typer.Typer) -> None:
    app.command()(guarded(verify))
    app.command()(guarded(rebuild))
