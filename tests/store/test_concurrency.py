"""A running index job and the searches of other processes: searches keep working and see a consistent
store; a second writer is refused at once."""
from __future__ import annotations

import time

import pytest

from reliability_helpers import TINY, make_folder, shared_fork_server

from mmsearch.config import Settings
from mmsearch.engine import Engine
from mmsearch.records import Modality
from mmsearch.search.queries import Query
from mmsearch.store.folder import Store
from mmsearch.store.verify import verify_store


def _index_args(folder, store) -> list[str]:
    return ["index", str(folder), "--store", str(store), "--model", TINY, "--audio-model", "none",
            "--batch-size", "2", "--workers", "1"]


@pytest.mark.slow
def test_searches_keep_working_while_another_process_indexes(tmp_path, tiny_clip):
    server = shared_fork_server()
    store = tmp_path / "store"
    seed = make_folder(tmp_path / "seed", images=4, texts=4, seed=3)
    first = server.spawn(_index_args(seed, store))
    assert first.wait() == (0, None), first.err.read_text()
    big = make_folder(tmp_path / "big", images=200, texts=200, seed=4)

    writer = server.spawn(_index_args(big, store))
    searches, others, seen_counts = 0, {}, []
    settings = Settings.resolve(store=store, model=TINY, audio_model="none")

    def look() -> int:
        """One search by a fresh reader, as a `mmsearch search` process makes it; the files it saw."""
        with Store.open(store) as opened:
            engine = Engine(settings, opened, clip=tiny_clip)
            result = engine.search(Query(text="harbour meadow"), k=5)
            files, segments = opened.catalog.counts()
            known = opened.catalog.all_items()
            assert len(result.hits) == 5 and all(hit.path in known for hit in result.hits)
            for modality in (Modality.IMAGE, Modality.TEXT):
                held = set(opened.index(modality).ids().tolist())
                assert len(held) == len(opened.index(modality))  # no id twice
                assert held <= set(opened.catalog.segment_ids(modality).tolist())
            return files.get("image", 0) + files.get("text", 0)

    while writer.running() and (not seen_counts or seen_counts[-1] <= 8):  # until the run's first commit
        seen_counts.append(look())
        searches += 1
    started = time.monotonic()
    children = {name: server.spawn(args) for name, args in (  # other writers, while the run goes on
        ("index", _index_args(seed, store)), ("remove", ["remove", str(seed), "--store", str(store)]),
        ("verify --repair", ["verify", "--repair", "--store", str(store)]),
        ("verify", ["verify", "--store", str(store), "--json"]))}
    while writer.running() or searches < 3:
        seen_counts.append(look())
        searches += 1
    for name, child in children.items():
        code, sig = child.wait()
        others[name] = (code, sig, time.monotonic() - started,
                        child.out.read_text() if name == "verify" else child.err.read_text())
    assert writer.wait() == (0, None), writer.err.read_text()
    seen_counts.append(look())  # and once the run has ended

    assert searches >= 3
    assert seen_counts == sorted(seen_counts) and seen_counts[-1] == 408  # grew, never went back
    assert any(8 < count < 408 for count in seen_counts), "no search saw the indexing run half done"
    for name in ("index", "remove", "verify --repair"):
        code, sig, seconds, stderr = others[name]
        assert (code, sig) == (2, None), (name, stderr)
        assert "another mmsearch process is writing to this store" in stderr
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        assert seconds < 60, f"{name} took {seconds:.1f} s to be refused"
    assert others["verify"][:2] == (0, None), others["verify"]
    assert '"writer_active": true' in others["verify"][3]
    with Store.open(store) as opened:
        assert verify_store(opened).findings == ()
