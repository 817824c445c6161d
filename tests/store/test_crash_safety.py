"""kill -9 at random moments of `mmsearch index`: the store always opens, verifies clean, answers
queries; the next run finishes the job without redoing committed work."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import (ROOT, TINY, ForkServer, catalog_rows, make_folder, segments_created,
                                 shared_fork_server, write_png)

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.errors import StoreNotFoundError
from mmsearch.search.queries import Query
from mmsearch.store.folder import Store
from mmsearch.store.verify import verify_store

KILLS_WANTED = 24
SEED = 20240611


def _args(folder: Path, store: Path) -> list[str]:
    return ["index", str(folder), "--store", str(store), "--model", TINY, "--audio-model", "none",
            "--batch-size", "2", "--workers", "1", "--json"]


def _check_store(store: Path, tiny_clip, log: list[str]) -> None:
    """After a kill: the store opens (unless nothing was ever committed), verifies without errors, and a
    search answers from what the catalog holds."""
    try:
        opened = Store.open(store)
    except StoreNotFoundError:
        assert not (store / "catalog.sqlite").exists() or segments_created(store) == 0
        log.append("no store yet")
        return
    with Engine(Settings.resolve(store=store, model=TINY, audio_model="none"), opened, clip=tiny_clip) as engine:
        report = verify_store(opened)
        assert report.ok, [f for f in report.findings]
        log.append(",".join(sorted({f.code for f in report.findings})) or "clean")
        files, _ = opened.catalog.counts()
        if files.get("image") or files.get("text"):
            known = set(opened.catalog.all_items())
            hits = engine.search(Query(text="river lantern"), k=5).hits
            assert hits and all(hit.path in known for hit in hits)


def _mutate(folder: Path) -> None:
    """Renames, copies, deletions and edits, so kills also land among moves, copies and removals."""
    for i in range(0, 8):
        os.rename(folder / "img" / f"p{i:03d}.png", folder / "img" / f"moved{i:03d}.png")
    for i in range(8, 12):
        shutil.copy(folder / "txt" / f"n{i:03d}.txt", folder / "txt" / f"copy{i:03d}.txt")
    for i in range(12, 16):
        (folder / "txt" / f"n{i:03d}.txt").unlink()
    for i in range(16, 20):
        write_png(folder / "img" / f"p{i:03d}.png", 777 + i)
    (folder / "txt" / "late.txt").write_text("a note added after the first run " * 3)


@pytest.fixture
def server():
    return shared_fork_server()


def _run(server: ForkServer, folder: Path, store: Path) -> dict:
    child = server.spawn(_args(folder, store))
    code, sig = child.wait()
    assert (code, sig) == (0, None), child.err.read_text()
    return child.json()


@pytest.mark.slow
def test_sigkill_at_random_points_never_loses_or_corrupts(server, tmp_path, tiny_clip):
    rng = random.Random(SEED)
    base = make_folder(tmp_path / "base", images=20, texts=20)
    (base / "txt" / "empty.txt").write_text("")
    (base / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)

    work = tmp_path / "work"

    def reset_work() -> None:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work, copy_function=shutil.copy2)  # same bytes and mtimes every time

    # Reference runs, never killed: a fresh index, then an update after the folder changed.
    fresh_ref, update_ref, indexed_work = tmp_path / "ref-fresh", tmp_path / "ref-update", tmp_path / "indexed-work"
    started = time.monotonic()
    first = _run(server, base, fresh_ref)
    fresh_seconds = time.monotonic() - started
    reset_work()
    _run(server, work, indexed_work)
    shutil.copytree(indexed_work, update_ref)
    _mutate(work)
    started = time.monotonic()
    second = _run(server, work, update_ref)
    update_seconds = time.monotonic() - started
    assert second["renamed"] == 8 and second["removed"] == 4 and second["segments_reused"] > 0
    references = {
        "fresh": (base, None, catalog_rows_summary(fresh_ref), segments_created(fresh_ref), fresh_seconds,
                  first["segments_embedded"]),
        "update": (work, indexed_work, catalog_rows_summary(update_ref), segments_created(update_ref),
                   update_seconds, second["segments_embedded"]),
    }

    kills, rounds, outcomes = 0, 0, []
    while kills < KILLS_WANTED:
        variant = "fresh" if rounds % 2 == 0 else "update"
        folder, seed_store, expected, expected_created, seconds, _ = references[variant]
        store = tmp_path / f"store{rounds}"
        if seed_store is not None:
            reset_work()
            shutil.copytree(seed_store, store)
            _mutate(work)
        rounds += 1
        for _ in range(rng.randint(2, 5)):  # a few kills, each after a random share of a clean run's time
            child = server.spawn(_args(folder, store))
            time.sleep(rng.uniform(0.0, seconds))
            if child.running():
                child.kill()
            code, sig = child.wait()
            if sig == signal.SIGKILL:
                kills += 1
                _check_store(store, tiny_clip, outcomes)
            else:
                assert code == 0, child.err.read_text()
        embedded_after_kills = _run(server, folder, store)["segments_embedded"]
        # The run that finished leaves exactly what a clean run leaves, having created each segment once.
        assert catalog_rows_summary(store) == expected
        assert segments_created(store) == expected_created
        assert embedded_after_kills <= references[variant][5]
        with Store.open(store) as opened:
            assert verify_store(opened).findings == ()
    print(f"\n{kills} kills in {rounds} rounds (clean runs took {fresh_seconds:.2f} s and {update_seconds:.2f} s); "
          f"verify after each kill: { {o: outcomes.count(o) for o in sorted(set(outcomes))} }")
    assert kills >= KILLS_WANTED


def catalog_rows_summary(store: Path) -> dict:
    """What a user would see: per path its state, hash and segment texts (ids differ between stores)."""
    rows = catalog_rows(store)
    by_item = {}
    for seg in rows["segments"]:
        by_item.setdefault(seg[1], []).append((seg[3], seg[4]))  # (ordinal, text)
    return {item[1]: (item[2], item[5], item[6], item[7], sorted(by_item.get(item[0], [])))  # modality, hash, state, error
            for item in rows["items"]}


@pytest.mark.slow
def test_sigkill_of_a_plain_cli_process_mid_run(tmp_path, tiny_clip):
    """The same through `python -m mmsearch index`: killed as soon as its first batch is committed."""
    folder = make_folder(tmp_path / "media", images=30, texts=30, seed=5)
    store = tmp_path / "store"
    args = [sys.executable, "-m", "mmsearch", *_args(folder, store)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and segments_created(store) == 0:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert segments_created(store) > 0, "the run ended before its first commit"
    outcomes: list[str] = []
    _check_store(store, tiny_clip, outcomes)
    committed = segments_created(store)
    settings = Settings.resolve(store=store, model=TINY, audio_model="none", batch_size=2)
    with Engine.open(settings, create=True, clip=tiny_clip) as engine:  # the resumed run, in-process
        report = engine.index([folder])
        files, segments = engine.store.catalog.counts()
        assert files == {"image": 30, "text": 30}
        assert report.segments_embedded + committed == segments_created(store) == sum(segments.values())
        assert verify_store(engine.store).findings == ()


@pytest.fixture
def second_model(tmp_path, tiny_clip) -> str:
    """Another tiny model (perturbed weights in a local checkpoint): a different fingerprint, offline."""
    import torch

    generator = torch.Generator().manual_seed(1)
    state = {name: value + 0.05 * torch.randn(value.shape, generator=generator).to(value.device)
             if value.is_floating_point() else value
             for name, value in tiny_clip.model.state_dict().items()}
    checkpoint = tmp_path / "tiny-b.pt"
    torch.save(state, checkpoint)
    return f"test-tiny:{checkpoint}"


class _CrashAfter:
    """A progress sink that 'crashes' the run after ``files`` files."""

    def __init__(self, files: int):
        self.left = files

    def start(self, total, description, unit):
        pass

    def advance(self, count=1):
        self.left -= count
        if self.left < 0:
            raise RuntimeError("simulated crash")

    def finish(self):
        pass


def test_reembed_builds_beside_the_old_store_and_switches_only_when_complete(tmp_path, tiny_clip, second_model):
    from mmsearch.ingest.reembed import reembed
    from mmsearch.store.folder import previous_path, shadow_path

    folder = make_folder(tmp_path / "media", images=8, texts=8, seed=11)
    store = tmp_path / "store"
    old_settings = Settings.resolve(store=store, model=TINY, audio_model="none", batch_size=2)
    with Engine.open(old_settings, create=True, clip=tiny_clip) as engine:
        engine.index([folder])
    before = catalog_rows(store)
    new_settings = old_settings.with_(model=second_model)

    with pytest.raises(RuntimeError, match="simulated crash"):
        reembed(new_settings, [folder], open_engine=Engine.open, progress=_CrashAfter(7))
    assert catalog_rows(store) == before and shadow_path(store).exists()
    outcomes: list[str] = []
    _check_store(store, tiny_clip, outcomes)  # the old store still verifies and answers
    with Store.open(store) as opened:
        assert "reembed-leftover" in {f.code for f in verify_store(opened).findings}
    committed = segments_created(shadow_path(store))
    assert committed > 0

    result = reembed(new_settings, [folder], open_engine=Engine.open)
    assert result.resumed and result.old_models == {"clip": TINY} and result.new_models == {"clip": second_model}
    assert result.report.segments_embedded + committed == segments_created(store)
    assert not shadow_path(store).exists() and not previous_path(store).exists()
    with Store.open(store) as opened:
        assert opened.model_for("clip")["spec"] == second_model
        assert opened.catalog.counts() == ({"image": 8, "text": 8}, {"image": 8, "text": before_segments(before)})
        assert verify_store(opened).findings == ()


def before_segments(rows: dict) -> int:
    return sum(1 for seg in rows["segments"] if seg[2] == "text")


@pytest.mark.slow
def test_sigkill_during_reembed_leaves_a_searchable_store(server, tmp_path, tiny_clip, second_model):
    rng = random.Random(SEED + 1)
    folder = make_folder(tmp_path / "media", images=12, texts=12, seed=12)
    store = tmp_path / "store"
    assert server.spawn(_args(folder, store)).wait() == (0, None)
    before = catalog_rows(store)
    reference = tmp_path / "reference"
    shutil.copytree(store, reference)
    started = time.monotonic()
    assert server.spawn([*_args(folder, reference), "--model", second_model, "--reembed"]).wait() == (0, None)
    seconds = time.monotonic() - started
    kills, switched = 0, False
    for _ in range(4):
        child = server.spawn([*_args(folder, store), "--model", second_model, "--reembed"])
        time.sleep(rng.uniform(0.0, seconds))
        if child.running():
            child.kill()
        code, sig = child.wait()
        kills += sig == signal.SIGKILL
        with Store.open(store) as opened:
            model = opened.model_for("clip")["spec"]
            assert verify_store(opened).ok
            if model == TINY:
                assert not switched and catalog_rows(store) == before  # untouched until the switch
            else:
                switched = True
                assert opened.catalog.counts()[0] == {"image": 12, "text": 12}
        outcomes: list[str] = []
        _check_store(store, tiny_clip, outcomes) if not switched else None
    assert kills >= 1
