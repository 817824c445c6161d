"""Random sequences of add / modify / rename / copy / delete / re-index on a small folder, checked against
a model of what the store must hold: the same paths, each with its content's hash and segment count,
nothing embedded again when files were only renamed, and a store that verifies clean after every run."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from conftest import TINY

from mmsearch.config import Settings
from mmsearch.decoding.text import split_passages
from mmsearch.engine import Engine
from mmsearch.records import Modality
from mmsearch.store.verify import verify_store

import pytest

TEXTS = ["a short note about a river", "lanterns " * 60, "copper and glacier and orchard",
         " ".join(f"word{i}" for i in range(130)), "thunder"]
"""Contents of 1, 2, 1, 3 and 1 passages: a file's segment count depends on its content."""
IMAGE_SEEDS = [1, 2, 3]
NAMES = ["a", "b", "c", "d", "e", "f"]


def _image_bytes(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


CONTENTS = {("text", i): text.encode() for i, text in enumerate(TEXTS)} | \
           {("image", i): _image_bytes(seed) for i, seed in enumerate(IMAGE_SEEDS)}
SUFFIX = {"text": ".txt", "image": ".png"}
CLIP = {}


def _segments(kind: str, body: bytes) -> int:
    return 1 if kind == "image" else len(split_passages(body.decode()))


class StoreModel(RuleBasedStateMachine):
    """The folder and the store it should be mirrored in; ``files`` maps a name to (kind, content key)."""

    @initialize()
    def start(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mmsearch-sm-"))
        self.folder = self.tmp / "media"
        self.folder.mkdir()
        self.engine = Engine.open(Settings.resolve(store=self.tmp / "store", model=TINY, audio_model="none",
                                                   batch_size=3), create=True, clip=CLIP["tiny"])
        self.files: dict[str, tuple[str, int]] = {}
        self.indexed: dict[str, tuple[str, int]] = {}
        self.only_renamed = True
        self.clock = 1_700_000_000_000_000_000

    def teardown(self):
        if hasattr(self, "engine"):
            self.engine.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _path(self, name: str) -> Path:
        return self.folder / (name + SUFFIX[self.files[name][0]])

    def _write(self, name: str, kind: str, key: int) -> None:
        self.files[name] = (kind, key)
        path = self._path(name)
        path.write_bytes(CONTENTS[(kind, key)])
        self.clock += 1_000_000_000  # a later mtime for every write, whatever the clock's resolution
        os.utime(path, ns=(self.clock, self.clock))

    # -- changes to the folder ------------------------------------------------------------------------
    @rule(name=st.sampled_from(NAMES), kind=st.sampled_from(["text", "image"]), key=st.integers(0, 4))
    def add(self, name, kind, key):
        if name in self.files:
            return
        self._write(name, kind, key % (len(TEXTS) if kind == "text" else len(IMAGE_SEEDS)))
        self.only_renamed = False

    @precondition(lambda self: self.files)
    @rule(data=st.data(), key=st.integers(0, 4))
    def modify(self, data, key):
        name = data.draw(st.sampled_from(sorted(self.files)))
        kind = self.files[name][0]
        self._write(name, kind, key % (len(TEXTS) if kind == "text" else len(IMAGE_SEEDS)))
        self.only_renamed = False

    @precondition(lambda self: self.files)
    @rule(data=st.data(), new=st.sampled_from(NAMES))
    def rename(self, data, new):
        old = data.draw(st.sampled_from(sorted(self.files)))
        if new in self.files:
            return
        source = self._path(old)
        self.files[new] = self.files.pop(old)
        os.rename(source, self._path(new))

    @precondition(lambda self: self.files)
    @rule(data=st.data(), new=st.sampled_from(NAMES))
    def copy(self, data, new):
        old = data.draw(st.sampled_from(sorted(self.files)))
        if new in self.files:
            return
        self._write(new, *self.files[old])
        self.only_renamed = False

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete(self, data):
        name = data.draw(st.sampled_from(sorted(self.files)))
        self._path(name).unlink()
        del self.files[name]

    # -- the run --------------------------------------------------------------------------------------
    @rule()
    def index(self):
        before = {CONTENTS[v] for v in self.indexed.values()}
        report = self.engine.index([self.folder])
        new_contents = {CONTENTS[v]: _segments(v[0], CONTENTS[v]) for v in self.files.values()
                        if CONTENTS[v] not in before}
        assert report.failed == ()
        if self.only_renamed:
            assert report.segments_embedded == 0, report
        # every content new to the store is embedded at least once, and nothing but changed files is
        changed = sum(_segments(*(k, CONTENTS[(k, i)])) for name, (k, i) in self.files.items()
                      if self.indexed.get(name) != (k, i))
        assert sum(new_contents.values()) <= report.segments_embedded <= changed, (report, new_contents, changed)
        self.indexed = dict(self.files)
        self.only_renamed = True
        found = verify_store(self.engine.store)
        assert found.findings == (), found.findings

    @invariant()
    def store_matches_model_after_each_run(self):
        if not hasattr(self, "engine"):
            return
        catalog = self.engine.store.catalog
        rows = catalog.all_items()
        expected = {str(self.folder / (name + SUFFIX[kind])): (kind, key) for name, (kind, key) in self.indexed.items()}
        assert set(rows) == set(expected)
        segments = {m: 0 for m in ("image", "text")}
        for path, (kind, key) in expected.items():
            row = rows[path]
            body = CONTENTS[(kind, key)]
            assert row.state == "indexed" and row.modality == Modality(kind)
            assert row.content_hash == hashlib.blake2b(body, digest_size=20).hexdigest()
            segments[kind] += _segments(kind, body)
        files, counted = catalog.counts()
        assert {m: files.get(m, 0) for m in segments} == {m: sum(k == m for k, _ in expected.values()) for m in segments}
        assert {m: counted.get(m, 0) for m in segments} == segments
        for modality in (Modality.IMAGE, Modality.TEXT):
            index = self.engine.store.index(modality)
            if index is not None:
                assert sorted(index.ids().tolist()) == sorted(catalog.segment_ids(modality).tolist())


@pytest.fixture
def machine(tiny_clip):
    CLIP["tiny"] = tiny_clip
    yield StoreModel
    CLIP.clear()


def test_random_file_operations_keep_the_store_true_to_the_folder(machine):
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(machine, settings=settings(
        max_examples=25, stateful_step_count=14, derandomize=True, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
