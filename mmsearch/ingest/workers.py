"""Decoding in worker processes: a file whose decoder crashes (a segfault, an abort in C), hangs (a loop
that never gives the interpreter back) or allocates without bound fails alone, with a reason, and the run
goes on with a fresh process in the failed one's place.

``DecodeWorkers`` keeps ``workers`` processes, each a fresh Python (``python -c``, not a fork: no copy of the
indexing process's models, threads or open files, and no re-run of the caller's main script) that imports
only the decoding code (``decoders``) and dies with the indexing process. Files are dealt out in
order to the process with the fewest outstanding (a few each, so none waits for the next), and their
results are read back in that same order, each file's parts as they come: a long recording or video
streams window by window while the model works on the ones before.

How much each process may hold: ``memory`` bytes of data (``RLIMIT_DATA``, Linux), past which an
allocation fails inside the decoder (a ``MemoryError``: that file fails as "out of memory" and the process
is replaced) instead of the machine swapping. How long a file may go without producing anything:
``limit`` seconds, counted while the indexer waits for it (a process that is ahead of the indexer is not
late); then the process is killed (SIGKILL) and replaced.

Arrays up to ``slot_bytes`` (pixels at the model's size, audio windows) travel through a ring of shared
memory slots per process instead of the pipe: the worker writes a slot, the indexer copies it out once and
counts it consumed; only the slot's number crosses the pipe.
"""
from __future__ import annotations

import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import DecodeError
from ..records import Segment
from .decoders import Decoder

log = logging.getLogger(__name__)

DEFAULT_MEMORY = 4 << 30
"""Bytes of data one decoding process may hold (a 100-megapixel image needs about 1 GiB on its way)."""
SLOTS = 8
SLOT_BYTES = 4 << 20
"""Shared memory slots per process, and their size: a 10 s window at 48 kHz is 1.9 MB, pixels at 336 px 0.3 MB."""
_HEADER = 64


@dataclass(frozen=True)
class _Slot:
    """A payload left in shared memory slot ``slot``."""

    slot: int
    dtype: str
    shape: tuple[int, ...]


# -- the worker process ----------------------------------------------------------------------------------
def main() -> None:
    """A worker process's entry (``python -c``): argv = conn fd, shared memory fd, slots, slot bytes, memory."""
    conn_fd, shm_fd, slots, slot_bytes, memory = (int(arg) for arg in sys.argv[1:6])
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the indexing process's to handle
    if memory:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
        except (ImportError, ValueError, OSError):
            log.debug("no memory limit for decoding processes on this system")
    shared = mmap.mmap(shm_fd, _HEADER + slots * slot_bytes)
    _serve(Connection(conn_fd), shared, slots, slot_bytes, memory)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the indexing process dies (even by kill -9), so a decoder stuck in C
    does not outlive it. Elsewhere the closed pipe ends an idle worker."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn: Connection, shared: mmap.mmap, slots: int, slot_bytes: int, memory: int) -> None:
    """The worker's loop: (number, decoder, path) in, ("part" | "done" | "error", number, ...) out."""
    progress = np.ndarray((1,), np.float64, buffer=shared, offset=0)
    consumed = np.ndarray((1,), np.int64, buffer=shared, offset=8)
    sent = 0
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the indexing process is gone
            return
        if task is None:
            return
        number, decoder, path = task
        progress[0] = time.monotonic()
        try:
            for segment, payload in decoder(path):
                if isinstance(payload, np.ndarray) and payload.nbytes <= slot_bytes:
                    while sent - int(consumed[0]) >= slots:  # the indexing process has not copied it out yet
                        time.sleep(0.0002)
                    slot = sent % slots
                    payload = np.ascontiguousarray(payload)
                    start = _HEADER + slot * slot_bytes
                    shared[start:start + payload.nbytes] = payload.reshape(-1).view(np.uint8).data
                    payload, sent = _Slot(slot, payload.dtype.str, payload.shape), sent + 1
                progress[0] = time.monotonic()
                conn.send(("part", number, segment, payload))
                progress[0] = time.monotonic()
            conn.send(("done", number, None, None))
        except DecodeError as exc:
            conn.send(("error", number, exc.reason, None))
        except MemoryError:
            mib = f" of {memory / (1 << 20):,.0f} MiB" if memory else ""
            conn.send(("error", number, f"out of memory while decoding (the decoding process's limit{mib})", None))
            return  # a fresh process takes this one's place
        except Exception as exc:  # a decoder bug: recorded against the file, the process goes on
            conn.send(("error", number, f"unexpected {type(exc).__name__}: {str(exc)[:200]}", None))
        progress[0] = time.monotonic()


# -- the indexing process's side -------------------------------------------------------------------------
@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection
    shared: mmap.mmap
    shared_file: Any
    """The open file behind ``shared`` (a memfd), handed to each process started in this slot."""
    files: deque = field(default_factory=deque)
    """Numbers of the files given to this process and not yet read back, in order."""

    @property
    def progress(self) -> float:
        return float(np.ndarray((1,), np.float64, buffer=self.shared, offset=0)[0])

    def take(self, slot: _Slot, slot_bytes: int) -> np.ndarray:
        """Copy a payload out of its slot and count the slot free."""
        count = int(np.prod(slot.shape, dtype=np.int64))
        array = np.frombuffer(self.shared, dtype=np.dtype(slot.dtype), count=count,
                              offset=_HEADER + slot.slot * slot_bytes)
        copy = array.reshape(slot.shape).copy()
        del array
        np.ndarray((1,), np.int64, buffer=self.shared, offset=8)[0] += 1
        return copy

    def ask_to_stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass

    def stop(self, wait: float) -> None:
        """End the process: killed if it has not stopped within ``wait`` seconds of being asked."""
        try:
            self.process.wait(max(0.0, wait))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()
        try:
            self.shared.close()
        except BufferError:  # an array still views it (a caller's error path): the mapping goes with it
            pass
        self.shared_file.close()


def _shared_file(size: int):
    """An anonymous file of ``size`` bytes to map in both processes (memfd on Linux, else a temporary file)."""
    if hasattr(os, "memfd_create"):
        handle = os.fdopen(os.memfd_create("mmsearch-decode", 0), "r+b", buffering=0)
    else:
        handle = tempfile.TemporaryFile()
    handle.truncate(size)
    return handle


class DecodeWorkers:
    """A pool of decoding processes; see the module docstring. Use as a context manager, or ``close()``."""

    def __init__(self, workers: int, *, limit: float | None, memory: int | None = DEFAULT_MEMORY,
                 slots: int = SLOTS, slot_bytes: int = SLOT_BYTES, per_worker: int = 4):
        self.limit, self.memory = limit, memory
        self.slots, self.slot_bytes, self.per_worker = slots, slot_bytes, max(1, per_worker)
        self.replaced = 0
        """Processes replaced after a crash, a timeout or running out of memory."""
        self._workers: list[_Worker] = []
        for _ in range(max(1, int(workers))):
            handle = _shared_file(_HEADER + slots * slot_bytes)
            self._workers.append(self._start(handle, mmap.mmap(handle.fileno(), _HEADER + slots * slot_bytes)))

    def _start(self, handle, shared: mmap.mmap) -> _Worker:
        np.ndarray((2,), np.int64, buffer=shared, offset=0)[:] = 0
        np.ndarray((1,), np.float64, buffer=shared, offset=0)[0] = time.monotonic()
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the caller's decoders too
        command = [sys.executable, "-c", "from mmsearch.ingest.workers import main; main()", str(theirs.fileno()),
                   str(handle.fileno()), str(self.slots), str(self.slot_bytes), str(self.memory or 0)]
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(), handle.fileno()), env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=None if log.isEnabledFor(logging.DEBUG) else subprocess.DEVNULL)
        theirs.close()
        return _Worker(process, Connection(ours.detach()), shared, handle)

    def _recover(self, worker: _Worker, owner: dict[int, _Worker], jobs: Sequence[tuple[Decoder, Path]],
                 failed: int) -> None:
        """Kill ``worker`` if it still runs, start another in its place (with its shared memory), and give
        the new one the files that were queued behind file ``failed``."""
        queued = [n for n in worker.files if n != failed]
        worker.process.kill()
        worker.process.wait()
        worker.conn.close()
        self.replaced += 1
        fresh = self._start(worker.shared_file, worker.shared)
        self._workers[self._workers.index(worker)] = fresh
        for number in queued:
            owner[number] = fresh
            self._give(fresh, number, jobs[number])

    # -- files in, parts out -----------------------------------------------------------------------------
    def decoded(self, jobs: Sequence[tuple[Decoder, Path]]) -> Iterator[Iterator[tuple[Segment, Any]]]:
        """For each (decoder, path), in order: an iterator of its (segment, payload) pairs, which raises
        ``DecodeError`` when the file fails (including a crash, a timeout or memory). Read each file's
        iterator to its end (or drop it) before taking the next."""
        owner: dict[int, _Worker] = {}
        given = 0
        for number in range(len(jobs)):
            while given < len(jobs):
                worker = min(self._workers, key=lambda w: len(w.files))
                if len(worker.files) >= self.per_worker:
                    break
                self._give(worker, given, jobs[given])
                owner[given] = worker
                given += 1
            parts = self._parts(owner, number, jobs)
            yield parts
            try:
                for _ in parts:  # whatever the caller left unread
                    pass
            except DecodeError:
                pass
            owner.pop(number, None)

    def _give(self, worker: _Worker, number: int, job: tuple[Decoder, Path]) -> None:
        worker.files.append(number)
        try:
            worker.conn.send((number, job[0], str(job[1])))
        except (OSError, ValueError):  # it died meanwhile: noticed when its files are read
            pass

    def _parts(self, owner: dict[int, _Worker], number: int,
               jobs: Sequence[tuple[Decoder, Path]]) -> Iterator[tuple[Segment, Any]]:
        worker, path = owner[number], jobs[number][1]
        waiting_since = time.monotonic()
        while True:
            failure, message = self._wait(worker, waiting_since), None
            if failure is None:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):  # it died after sending all it had
                    failure = _death(worker.process.wait())
            if failure is not None:
                self._recover(worker, owner, jobs, number)
                raise DecodeError(path, failure)
            kind, got, body, payload = message
            if got != number:
                raise RuntimeError(f"decoding process answered for file {got} while file {number} was expected")
            if kind == "part":
                if isinstance(payload, _Slot):
                    payload = worker.take(payload, self.slot_bytes)
                yield body, payload
                waiting_since = time.monotonic()
                continue
            worker.files.popleft()
            if kind == "error":
                if body.startswith("out of memory"):  # that process ends: replaced
                    self._recover(worker, owner, jobs, number)
                raise DecodeError(path, body)
            return

    def _wait(self, worker: _Worker, waiting_since: float) -> str | None:
        """Wait for ``worker``'s next message (or its end: a closed pipe reads as ready); a reason when it
        went quiet for longer than the limit while being waited for."""
        while True:
            timeout = None
            if self.limit is not None:
                timeout = max(waiting_since, worker.progress) + self.limit - time.monotonic()
                if timeout <= 0:
                    return (f"timed out: nothing decoded for {self.limit:g} s (the per-file time limit, "
                            f"file_timeout); its decoding process was stopped")
            if worker.conn.poll(timeout):
                return None

    def close(self) -> None:
        for worker in self._workers:
            worker.ask_to_stop()
        deadline = time.monotonic() + 2.0
        for worker in self._workers:
            worker.stop(deadline - time.monotonic())
        self._workers = []

    def __enter__(self) -> "DecodeWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _death(code: int | None) -> str:
    """Why a decoding process ended, in words."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = {"SIGSEGV": "crashed (SIGSEGV, a segmentation fault)", "SIGABRT": "aborted (SIGABRT)",
                "SIGBUS": "crashed (SIGBUS)", "SIGILL": "crashed (SIGILL)", "SIGFPE": "crashed (SIGFPE)",
                "SIGKILL": "was killed (SIGKILL: out of memory?)"}.get(name, f"was stopped by {name}")
        return f"the decoder {what}; its decoding process was replaced"
    return f"the decoding process exited (status {code}) while decoding; it was replaced"
