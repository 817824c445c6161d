"""Embedding on a Ray cluster (``ingest.ray_embed``): the same store as an index run in one process, this
process still the only writer, and one-line failures when Ray or the cluster is not there.

The cluster is a local one on 127.0.0.1 (2 CPUs), started once for the module and shut down after it; no
test sends anything to another address. Skipped without Ray, unless ``MMSEARCH_REQUIRE_RAY=1``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY, fails_fast, write_image, write_text

if os.environ.get("MMSEARCH_REQUIRE_RAY") == "1":
    import ray  # noqa: F401  (required here: an import error fails the run instead of skipping)
else:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mmsearch[ray]')")

from mmsearch.engine import Engine
from mmsearch.errors import ClusterError
from mmsearch.ingest.ray_embed import RayOptions
from mmsearch.records import Modality
from mmsearch.search.queries import Query
from mmsearch.store.rows import INDEXED, RETRY
from mmsearch_cli.app import app

runner = CliRunner()


def write_wav(path: Path, seconds: float = 2.0, rate: int = 16_000, hz: float = 440.0) -> Path:
    samples = (0.3 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def offline_env(base: Path) -> dict[str, str]:
    """What ``conftest._offline`` sets, for processes that outlive a test (a Ray cluster, a CLI run)."""
    return {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1", "HF_HOME": str(base / "hf-home"),
            "MMSEARCH_CACHE_DIR": str(base / "mmsearch-cache"), "MMSEARCH_PRECISION": "fp32"}


def ray_processes() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "gcs_server|raylet"], capture_output=True, text=True).stdout
    return {int(pid) for pid in found.split()}


def test_cli_index_ray_auto_starts_a_local_cluster_for_the_run_and_stops_it(tmp_path, media, tmp_path_factory):
    """The real `--ray auto` path, in a process of its own: start, embed, report, shut down."""
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    before = ray_processes()
    env = dict(os.environ, **offline_env(tmp_path_factory.getbasetemp()))
    done = subprocess.run([sys.executable, "-m", "mmsearch", "index", str(media), "--store", str(tmp_path / "s"),
                           "--model", TINY, "--audio-model", "none", "--ray", "auto", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] == 10 and report["ray_workers"] == 1
    assert [f["path"] for f in report["failed"]] == [str(media / "broken.jpg")]
    assert any("local Ray cluster on 127.0.0.1" in note for note in report["notes"])
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr  # Ray's logs kept quiet
    assert ray_processes() <= before  # its cluster is gone with it


def test_ray_missing_is_one_line_and_exit_2(tmp_path, media, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    result = runner.invoke(app, ["index", str(media), "--store", str(tmp_path / "s"), "--model", TINY, "--ray", "auto"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "mmsearch: error: --ray needs Ray: pip install 'mmsearch[ray]'"


def test_unreachable_cluster_fails_fast_in_one_line(tmp_path, media, connections):
    result = runner.invoke(app, ["index", str(media), "--store", str(tmp_path / "s"), "--model", TINY,
                                 "--ray", "127.0.0.1:1"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmsearch: error: --ray 127.0.0.1:1: no Ray cluster answers")
    assert fails_fast(connections) and all(address[0] == "127.0.0.1" for address, _ in connections)


# -- on the module's cluster ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local 2-CPU cluster on 127.0.0.1 for this module; the runs below find it connected (``auto`` then
    uses it and leaves it running). Its processes get the offline settings of the tests."""
    from mmsearch.ingest.ray_embed_cluster import start_local

    with pytest.MonkeyPatch.context() as patch:
        for name, value in offline_env(tmp_path_factory.getbasetemp()).items():
            patch.setenv(name, value)
        started = start_local(cpus=2)
    yield started
    started.close()


def test_the_local_cluster_listens_on_loopback_only(cluster):
    assert cluster.started
    assert {node["NodeManagerAddress"] for node in cluster.ray.nodes()} == {"127.0.0.1"}
    assert cluster.ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def stored(engine) -> dict[str, tuple]:
    """Path -> (kind, state, reason, segments as (text, start, end, page), vectors) of every file in a store."""
    catalog = engine.store.catalog
    files = {}
    for path, row in catalog.all_items().items():
        _, vectors = catalog.item_vectors(row.id)
        files[path] = (row.modality, row.state, row.error, vectors)
    segments: dict[str, list] = {}
    for modality in (Modality.IMAGE, Modality.TEXT, Modality.AUDIO):
        ids = catalog.segment_ids(modality)
        for segment in sorted(catalog.segment_rows(ids.tolist()).values(), key=lambda s: (s.path, s.start or 0, s.id)):
            segments.setdefault(segment.path, []).append((segment.text, segment.start, segment.end, segment.page))
    return {path: (*entry, segments.get(path, [])) for path, entry in files.items()}


def assert_same_store(ray_run: dict, here: dict) -> None:
    assert set(ray_run) == set(here)
    for path, (kind, state, reason, vectors, segments) in here.items():
        other_kind, other_state, other_reason, other_vectors, other_segments = ray_run[path]
        assert (other_kind, other_state, other_reason, other_segments) == (kind, state, reason, segments), path
        assert other_vectors.shape == vectors.shape, path
        if len(vectors):
            cosines = np.sum(other_vectors * vectors, axis=1) / (
                np.linalg.norm(other_vectors, axis=1) * np.linalg.norm(vectors, axis=1))
            assert cosines.min() >= 0.9999, path


def test_two_ray_workers_make_the_store_one_process_makes(cluster, make_engine, tmp_path, media, monkeypatch):
    """Images, text passages, audio windows and broken files: the same items, segments, vectors (cosine
    >= 0.9999) and failure reasons; then a re-run through Ray has nothing to embed."""
    write_wav(media / "tone.wav", seconds=12.0)
    write_text(media / "notes" / "long.md", " ".join(f"word{i}" for i in range(130)))  # several passages
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (media / "empty.png").write_bytes(b"")
    (media / "binary.txt").write_bytes(b"\x00\x01\x02\x03binary")
    monkeypatch.setattr(Engine, "_ensure_bridge", lambda self: None)  # (fitting the audio bridge: not the point)
    here = make_engine(store=tmp_path / "here", audio_model=TINY)
    in_process = here.index([media], export=False)
    there = make_engine(store=tmp_path / "there", audio_model=TINY)
    on_ray = there.index([media], ray=RayOptions("auto", workers=2), export=False)
    assert on_ray.ray_workers == 2 and in_process.ray_workers is None
    assert (on_ray.added, on_ray.segments_embedded) == (in_process.added, in_process.segments_embedded)
    assert on_ray.added == 12 and on_ray.segments_embedded > 12
    assert on_ray.failed == in_process.failed and len(on_ray.failed) == 3
    assert_same_store(stored(there), stored(here))
    again = there.index([media], ray="auto", export=False)
    assert (again.segments_embedded, again.unchanged, again.ray_workers) == (0, 15, 0)


def test_an_edited_file_is_re_embedded_through_ray(cluster, make_engine, tmp_path, media):
    engine = make_engine()
    engine.index([media], export=False)
    note = media / "notes" / "note0.txt"
    new_text = "completely different words about a lighthouse keeper and his cat"
    note.write_text(new_text)
    os.utime(note, ns=(note.stat().st_atime_ns, note.stat().st_mtime_ns + 1_000_000_000))
    photo = write_image(media / "new.png", seed=77)
    report = engine.index([media], ray="auto", export=False)
    assert (report.updated, report.added, report.unchanged, report.segments_embedded) == (1, 1, 9, 2)
    here = make_engine(store=tmp_path / "here")
    here.index([media], export=False)
    assert_same_store(stored(engine), stored(here))
    assert engine.search(new_text, kind="text", k=1).hits[0].path == str(note)
    assert engine.search(Query(image=photo), kind="image", k=1).hits[0].path == str(photo)


def failing_after(batches: int, monkeypatch) -> None:
    """The cluster returns ``batches`` batches of results, then fails (as a lost node beyond retries would)."""
    import ray.data

    real = ray.data.Dataset.iter_batches

    def iter_batches(self, *args, **kwargs):
        for number, batch in enumerate(real(self, *args, **kwargs), 1):
            yield batch
            if number == batches:
                break
        raise RuntimeError("node 127.0.0.1 lost\nActorDiedError: the actor died unexpectedly")
    monkeypatch.setattr(ray.data.Dataset, "iter_batches", iter_batches)


def test_files_the_failed_cluster_did_not_return_are_retried_on_the_next_run(cluster, make_engine, media, monkeypatch):
    engine = make_engine(batch_size=2)  # two files per batch sent to a worker
    failing_after(1, monkeypatch)
    report = engine.index([media], ray="auto", export=False)
    items = engine.store.catalog.all_items()
    indexed = [p for p, row in items.items() if row.state == INDEXED]
    assert len(indexed) == report.added == 2 and len(report.failed) == 8
    assert all(row.state == RETRY and "the Ray workers failed (" in row.error and "ActorDiedError" in row.error
               for p, row in items.items() if p not in indexed)
    monkeypatch.undo()
    again = engine.index([media], export=False)  # in this process this time: only what was not committed
    assert (again.unchanged, again.segments_embedded, again.failed) == (2, 8, ())


def test_workers_that_cannot_load_the_store_model_end_the_run_with_a_cluster_error(cluster, tmp_path, media):
    """A node whose model makes other vectors than the store's (say, other weights at the same path): its
    workers refuse to start, and the run stops with one line saying why, nothing committed."""
    from mmsearch.encoders.base import ModelIdentity
    from mmsearch.ingest.batches import FileWork
    from mmsearch.ingest.pipelines import ImagePipeline
    from mmsearch.ingest.ray_embed import RayEmbedder
    from mmsearch.records import MediaFile

    class StoreModel:  # what the store was built with, according to the indexing process
        identity = ModelIdentity(TINY, "test-tiny:other-weights", 64, False)
    photo = media / "photo0.png"
    work = [FileWork(MediaFile(photo, Modality.IMAGE, photo.stat().st_size, photo.stat().st_mtime_ns), "hash")]
    embedder = RayEmbedder("auto", store=tmp_path, precision="fp32")
    with pytest.raises(ClusterError, match="failed before embedding anything.*cannot load the models.*"
                                           "test-tiny:other-weights: every node needs the same model files"):
        list(embedder.embed(work, {Modality.IMAGE: ImagePipeline(StoreModel())}))
    embedder.close()
    assert cluster.ray.is_initialized()  # the module's cluster: not this run's to shut down
