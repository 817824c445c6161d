"""Decoding in worker processes (``mmsearch.ingest.workers``): parts come back in order and intact (through
shared memory slots, or the pipe when larger); a decoder that aborts, segfaults, hangs or allocates
without bound fails that file alone with a reason, its process is replaced and the files queued behind it
are still decoded; a process that is ahead of the indexer is not timed out; an index run records each
hostile file as failed and the store verifies clean; and a decoder stuck in C dies with the indexing
process, even one killed with SIGKILL.

The misbehaving decoders are in ``tests/hostile_decoders.py``. Limits are generous (seconds, where the
work takes milliseconds) and only ever run out on the decoders that hang on purpose."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image
from reliability_helpers import ROOT

from mmsearch.errors import DecodeError
from mmsearch.ingest.decoders import Decoder
from mmsearch.ingest.pipelines import ImagePipeline
from mmsearch.ingest.workers import SLOT_BYTES, DecodeWorkers


def _decode_all(pool: DecodeWorkers, names: list[str], decoder: Decoder) -> dict[str, list | str]:
    """File name -> its parts, or the reason it failed."""
    outcome: dict[str, list | str] = {}
    for name, parts in zip(names, pool.decoded([(decoder, Path(name)) for name in names])):
        try:
            outcome[name] = list(parts)
        except DecodeError as exc:
            outcome[name] = exc.reason
    return outcome


def _expected(name: str, count: int) -> list[int]:
    seed = sum(name.encode())
    return [(seed + ordinal) % 251 for ordinal in range(count)]


def test_parts_come_back_in_order_and_intact_through_shared_memory_and_the_pipe():
    names = [f"file{i:02d}" for i in range(12)]
    big = SLOT_BYTES // 4 + 1000  # float32: just over one slot, so it crosses through the pipe
    with DecodeWorkers(2, limit=60.0) as pool:
        outcome = _decode_all(pool, names, Decoder.of("hostile_decoders:numbered", count=5, big=big))
        assert pool.replaced == 0
    assert list(outcome) == names
    for name, parts in outcome.items():
        assert [segment.ordinal for segment, _ in parts] == list(range(6))
        assert [int(pixels[0, 0, 0]) for _, pixels in parts[:5]] == _expected(name, 5)
        assert all(pixels.shape == (3, 64, 64) and (pixels == pixels[0, 0, 0]).all() for _, pixels in parts[:5])
        assert np.array_equal(parts[5][1], np.arange(big, dtype=np.float32))


def test_a_crash_fails_that_file_alone_and_the_files_queued_behind_it_are_still_decoded():
    names = ["ok0", "abort1", "ok2", "ok3", "segfault4", "ok5", "ok6", "ok7"]
    with DecodeWorkers(1, limit=60.0, per_worker=4) as pool:  # files queue up behind each crash
        outcome = _decode_all(pool, names, Decoder.of("hostile_decoders:numbered", count=3))
        assert pool.replaced == 2
    assert outcome["abort1"] == "the decoder aborted (SIGABRT); its decoding process was replaced"
    assert outcome["segfault4"] == ("the decoder crashed (SIGSEGV, a segmentation fault); its decoding process "
                                    "was replaced")
    for name in names:
        if name.startswith("ok"):
            assert [int(p[0, 0, 0]) for _, p in outcome[name]] == _expected(name, 3), name


def test_a_decoder_that_never_returns_is_killed_after_the_limit():
    with DecodeWorkers(1, limit=1.0) as pool:
        outcome = _decode_all(pool, ["hang0", "ok1"], Decoder.of("hostile_decoders:numbered", count=2))
        assert pool.replaced == 1
    assert outcome["hang0"] == ("timed out: nothing decoded for 1 s (the per-file time limit, file_timeout); "
                                "its decoding process was stopped")
    assert len(outcome["ok1"]) == 2


def test_a_decoder_that_allocates_without_bound_runs_out_of_its_own_memory():
    with DecodeWorkers(1, limit=120.0, memory=512 << 20) as pool:
        outcome = _decode_all(pool, ["hog0", "ok1"], Decoder.of("hostile_decoders:numbered", count=2))
        assert pool.replaced == 1
    assert outcome["hog0"] == "out of memory while decoding (the decoding process's limit of 512 MiB)"
    assert len(outcome["ok1"]) == 2


def test_a_process_ahead_of_the_indexer_is_not_timed_out():
    """30 parts through 8 slots: the worker waits for the indexer (which takes 0.15 s a part, 4.5 s in all)
    far longer than the 2 s limit, which counts only while the indexer waits for it."""
    with DecodeWorkers(1, limit=2.0) as pool:
        for parts in pool.decoded([(Decoder.of("hostile_decoders:numbered", count=30), Path("slow"))]):
            got = []
            for _, pixels in parts:
                got.append(int(pixels[0, 0, 0]))
                time.sleep(0.15)
        assert pool.replaced == 0
    assert got == _expected("slow", 30)


class HostileImages(ImagePipeline):
    """The image pipeline with ``hostile_decoders.image`` in its decoding processes."""

    def decoder(self) -> Decoder:
        return Decoder.of("hostile_decoders:image", **self.pixel_options())


def test_an_index_run_records_each_hostile_decoder_as_failed_and_the_store_verifies_clean(tmp_path, make_engine,
                                                                                          tiny_clip):
    from mmsearch.ingest.indexer import Indexer
    from mmsearch.store.verify import verify_store

    root = tmp_path / "photos"
    good = [write_image(root / f"good{i}.png", seed=i) for i in range(4)]
    for n, name in enumerate(("abort.png", "segfault.png", "hang.png", "hog.png")):
        write_image(root / name, seed=10 + n)
    engine = make_engine()
    indexer = Indexer(engine.store, [HostileImages(tiny_clip)], workers=2, file_timeout=3.0,
                      decode_memory=512 << 20)
    report = indexer.run([root])
    reasons = {Path(f.path).name: f.reason for f in report.failed}
    assert reasons == {
        "abort.png": "the decoder aborted (SIGABRT); its decoding process was replaced",
        "segfault.png": "the decoder crashed (SIGSEGV, a segmentation fault); its decoding process was replaced",
        "hang.png": "timed out: nothing decoded for 3 s (the per-file time limit, file_timeout); its decoding "
                    "process was stopped",
        "hog.png": "out of memory while decoding (the decoding process's limit of 512 MiB)"}
    assert report.added == 4
    rows = engine.store.catalog.all_items()
    assert all(rows[str(path)].state == "indexed" for path in good)
    assert verify_store(engine.store).ok
    again = Indexer(engine.store, [HostileImages(tiny_clip)], workers=2, file_timeout=3.0).run([root])
    assert again.failed == () and again.segments_embedded == 0  # unchanged failures are not retried


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie no one has reaped yet: not running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_decoder_stuck_in_c_dies_with_the_indexing_process_even_after_sigkill(tmp_path):
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        import numpy as np
        from mmsearch.encoders.base import ModelIdentity
        from mmsearch.ingest.decoders import Decoder
        from mmsearch.ingest.indexer import Indexer
        from mmsearch.records import Modality
        from mmsearch.store.folder import Store

        class Stuck:
            modality, role, dim = Modality.TEXT, "clip", 4
            encoder = type("E", (), {"identity": ModelIdentity("fake:x", "fake", 4, False)})()
            def spaces(self):
                return [(Modality.TEXT, self)]
            def decoder(self):
                return Decoder.of("hostile_decoders:passages")
            def prepare(self, segment, payload):
                return payload
            def encode(self, inputs):
                return np.tile(np.eye(4, dtype=np.float32)[:1], (len(inputs), 1))

        root = Path(sys.argv[1])
        store = Store.open(root.parent / "store", create=True)
        Indexer(store, [Stuck()], file_timeout=None, workers=1).run([root])  # never returns
    """)
    root = tmp_path / "media"
    root.mkdir()
    (root / "pid.txt").write_text("words that are never read")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    indexing = subprocess.Popen([sys.executable, "-c", script, str(root)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pid_file = root / "pid.pid"
    try:
        for _ in range(1200):  # up to 120 s for the interpreter, the imports and the worker to start
            if pid_file.is_file() and pid_file.read_text():
                break
            assert indexing.poll() is None, indexing.stderr.read().decode()
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        assert not _gone(worker)
    finally:
        indexing.send_signal(signal.SIGKILL)
        indexing.wait(30)
    for _ in range(300):  # the kernel delivers SIGKILL to it at once; allow 30 s for a busy machine
        if _gone(worker):
            break
        time.sleep(0.1)
    assert _gone(worker), "the decoding process outlived the indexing process"
